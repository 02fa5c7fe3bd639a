//! How a raft replica comes to be a voter of its cluster.
//!
//! A replica starts in four steps, in the background (it is not ready
//! until they are done; see [`super::identity`]):
//! 1. **Identity.** It reads its [`Identity`]. A replica without one asks
//!    its peers ([`rpc::HELLO`]): if one belongs to a founded cluster, it
//!    joins that cluster under a fresh raft id; if none does and a majority
//!    of the replicas answer, all empty, the first replica of the topology
//!    founds a cluster; otherwise it waits.
//! 2. **Founding** (the first replica only, once): it offers each peer its
//!    founding identity ([`rpc::ADOPT`]) and, once a majority took it,
//!    initializes raft with them as voters.
//! 3. **Membership.** Until it is a voter, it asks the leader to make it
//!    one ([`rpc::JOIN`]): the leader adds it as a learner, and once it has
//!    caught up, makes it a voter in place of any id it had before.
//! 4. **Catch-up.** It asks the leader for its read index and serves once
//!    it has applied (nearly) that much: a replica that replays a long log
//!    or installs a snapshot at start says it is catching up meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::error::RaftError;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, LogId, Raft, RaftMetrics};
use tracing::Instrument;

use super::config::RaftConfig;
use super::identity::{Identity, IdentityStore};
use super::messages::{self as rpc, Adopt, Hello, Join, Joining};
use super::network::Network;
use super::types::{NodeId, RaftTypes};
use crate::error::ReplicationError;
use crate::journal::Machine;
use crate::replication::rpc::call;
use crate::replication::Transport;

/// How often a replica that is not yet a voter tries its next step.
const STEP_EVERY: Duration = Duration::from_millis(500);
/// How often a replica that catches up compares what it applied with the
/// leader's read index (a restarted replica is usually there at once).
const CATCH_UP_EVERY: Duration = Duration::from_millis(100);
/// Longest wait for a peer's answer while founding or joining.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the founder waits for every replica before it founds the
/// cluster with a majority.
const FOUND_WAIT: Duration = Duration::from_secs(3);
/// A learner this many entries behind the leader's log, or fewer, is made a
/// voter (it catches the rest up as a voter).
const PROMOTE_WITHIN: u64 = 64;

/// A replica that knows its identity, running raft.
pub(super) struct Member<M: Machine> {
    pub(super) raft: Raft<RaftTypes<M>>,
    pub(super) identity: Identity,
}

pub(super) struct Shared<M: Machine> {
    pub(super) config: RaftConfig,
    /// This replica's place among the topology's replicas.
    pub(super) position: usize,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) identities: Arc<dyn IdentityStore>,
    /// Set once, when the replica knows its identity and runs raft.
    pub(super) member: OnceLock<Member<M>>,
    /// Set once this replica, a voter, has applied (nearly) all the leader
    /// had committed: from then on it serves.
    pub(super) caught_up: AtomicBool,
}

fn unavailable(err: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Unavailable(err.to_string())
}

impl<M: Machine> Shared<M> {
    pub(super) fn member(&self) -> Option<&Member<M>> {
        self.member.get()
    }

