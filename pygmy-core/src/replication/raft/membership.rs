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
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{ChangeMembers, LogId, Raft, RaftMetrics};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::batch::Batcher;
use super::config::RaftConfig;
use super::identity::{Identity, IdentityStore};
use super::messages::{self as rpc, Adopt, Hello, Join, Joining};
use super::network::{learn, Network};
use super::read_index::{self, ReadRounds};
use super::types::{NodeId, RaftTypes, ReplicaNode};
use crate::error::{ErrorKind, ReplicationError, TransportError};
use crate::journal::Machine;
use crate::replication::rpc::call;
use crate::replication::{MemberInfo, MemberRole, Members, Transport};

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
    /// Where the ops proposed here, as leader, gather into entries.
    pub(super) batcher: Batcher<M>,
    /// Where the reads waiting for a read index share a round, as leader.
    pub(super) reads: ReadRounds,
    /// Where they share a call to the leader, as follower.
    pub(super) leader_reads: ReadRounds,
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

/// A follower's round: the read index of the leader it knows (one call,
/// for every read waiting).
async fn ask_the_leader<M: Machine>(shared: Weak<Shared<M>>) -> read_index::Answer {
    let shared = shared.upgrade().ok_or("the replica has stopped")?;
    let member = shared.member().ok_or("not a raft member yet")?;
    let leader = member
        .metrics()
        .current_leader
        .ok_or("no raft leader: fewer than a majority of replicas answer")?;
    if leader == member.identity.id {
        return member.reads.read_index().await;
    }
    let peer = shared.reach(member, leader).unwrap_or_default();
    let limit = shared.config.forward_timeout;
    call(&*shared.transport, &peer, rpc::READ_INDEX, &(), limit)
        .await
        .map_err(|err| err.to_string())
}

fn unavailable(err: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Unavailable(err.to_string())
}

fn refused(kind: ErrorKind, message: String) -> ReplicationError {
    ReplicationError::Refused { kind, message }
}

/// openraft's refusal of a membership change, for the operator.
fn change_refused(
    err: RaftError<NodeId, ClientWriteError<NodeId, ReplicaNode>>,
) -> ReplicationError {
    match err {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(err)) => {
            refused(ErrorKind::Unprocessable, err.to_string())
        }
        other => unavailable(other),
    }
}

/// Waits at most `limit` for a membership change that runs in its own task
/// (a caller that gives up must not leave the cluster in a joint config).
async fn settle(
    change: JoinHandle<Result<(), ReplicationError>>,
    limit: Duration,
) -> Result<(), ReplicationError> {
    match tokio::time::timeout(limit, change).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => Err(unavailable(err)),
        Err(_) => Err(refused(
            ErrorKind::Unavailable,
            "the change is not committed yet; it goes on: list the members to follow it".to_owned(),
        )),
    }
}

