//! The start of a raft replica: how it comes to be a serving voter of its
//! cluster.
//!
//! A replica starts in four steps, in the background (it is not ready
//! until they are done; see [`super::identity`]):
//! 1. **Identity.** It reads its [`Identity`]. A replica without one asks
//!    its peers ([`rpc::HELLO`]): if one belongs to a founded cluster, it
//!    joins that cluster under a fresh raft id; if none has an identity
//!    and a majority of the replicas answer, all empty, the first replica
//!    of the topology founds a cluster; otherwise it waits. A replica
//!    answers from its stored identity before it runs raft, so a founder
//!    never counts one that restarts over its data as empty.
//! 2. **Founding** (the first replica only, once): it offers each peer its
//!    founding identity ([`rpc::ADOPT`]) and, once a majority took it,
//!    initializes raft with them as voters.
//! 3. **Membership.** Until it is a voter, it asks the leader to make it
//!    one ([`rpc::JOIN`]): the leader adds it as a learner, and once it has
//!    caught up, makes it a voter in place of any id it had before.
//! 4. **Catch-up.** It asks the leader for its read index and serves once
//!    it has applied (nearly) that much: a replica that replays a long log
//!    or installs a snapshot at start says it is catching up meanwhile.
//!
//! Then, for its life, whenever it leads, it finishes a membership change
//! a former leader left in its joint configuration (see `membership.rs`),
//! and raises its service's entry format once every member reads a newer
//! one (see [`super::format`](mod@super::format)).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{LogId, Raft};

use super::batch::Batcher;
use super::config::{ASK_TIMEOUT, PROMOTE_WITHIN};
use super::identity::Identity;
use super::messages::{self as rpc, Adopt, Hello, Join, Joining, Passed};
use super::network::Network;
use super::read_index::ReadRounds;
use super::replicator::{ask_the_leader, Member, Shared};
use super::types::{NodeId, RaftTypes, ReplicaNode};
use crate::error::{ErrorKind, ReplicationError, TransportError};
use crate::journal::Machine;
use crate::replication::rpc::call;

/// How often a replica that is not yet a voter tries its next step.
const STEP_EVERY: Duration = Duration::from_millis(500);
/// How often a replica that catches up compares what it applied with the
/// leader's read index (a restarted replica is usually there at once).
const CATCH_UP_EVERY: Duration = Duration::from_millis(100);
/// How long the founder waits for every replica before it founds the
/// cluster with a majority.
const FOUND_WAIT: Duration = Duration::from_secs(3);