    fn peers(&self) -> impl Iterator<Item = (usize, &String)> {
        let me = self.position;
        self.config
            .replicas
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != me)
    }

    /// The four steps of a start (see the module's docs).
    pub(super) async fn run<L, S>(
        self: &Arc<Self>,
        openraft: Arc<openraft::Config>,
        log: L,
        machine: S,
    ) -> Result<(), ReplicationError>
    where
        L: RaftLogStorage<RaftTypes<M>>,
        S: RaftStateMachine<RaftTypes<M>>,
    {
        let identity = loop {
            match self.settle_identity().await {
                Ok(Some(identity)) => break identity,
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "cannot settle this replica's identity"),
            }
            tokio::time::sleep(STEP_EVERY).await;
        };
        tracing::info!(cluster = %identity.cluster, id = identity.id, "raft identity");
        let network = Network::new(
            Arc::clone(&self.transport),
            self.config.rpc_timeout,
            &identity.cluster,
        );
        let raft = Raft::new(identity.id, openraft, network, log, machine)
            .await
            .map_err(unavailable)?;
        let founder = identity.id == 1 && !identity.joined();
        if self.member.set(Member { raft, identity }).is_err() {
            return Err(ReplicationError::Invalid("started twice".to_owned()));
        }
        if founder {
            self.found().await?;
        }
        self.become_voter().await;
        self.catch_up().await;
        Ok(())
    }

    /// Step 1: this replica's identity, if it can be settled now.
    async fn settle_identity(&self) -> Result<Option<Identity>, ReplicationError> {
        let store = &self.identities;
        if let Some(identity) = store.identity().await.map_err(unavailable)? {
            return Ok(Some(identity));
        }
        if store.has_raft_state().await.map_err(unavailable)? {
            // Raft state from before identities were kept: the founding
            // member at this position, of a cluster that had no id.
            let legacy = Identity {
                cluster: "legacy".to_owned(),
                id: self.position as NodeId + 1,
            };
            return Ok(Some(store.adopt(legacy).await.map_err(unavailable)?));
        }
        let mut empty = 1; // this replica
        for (_, peer) in self.peers() {
            let hello: Hello =
                match call(&*self.transport, peer, rpc::HELLO, &(), ASK_TIMEOUT).await {
                    Ok(hello) => hello,
                    Err(err) => {
                        tracing::debug!(%peer, %err, "no hello");
                        continue;
                    }
                };
            match hello.identity {
                Some(theirs) if hello.founded => {
                    // A cluster exists: join it as a new member (never as
                    // the member this replica may have been).
                    let mine = store
                        .adopt(Identity::joining(&theirs.cluster))
                        .await
                        .map_err(unavailable)?;
                    tracing::info!(cluster = %mine.cluster, via = %peer, "joining the running cluster");
                    return Ok(Some(mine));
                }
                Some(_) => {} // being founded: its founder will offer ours
                None => empty += 1,
            }
        }
        if self.position == 0 && empty > self.config.replicas.len() / 2 {
            let founding = Identity {
                cluster: uuid::Uuid::new_v4().simple().to_string(),
                id: 1,
            };
            return Ok(Some(store.adopt(founding).await.map_err(unavailable)?));
        }
        // A founding member waits for the founder's offer (it arrives as
        // `ADOPT` and is stored); the founder waits for a majority.
        store.identity().await.map_err(unavailable)
    }

    /// Step 2, on the first replica: offers each peer its founding
    /// identity, and founds the cluster once a majority took theirs.
    async fn found(&self) -> Result<(), ReplicationError> {
        let Some(member) = self.member() else {
            return Ok(());
        };
        let started = tokio::time::Instant::now();
        loop {
            if member.raft.is_initialized().await.map_err(unavailable)? {
                return Ok(());
            }
            let mut voters = BTreeMap::new();
            voters.insert(member.identity.id, BasicNode::new(&self.config.node));
            for (position, peer) in self.peers() {
                let offer = Identity {
                    cluster: member.identity.cluster.clone(),
                    id: position as NodeId + 1,
                };
                let adopt = Adopt {
                    identity: offer.clone(),
                };
                match call::<_, Identity>(&*self.transport, peer, rpc::ADOPT, &adopt, ASK_TIMEOUT)
                    .await
                {
                    Ok(taken) if taken == offer => {
                        voters.insert(offer.id, BasicNode::new(peer));
                    }
                    Ok(other) => tracing::info!(%peer, ?other, "a peer kept another identity"),
                    Err(err) => tracing::debug!(%peer, %err, "no answer to the founding offer"),
                }
            }
            // Everyone, or a majority once the others had time to answer
            // (those join later).
            let all = self.config.replicas.len();
            let enough =
                voters.len() == all || (voters.len() > all / 2 && started.elapsed() >= FOUND_WAIT);
            if enough {
                match member.raft.initialize(voters).await {
                    Ok(()) => {
                        tracing::info!("founded the raft cluster");
                        return Ok(());
                    }
                    Err(RaftError::APIError(err)) => {
                        tracing::debug!(%err, "the cluster was founded already");
                        return Ok(());
                    }
                    Err(err) => return Err(unavailable(err)),
                }
            }
            tokio::time::sleep(STEP_EVERY).await;
        }
    }

    /// Step 3: until this replica is a voter, asks the leader to make it
    /// one. A founding member is one as soon as the founding membership
    /// reaches it.
    async fn become_voter(&self) {
        let Some(member) = self.member() else {
            return;
        };
        let join = Join {
            cluster: member.identity.cluster.clone(),
            name: self.config.node.clone(),
            id: member.identity.id,
        };
        loop {
            let is_voter = {
                let metrics = member.raft.metrics();
                let metrics = metrics.borrow();
                let membership = metrics.membership_config.membership();
                membership.get_joint_config().len() == 1
                    && membership.voter_ids().any(|id| id == member.identity.id)
            };
            if is_voter {
                return;
            }
            for (_, peer) in self.peers() {
                match call::<_, Joining>(&*self.transport, peer, rpc::JOIN, &join, ASK_TIMEOUT)
                    .await
                {
                    Ok(Joining::Voter) => break,
                    Ok(Joining::CatchingUp) => {
                        tracing::debug!("catching up as a learner");
                        break;
                    }
                    Err(err) => tracing::debug!(%peer, %err, "join not taken"),
                }
            }
            tokio::time::sleep(STEP_EVERY).await;
        }
    }

    /// Step 4: waits until this replica has applied (within
    /// [`PROMOTE_WITHIN`] entries) what the leader had committed when asked,
    /// so that it never says it serves while it replays a long log or
    /// installs a snapshot.
    async fn catch_up(&self) {
        let Some(member) = self.member() else {
            return;
        };
        loop {
            let metrics = member.metrics();
            let applied = metrics.last_applied.map_or(0, |l| l.index);
            let committed = match metrics.current_leader {
                Some(leader) if leader == member.identity.id => Some(applied),
                Some(leader) => {
                    let peer = member.name(leader).unwrap_or_default();
                    match call::<_, Option<LogId<NodeId>>>(
                        &*self.transport,
                        &peer,
                        rpc::READ_INDEX,
                        &(),
                        ASK_TIMEOUT,
                    )
                    .await
                    {
                        Ok(read) => Some(read.map_or(0, |l| l.index)),
                        Err(err) => {
                            tracing::debug!(%err, "no read index from the leader");
                            None
                        }
                    }
                }
                None => None,
            };
            if let Some(committed) = committed {
                let applied = member.metrics().last_applied.map_or(0, |l| l.index);
                if applied + PROMOTE_WITHIN >= committed {
                    self.caught_up.store(true, Ordering::Release);
                    tracing::info!(applied, committed, "caught up with the leader");
                    return;
                }
                tracing::debug!(applied, committed, "catching up with the leader");
            }
            tokio::time::sleep(CATCH_UP_EVERY).await;
        }
    }

    /// What this replica says of itself to a peer that asks.
    pub(super) fn hello(&self) -> Hello {
        match self.member() {
            Some(member) => {
                let metrics = member.metrics();
                Hello {
                    identity: Some(member.identity.clone()),
                    founded: metrics
                        .membership_config
                        .membership()
                        .voter_ids()
                        .next()
                        .is_some(),
                    leader: metrics.current_leader.and_then(|id| member.name(id)),
                }
            }
            None => Hello {
                identity: None,
                founded: false,
                leader: None,
            },
        }
    }
}