/// What a peer's refusal means here: its kind kept, so that an operator's
/// request forwarded to the leader answers as the leader did.
pub(super) fn forwarded(err: TransportError) -> ReplicationError {
    match err {
        TransportError::Refused { kind, message, .. } => refused(kind, message),
        other => unavailable(other),
    }
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
        let batcher = Batcher::start(raft.clone(), self.config.write_timeout);
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

    /// The name to call member `id` by, once the transport knows where it
    /// is.
    pub(super) fn reach(&self, member: &Member<M>, id: NodeId) -> Option<String> {
        let node = member.node(id)?;
        learn(&*self.transport, &node);
        Some(node.name)
    }

    /// Whether the topology this replica started with names `name`.
    pub(super) fn in_topology(&self, name: &str) -> bool {
        self.config.replicas.iter().any(|r| r == name)
    }

    /// On the leader: adds replica `name`, running at `url`, as a learner
    /// (it asks to be made a voter once it has caught up), waiting at most
    /// `limit` for the change to commit. Adding a member again is a no-op.
    pub(super) async fn add(
        &self,
        member: &Member<M>,
        name: &str,
        url: &str,
        limit: Duration,
    ) -> Result<(), ReplicationError> {
        let metrics = member.metrics();
        let membership = metrics.membership_config.membership();
        if let Some((_, node)) = membership.nodes().find(|(_, node)| node.name == name) {
            return match &node.url {
                Some(known) if known != url => Err(refused(
                    ErrorKind::Unprocessable,
                    format!("{name} is a member at {known}: remove it first"),
                )),
                _ => Ok(()),
            };
        }
        self.transport
            .learn(name, url)
            .map_err(|err| refused(ErrorKind::BadRequest, err.to_string()))?;
        let hello: Hello = call(&*self.transport, name, rpc::HELLO, &(), ASK_TIMEOUT)
            .await
            .map_err(|err| {
                refused(
                    ErrorKind::Unavailable,
                    format!("{name} at {url} does not answer (is it running?): {err}"),
                )
            })?;
        let ours = &member.identity.cluster;
        let identity = match hello.identity {
            Some(theirs) => theirs,
            None => {
                // Not settled yet: it takes a joining identity of ours
                // (unless it settled meanwhile: it answers the one it has).
                let adopt = Adopt {
                    identity: Identity::joining(ours),
                };
                call::<_, Identity>(&*self.transport, name, rpc::ADOPT, &adopt, ASK_TIMEOUT)
                    .await
                    .map_err(|err| {
                        refused(ErrorKind::Unavailable, format!("{name} at {url}: {err}"))
                    })?
            }
        };
        if &identity.cluster != ours {
            return Err(refused(
                ErrorKind::Unprocessable,
                format!(
                    "{name} belongs to another cluster ({}): start it over an empty data directory",
                    identity.cluster
                ),
            ));
        }
        if membership.get_node(&identity.id).is_some() {
            return Err(refused(
                ErrorKind::Unprocessable,
                format!("{name}'s raft id {} is another member's", identity.id),
            ));
        }
        tracing::info!(%name, %url, id = identity.id, "adding a member, as a learner");
        let raft = member.raft.clone();
        let node = ReplicaNode {
            name: name.to_owned(),
            url: Some(url.to_owned()),
        };
        let change = tokio::spawn(
            async move {
                raft.add_learner(identity.id, node, false)
                    .await
                    .map(|_| ())
                    .map_err(change_refused)
            }
            .in_current_span(),
        );
        settle(change, limit).await
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
    pub(super) fn metrics(&self) -> RaftMetrics<NodeId, ReplicaNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Member `id`, from the membership.
    pub(super) fn node(&self, id: NodeId) -> Option<ReplicaNode> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// The name of member `id`, from the membership.
    pub(super) fn name(&self, id: NodeId) -> Option<String> {
        self.node(id).map(|node| node.name)
    }

    /// The membership as an operator reads it.
    pub(super) fn members(&self) -> Members {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leads = metrics.current_leader == Some(self.identity.id);
        let mut members: Vec<MemberInfo> = membership
            .nodes()
            .map(|(id, node)| MemberInfo {
                name: node.name.clone(),
                id: *id,
                role: if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                },
                leader: metrics.current_leader == Some(*id),
                url: node.url.clone(),
                matched: if leads && *id == self.identity.id {
                    metrics.last_log_index
                } else {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten())
                        .map(|log_id| log_id.index)
                },
            })
            .collect();
        members.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
        Members {
            cluster: self.identity.cluster.clone(),
            leader: metrics.current_leader.and_then(|id| self.name(id)),
            last_log: metrics.last_log_index,
            changing: membership.get_joint_config().len() > 1,
            members,
        }
    }

    /// On the leader: removes every member named `name` (a voter, through
    /// joint consensus, or a learner), waiting at most `limit` for the
    /// change to commit.
    pub(super) async fn remove(&self, name: &str, limit: Duration) -> Result<(), ReplicationError> {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let ids: BTreeSet<NodeId> = membership
            .nodes()
            .filter(|(_, node)| node.name == name)
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Err(refused(
                ErrorKind::NotFound,
                format!("{name} is not a member of this cluster"),
            ));
        }
        if membership.get_joint_config().len() > 1 {
            return Err(refused(
                ErrorKind::Unavailable,
                "a membership change is under way: try again once it is done".to_owned(),
            ));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leaving: BTreeSet<NodeId> = ids.intersection(&voters).copied().collect();
        let learners: BTreeSet<NodeId> = ids.difference(&voters).copied().collect();
        if !leaving.is_empty() && leaving.len() == voters.len() {
            return Err(refused(
                ErrorKind::Unprocessable,
                format!("{name} is the last voter: a service needs one"),
            ));
        }
        tracing::info!(%name, ?ids, "removing a member");
        let raft = self.raft.clone();
        let change = tokio::spawn(
            async move {
                if !leaving.is_empty() {
                    raft.change_membership(ChangeMembers::RemoveVoters(leaving), false)
                        .await
                        .map_err(change_refused)?;
                }
                if !learners.is_empty() {
                    raft.change_membership(ChangeMembers::RemoveNodes(learners), false)
                        .await
                        .map_err(change_refused)?;
                }
                Ok(())
            }
            .in_current_span(),
        );
        settle(change, limit).await
    }

    /// On the leader: confirms it still leads (a round of heartbeats to a
    /// majority, shared with the reads waiting beside this one), waits
    /// until it applied its commit index, and answers that index, by
    /// `deadline` (a leader cut off from the others never confirms).
    pub(super) async fn read_index(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<LogId<NodeId>>, ReplicationError> {
        tokio::time::timeout_at(deadline, self.reads.read_index())
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
    /// other id of the same name. A replica joins only under a name the
    /// membership has (it lost its disk, or an operator added it) or that
    /// the topology names (`in_topology`: it missed the founding).
    pub(super) async fn join(
        &self,
        join: &Join,
        in_topology: bool,
    ) -> Result<Joining, ReplicationError> {
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
            .filter(|(id, node)| **id != join.id && node.name == join.name)
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
            // Its address stays what the membership said of its name.
            let known = membership
                .nodes()
                .find(|(_, node)| node.name == join.name)
                .map(|(_, node)| node.clone());
            if known.is_none() && !in_topology {
                return Err(refused(
                    ErrorKind::Unprocessable,
                    format!(
                        "{} is not a member of this cluster: add it with `pygmy-client members add`",
                        join.name
                    ),
                ));
            }
            tracing::info!(name = %join.name, id = join.id, "adding a learner");
            let node = known.unwrap_or_else(|| ReplicaNode::named(&join.name));
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