impl<M: Machine> Shared<M> {
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
            .map_err(ReplicationError::unavailable)?;
        let founder = identity.id == 1 && !identity.joined();
        let batcher = Batcher::start(
            raft.clone(),
            Arc::clone(&self.written),
            self.config.write_timeout,
            self.config.tick,
        );
        let confirming = raft.clone();
        let reads = ReadRounds::new(
            move || {
                let raft = confirming.clone();
                Box::pin(async move { raft.ensure_linearizable().await.map_err(|e| e.to_string()) })
            },
            self.config.write_timeout,
        );
        let shared = Arc::downgrade(self);
        let leader_reads = ReadRounds::new(
            move || Box::pin(ask_the_leader(shared.clone())),
            self.config.forward_timeout,
        );
        let member = Member {
            raft,
            identity,
            batcher,
            reads,
            leader_reads,
        };
        if self.member.set(member).is_err() {
            return Err(ReplicationError::Invalid("started twice".to_owned()));
        }
        if founder {
            self.found().await?;
        }
        self.become_voter().await;
        self.catch_up().await;
        tokio::join!(self.finish_changes_forever(), self.raise_format_forever());
        Ok(())
    }

    /// Step 1: this replica's identity, if it can be settled now.
    async fn settle_identity(&self) -> Result<Option<Identity>, ReplicationError> {
        let store = &self.identities;
        if let Some(identity) = store
            .identity()
            .await
            .map_err(ReplicationError::unavailable)?
        {
            return Ok(Some(identity));
        }
        if store
            .has_raft_state()
            .await
            .map_err(ReplicationError::unavailable)?
        {
            // Raft state from before identities were kept: the founding
            // member at this position, of a cluster that had no id.
            let legacy = Identity {
                cluster: "legacy".to_owned(),
                id: self.position as NodeId + 1,
            };
            return Ok(Some(
                store
                    .adopt(legacy)
                    .await
                    .map_err(ReplicationError::unavailable)?,
            ));
        }
        // This replica is empty; a peer that has an identity belongs to a
        // cluster, founded or being founded: never found another beside it.
        let mut empty = 1;
        let mut claimed = false;
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
                        .map_err(ReplicationError::unavailable)?;
                    tracing::info!(cluster = %mine.cluster, via = %peer, "joining the running cluster");
                    return Ok(Some(mine));
                }
                // Being founded: its founder offers ours.
                Some(_) => claimed = true,
                None => empty += 1,
            }
        }
        if self.position == 0 && !claimed && empty > self.config.replicas.len() / 2 {
            let founding = Identity {
                cluster: uuid::Uuid::new_v4().simple().to_string(),
                id: 1,
            };
            return Ok(Some(
                store
                    .adopt(founding)
                    .await
                    .map_err(ReplicationError::unavailable)?,
            ));
        }
        // A founding member waits for the founder's offer (it arrives as
        // `ADOPT` and is stored); the founder waits for a majority.
        store
            .identity()
            .await
            .map_err(ReplicationError::unavailable)
    }

    /// Step 2, on the first replica: offers each peer its founding
    /// identity, and founds the cluster once a majority took theirs.
    async fn found(&self) -> Result<(), ReplicationError> {
        let Some(member) = self.member() else {
            return Ok(());
        };
        let started = tokio::time::Instant::now();
        loop {
            if member
                .raft
                .is_initialized()
                .await
                .map_err(ReplicationError::unavailable)?
            {
                return Ok(());
            }
            let mut voters = BTreeMap::new();
            voters.insert(member.identity.id, ReplicaNode::named(&self.config.node));
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
                        voters.insert(offer.id, ReplicaNode::named(peer));
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
                    Err(err) => return Err(ReplicationError::unavailable(err)),
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
        let join = Passed::first(Join {
            cluster: member.identity.cluster.clone(),
            name: self.config.node.clone(),
            id: member.identity.id,
        });
        let mut told = false;
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
                    Err(TransportError::Refused {
                        kind: ErrorKind::Unprocessable,
                        message,
                        ..
                    }) => {
                        if !told {
                            tracing::info!(%message, "waiting to be added to the cluster");
                            told = true;
                        }
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
                    let peer = self.reach(member, leader).unwrap_or_default();
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

    /// What this replica says of itself to a peer that asks. Before it
    /// runs raft, its stored identity, if it has one: a replica that
    /// restarts over its data says so at once, and a peer never counts it
    /// as empty (nor founds a cluster without it); it belongs to a founded
    /// cluster if it holds raft state.
    pub(super) async fn hello(&self) -> Result<Hello, ReplicationError> {
        if let Some(member) = self.member() {
            let metrics = member.metrics();
            return Ok(Hello {
                identity: Some(member.identity.clone()),
                founded: metrics
                    .membership_config
                    .membership()
                    .voter_ids()
                    .next()
                    .is_some(),
                leader: metrics.current_leader.and_then(|id| member.name(id)),
            });
        }
        let stored = self
            .identities
            .identity()
            .await
            .map_err(ReplicationError::unavailable)?;
        let founded = match stored {
            Some(_) => self
                .identities
                .has_raft_state()
                .await
                .map_err(ReplicationError::unavailable)?,
            None => false,
        };
        Ok(Hello {
            identity: stored,
            founded,
            leader: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::OnceLock;

    use super::*;
    use crate::catalog::sqlite::SqliteCatalog;
    use crate::catalog::CatalogMachine;
    use crate::replication::loopback::Loopback;
    use crate::replication::raft::identity::IdentityStore;
    use crate::replication::raft::RaftConfig;

    /// A replica that restarts over its data says who it is before it runs
    /// raft: counted as empty then, it could have let a founder found a
    /// new cluster beside the one it belongs to. (Seen failing when it
    /// answered no identity until raft ran.)
    #[tokio::test]
    async fn a_stored_identity_is_said_before_raft_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c1.db");
        let journal = Arc::new(SqliteCatalog::open(&path).expect("open"));
        let (log, _machine) = crate::replication::raft::sqlite::open(journal, &path)
            .await
            .expect("the raft storage");
        let identity = Identity {
            cluster: "a-cluster".to_owned(),
            id: 2,
        };
        log.adopt(identity.clone()).await.expect("adopt");
        let names = vec!["c0".to_owned(), "c1".to_owned(), "c2".to_owned()];
        let shared = Shared::<CatalogMachine> {
            config: RaftConfig::new("c1", names),
            position: 1,
            transport: Loopback::<CatalogMachine>::new().endpoint("c1"),
            identities: Arc::new(log),
            member: OnceLock::new(),
            caught_up: AtomicBool::new(false),
            reads: super::super::format::Reads::capped(super::super::format::NEWEST)
                .expect("this build's formats"),
            written: Arc::default(),
        };
        let hello = shared.hello().await.expect("hello");
        assert_eq!(hello.identity, Some(identity));
        assert!(!hello.founded, "no raft state: a cluster being founded");
    }
}