impl<M: Machine> Member<M> {
    pub(super) fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// The name of member `id`, from the membership.
    pub(super) fn name(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr.clone())
    }

    /// On the leader: confirms it still leads (a round of heartbeats to a
    /// majority), waits until it applied its commit index, and answers that
    /// index, by `deadline` (a leader cut off from the others never
    /// confirms).
    pub(super) async fn read_index(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<LogId<NodeId>>, ReplicationError> {
        tokio::time::timeout_at(deadline, self.raft.ensure_linearizable())
            .await
            .map_err(|_| unavailable("leadership not confirmed in time"))?
            .map_err(unavailable)
    }

    /// Checks that an openraft call is meant for this member.
    pub(super) fn check_address(&self, cluster: &str, to: NodeId) -> Result<(), ReplicationError> {
        if cluster != self.identity.cluster {
            return Err(ReplicationError::Invalid(format!(
                "a call for cluster {cluster}; this replica belongs to {}",
                self.identity.cluster
            )));
        }
        if to != self.identity.id {
            // The caller knows this replica as a member it was before it
            // lost its data: it must not answer for that member.
            return Err(ReplicationError::Unavailable(format!(
                "a call for raft id {to}; this replica is {} now",
                self.identity.id
            )));
        }
        Ok(())
    }

    /// On the leader, takes a step of `join`: adds the replica as a
    /// learner, or, once it has caught up, makes it a voter in place of any
    /// other id of the same name.
    pub(super) async fn join(&self, join: &Join) -> Result<Joining, ReplicationError> {
        if join.cluster != self.identity.cluster {
            return Err(ReplicationError::Invalid(format!(
                "a join of cluster {}; this is {}",
                join.cluster, self.identity.cluster
            )));
        }
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let stale: BTreeSet<NodeId> = membership
            .nodes()
            .filter(|(id, node)| **id != join.id && node.addr == join.name)
            .map(|(id, _)| *id)
            .collect();
        let uniform = membership.get_joint_config().len() == 1;
        if uniform && voters.contains(&join.id) && stale.iter().all(|id| !voters.contains(id)) {
            return Ok(Joining::Voter);
        }
        // A membership change outlives the call that asked for it (a caller
        // that gives up must not leave the cluster in a joint config): it
        // runs in its own task, and the caller asks again for its outcome.
        let raft = self.raft.clone();
        if membership.get_node(&join.id).is_none() {
            tracing::info!(name = %join.name, id = join.id, "adding a learner");
            let node = BasicNode::new(&join.name);
            let id = join.id;
            tokio::spawn(
                async move {
                    if let Err(err) = raft.add_learner(id, node, false).await {
                        tracing::info!(%err, "the learner was not added");
                    }
                }
                .in_current_span(),
            );
            return Ok(Joining::CatchingUp);
        }
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&join.id).copied().flatten())
            .map_or(0, |log_id| log_id.index);
        let last = metrics.last_log_index.unwrap_or(0);
        if matched + PROMOTE_WITHIN < last {
            return Ok(Joining::CatchingUp);
        }
        let mut next: BTreeSet<NodeId> = voters.difference(&stale).copied().collect();
        next.insert(join.id);
        tracing::info!(name = %join.name, id = join.id, replaced = ?stale, "making a learner a voter");
        tokio::spawn(
            async move {
                if let Err(err) = raft.change_membership(next, false).await {
                    tracing::info!(%err, "the membership was not changed");
                }
            }
            .in_current_span(),
        );
        Ok(Joining::CatchingUp)
    }
}
