//! The `raft` replicator: openraft over any log and state-machine storage
//! (openraft's `RaftLogStorage` and `RaftStateMachine`; [`super::sqlite`]
//! is the one Pygmy ships), reaching its peers through a [`Transport`].
//!
//! Here: the replica's state (`Shared`, and its `Member` once it runs
//! raft), writes (`propose`: a group commit on the leader, a forward
//! elsewhere), fresh reads (`linearize`: a read index), and the peers'
//! calls. How a replica starts (identity, founding, joining, catching up)
//! is `start.rs`; the operator's membership changes are `membership.rs`.

use std::fmt::Debug;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{LogId, Raft, RaftMetrics, ServerState};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::batch::{Batcher, NotWritten};
use super::config::RaftConfig;
use super::format::{self, KeepsFormat, Reads, Written};
use super::identity::{Identity, IdentityStore};
use super::messages::{self as rpc, Addressed, Adopt, Join, Joining, Passed, SnapshotChunk};
use super::network::learn;
use super::read_index::{self, ReadRounds};
use super::types::{NodeId, RaftTypes, ReplicaNode};
use crate::error::ReplicationError;
use crate::journal::{Machine, Op};
use crate::replication::rpc::{call, decode, encode};
use crate::replication::{
    KnownMember, KnownMembers, MemberChange, Members, ReplicaStatus, Replicator, Transport,
};

/// A raft replica of the service `M`.
pub struct RaftReplicator<M: Machine> {
    pub(super) shared: Arc<Shared<M>>,
    starter: JoinHandle<()>,
}

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

/// What a replica holds for its whole life, shared by the replicator, its
/// start in the background and the read rounds.
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
    /// The entry formats it reads.
    pub(super) reads: Reads,
    /// The format its service writes, as its state machine applied it.
    pub(super) written: Arc<Written>,
}

impl<M: Machine> Drop for RaftReplicator<M> {
    fn drop(&mut self) {
        self.starter.abort();
        // Stop openraft's tasks; nothing waits for them.
        if let (Some(member), Ok(handle)) = (
            self.shared.member.get(),
            tokio::runtime::Handle::try_current(),
        ) {
            let raft = member.raft.clone();
            handle.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

impl<M: Machine> RaftReplicator<M> {
    /// Starts the replica over its storage (`log`, which also keeps its
    /// identity, and `machine`). It finds or founds its cluster in the
    /// background, and is ready once it is a voter with a known leader.
    /// Refuses data written in an entry format it does not read (a
    /// downgrade after its service raised the format).
    pub async fn start<L, S>(
        config: RaftConfig,
        log: L,
        machine: S,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, ReplicationError>
    where
        L: RaftLogStorage<RaftTypes<M>> + IdentityStore + Clone,
        S: RaftStateMachine<RaftTypes<M>> + KeepsFormat,
    {
        let position = crate::replication::position(&config.node, &config.replicas)?;
        let openraft = Arc::new(config.openraft()?);
        let reads = Reads::capped(config.max_format).ok_or_else(|| {
            ReplicationError::Config(format!(
                "a newest entry format of {}: this build reads formats {} to {}",
                config.max_format,
                format::OLDEST,
                format::NEWEST
            ))
        })?;
        let written = machine.written();
        if !reads.reads(written.get()) {
            return Err(ReplicationError::Config(format!(
                "this replica's service writes entry format {}, and it reads formats {} to {}: \
                 a raised format is not undone; run a build that reads it",
                written.get(),
                reads.oldest,
                reads.newest
            )));
        }
        let shared = Arc::new(Shared {
            config,
            position,
            transport,
            identities: Arc::new(log.clone()),
            member: OnceLock::new(),
            caught_up: std::sync::atomic::AtomicBool::new(false),
            reads,
            written,
        });
        let starter = Arc::clone(&shared);
        let starter = tokio::spawn(
            async move {
                if let Err(err) = starter.run(openraft, log, machine).await {
                    tracing::error!(%err, "the raft replica cannot start");
                }
            }
            .in_current_span(),
        );
        Ok(RaftReplicator { shared, starter })
    }
}

impl<M: Machine> RaftReplicator<M> {
    pub(super) fn member(&self) -> Result<&Member<M>, ReplicationError> {
        self.shared.member().ok_or_else(|| {
            ReplicationError::unavailable("this replica has not joined its raft cluster yet")
        })
    }

    /// A write a follower forwarded: written here, with the ops proposed
    /// beside it, if this replica leads now; refused (unavailable) if it
    /// does not, or loses the lead before the write commits, so that the
    /// follower waits for the next leader and forwards it there.
    async fn write_as_leader(
        &self,
        member: &Member<M>,
        op: Op<M::Command>,
    ) -> Result<M::Outcome, ReplicationError> {
        let leads = member.raft.metrics().borrow().current_leader == Some(member.identity.id);
        if !leads {
            return Err(ReplicationError::unavailable(format!(
                "{} does not lead: forward the write to the leader",
                self.shared.config.node
            )));
        }
        let deadline = tokio::time::Instant::now() + self.shared.config.write_timeout;
        match tokio::time::timeout_at(deadline, member.batcher.write(op)).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(NotWritten::Retry(why) | NotWritten::Stopped(why))) => {
                Err(ReplicationError::unavailable(why))
            }
            Err(_) => Err(ReplicationError::unavailable("not committed in time")),
        }
    }

    /// Calls `rpc` on the leader `leader`, waiting for its answer at most
    /// the forward timeout.
    async fn call_leader<Req, Resp>(
        &self,
        member: &Member<M>,
        leader: NodeId,
        rpc: &str,
        request: &Req,
    ) -> Result<Resp, crate::TransportError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let limit = self.shared.config.forward_timeout;
        self.call_leader_within(member, leader, rpc, request, limit)
            .await
    }

    /// Calls `rpc` on the leader `leader`, waiting at most `limit`.
    pub(super) async fn call_leader_within<Req, Resp>(
        &self,
        member: &Member<M>,
        leader: NodeId,
        rpc: &str,
        request: &Req,
        limit: Duration,
    ) -> Result<Resp, crate::TransportError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let peer = self.shared.reach(member, leader).unwrap_or_default();
        call(&*self.shared.transport, &peer, rpc, request, limit).await
    }

    /// After a forward to `leader` failed: waits until another leader is
    /// known, at most until `deadline` or one election timeout (the leader
    /// may be back by then), so that the retry does not go to the same
    /// silent leader at once.
    pub(super) async fn await_other_leader(
        &self,
        member: &Member<M>,
        leader: NodeId,
        deadline: tokio::time::Instant,
    ) {
        let until = deadline.min(tokio::time::Instant::now() + self.shared.config.election.1);
        let mut metrics = member.raft.metrics();
        while metrics.borrow_and_update().current_leader == Some(leader) {
            if tokio::time::timeout_at(until, metrics.changed())
                .await
                .map_or(true, |changed| changed.is_err())
            {
                return;
            }
        }
    }

    /// Waits (a little) until this replica runs raft and a leader is known.
    pub(super) async fn await_leader(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(&Member<M>, NodeId), ReplicationError> {
        let member = loop {
            if let Some(member) = self.shared.member() {
                break member;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self
                    .member()
                    .err()
                    .unwrap_or_else(|| ReplicationError::unavailable("starting")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut metrics = member.raft.metrics();
        loop {
            if let Some(leader) = metrics.borrow_and_update().current_leader {
                return Ok((member, leader));
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Err(ReplicationError::Unavailable(
                    "no raft leader: fewer than a majority of replicas answer".to_owned(),
                ));
            }
        }
    }
}

impl<M: Machine> Shared<M> {
    pub(super) fn member(&self) -> Option<&Member<M>> {
        self.member.get()
    }

    /// The name to call member `id` by, once the transport knows where it
    /// is.
    pub(super) fn reach(&self, member: &Member<M>, id: NodeId) -> Option<String> {
        let node = member.node(id)?;
        learn(&*self.transport, &node);
        Some(node.name)
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
            .map_err(|_| ReplicationError::unavailable("leadership not confirmed in time"))?
            .map_err(ReplicationError::unavailable)
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
}

/// A follower's round: the read index of the leader it knows (one call,
/// for every read waiting).
pub(super) async fn ask_the_leader<M: Machine>(shared: Weak<Shared<M>>) -> read_index::Answer {
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

#[async_trait]
impl<M: Machine> Replicator<M> for RaftReplicator<M> {
    /// On the leader, appends the op to the log and answers once a majority
    /// has it and it is applied here; on a follower, forwards it to the
    /// leader. Retries through an election, at most `write_timeout`.
    async fn propose(&self, op: Op<M::Command>) -> Result<M::Outcome, ReplicationError> {
        let deadline = tokio::time::Instant::now() + self.shared.config.write_timeout;
        loop {
            let (member, leader) = self.await_leader(deadline).await?;
            let answer: Result<(), String> = if leader == member.identity.id {
                // Written with the ops proposed beside it. A leader cut off
                // from the others never commits: bounded.
                let written =
                    tokio::time::timeout_at(deadline, member.batcher.write(op.clone())).await;
                match written {
                    Ok(Ok(outcome)) => return Ok(outcome),
                    Ok(Err(NotWritten::Retry(why))) => Err(why),
                    Ok(Err(NotWritten::Stopped(why))) => {
                        return Err(ReplicationError::unavailable(why))
                    }
                    Err(_) => Err("not committed in time".to_owned()),
                }
            } else {
                match self.call_leader(member, leader, rpc::PROPOSE, &op).await {
                    Ok(outcome) => return Ok(outcome),
                    Err(err) => {
                        if err.passes_over() {
                            self.await_other_leader(member, leader, deadline).await;
                        }
                        Err(err.to_string())
                    }
                }
            };
            // Leadership moved, or the leader is unreachable: retry with
            // whoever leads next (the op id makes a repeat harmless).
            if let Err(err) = answer {
                tracing::debug!(%err, "write not taken; retrying");
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReplicationError::Unavailable(
                    "the write was not committed in time".to_owned(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn handle(&self, rpc: &str, body: &[u8]) -> Result<Vec<u8>, ReplicationError> {
        match rpc {
            rpc::HELLO => return encode(&self.shared.hello().await?),
            rpc::FORMATS => return encode(&self.shared.formats()),
            rpc::ADOPT => {
                let adopt: Adopt = decode(body)?;
                let kept = self
                    .shared
                    .identities
                    .adopt(adopt.identity)
                    .await
                    .map_err(ReplicationError::unavailable)?;
                return encode(&kept);
            }
            _ => {}
        }
        let member = self.member()?;
        match rpc {
            rpc::PROPOSE => {
                // Written here if this replica leads, else refused (503):
                // the follower that forwarded it waits for the next leader
                // and forwards it there, so a write is never passed round.
                let op: Op<M::Command> = decode(body)?;
                encode(&self.write_as_leader(member, op).await?)
            }
            rpc::APPEND => {
                let call: Addressed<AppendEntriesRequest<RaftTypes<M>>> = decode(body)?;
                member.check_address(&call.cluster, call.to)?;
                self.shared.check_formats(&call.request.entries)?;
                encode(&member.raft.append_entries(call.request).await)
            }
            rpc::VOTE => {
                let call: Addressed<VoteRequest<NodeId>> = decode(body)?;
                member.check_address(&call.cluster, call.to)?;
                encode(&member.raft.vote(call.request).await)
            }
            rpc::SNAPSHOT => {
                let (header, data) = rpc::unframe_chunk(body)
                    .ok_or_else(|| ReplicationError::Invalid("a cut snapshot chunk".to_owned()))?;
                let chunk: SnapshotChunk<_, _> = decode(header)?;
                member.check_address(&chunk.cluster, chunk.to)?;
                let request = InstallSnapshotRequest::<RaftTypes<M>> {
                    vote: chunk.vote,
                    meta: chunk.meta,
                    offset: chunk.offset,
                    data: data.to_vec(),
                    done: chunk.done,
                };
                encode(&member.raft.install_snapshot(request).await)
            }
            rpc::READ_INDEX => {
                // Only the leader can vouch for a read index.
                let deadline = tokio::time::Instant::now() + self.shared.config.write_timeout;
                encode(&member.read_index(deadline).await?)
            }
            rpc::JOIN => {
                let join: Passed<Join> = decode(body)?;
                let leader = member.metrics().current_leader;
                match leader {
                    Some(leader) if leader == member.identity.id => {
                        let in_topology = self.shared.in_topology(&join.request.name);
                        encode(&member.join(&join.request, in_topology).await?)
                    }
                    Some(leader) => {
                        let passed = join.again_or_refuse()?;
                        let answer: Joining = self
                            .call_leader(member, leader, rpc::JOIN, &passed)
                            .await
                            .map_err(ReplicationError::unavailable)?;
                        encode(&answer)
                    }
                    None => Err(ReplicationError::unavailable("no raft leader")),
                }
            }
            rpc::MEMBERS => {
                let asked: Passed<Option<MemberChange>> = decode(body)?;
                encode(&self.membership(asked).await?)
            }
            other => Err(ReplicationError::UnknownRpc(other.to_owned())),
        }
    }

    async fn stop(&self) {
        self.starter.abort();
        if let Some(member) = self.shared.member() {
            if let Err(err) = member.raft.shutdown().await {
                tracing::warn!(%err, "raft did not stop cleanly");
            }
            tracing::info!("left raft: stopping");
        }
    }

    fn is_ready(&self) -> bool {
        let Some(member) = self.shared.member() else {
            return false;
        };
        let metrics = member.raft.metrics();
        let metrics = metrics.borrow();
        self.shared
            .caught_up
            .load(std::sync::atomic::Ordering::Acquire)
            && metrics.running_state.is_ok()
            && metrics.current_leader.is_some()
            && matches!(metrics.state, ServerState::Leader | ServerState::Follower)
    }

    /// The leader confirms it still leads (a round of heartbeats to a
    /// majority) and waits until it applied its commit index; a follower
    /// asks the leader for that index and waits until it applied it. Both
    /// share their round with the reads waiting beside this one (see
    /// `read_index.rs`). A follower whose leader does not answer asks once
    /// more, the next leader.
    async fn linearize(&self) -> Result<(), ReplicationError> {
        let write_timeout = self.shared.config.write_timeout;
        let deadline = tokio::time::Instant::now() + write_timeout;
        for attempt in 0..2 {
            let (member, leader) = self.await_leader(deadline).await?;
            if leader == member.identity.id {
                member.read_index(deadline).await?;
                return Ok(());
            }
            let read = tokio::time::timeout_at(deadline, member.leader_reads.read_index())
                .await
                .map_err(|_| ReplicationError::unavailable("no read index in time"))?;
            match read {
                Ok(read) => {
                    let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
                    member
                        .raft
                        .wait(Some(wait))
                        .applied_index_at_least(read.map(|l| l.index), "read index")
                        .await
                        .map_err(ReplicationError::unavailable)?;
                    return Ok(());
                }
                Err(err) if attempt == 0 => {
                    tracing::debug!(%err, "no read index from the leader; asking the next");
                    self.await_other_leader(member, leader, deadline).await;
                }
                Err(err) => return Err(ReplicationError::unavailable(err)),
            }
        }
        Err(ReplicationError::unavailable("no leader gave a read index"))
    }

    async fn members(&self) -> Result<Members, ReplicationError> {
        self.membership(Passed::first(None)).await
    }

    fn known_members(&self) -> Option<KnownMembers> {
        let member = self.shared.member()?;
        let metrics = member.raft.metrics();
        let metrics = metrics.borrow();
        let stored = &metrics.membership_config;
        Some(KnownMembers {
            index: stored.log_id().map_or(0, |log| log.index),
            replicas: stored
                .membership()
                .nodes()
                .map(|(_, node)| KnownMember {
                    name: node.name.clone(),
                    url: node.url.clone(),
                })
                .collect(),
        })
    }

    fn members_index(&self) -> Option<u64> {
        let member = self.shared.member()?;
        let metrics = member.raft.metrics();
        let index = metrics
            .borrow()
            .membership_config
            .log_id()
            .map_or(0, |log| log.index);
        Some(index)
    }

    fn status(&self) -> Option<ReplicaStatus> {
        let member = self.shared.member()?;
        let metrics = member.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let name = |id: NodeId| {
            membership
                .nodes()
                .find(|(node, _)| **node == id)
                .map_or_else(|| format!("#{id}"), |(_, node)| node.name.clone())
        };
        let last_log = metrics.last_log_index.unwrap_or(0);
        let committed = metrics.replication.as_ref().map(|matched| {
            let mut held: Vec<u64> = membership
                .voter_ids()
                .map(|id| match matched.get(&id) {
                    _ if id == metrics.id => last_log,
                    Some(Some(log)) => log.index,
                    _ => 0,
                })
                .collect();
            held.sort_unstable_by(|a, b| b.cmp(a));
            held.get(held.len() / 2).copied().unwrap_or(0)
        });
        let followers = metrics
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != metrics.id)
            .map(|(id, matched)| {
                let matched = matched.map_or(0, |log| log.index);
                (name(*id), last_log.saturating_sub(matched))
            })
            .collect();
        Some(ReplicaStatus {
            state: match metrics.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            term: metrics.current_term,
            leader: metrics.current_leader.map(name),
            last_log,
            committed,
            applied: metrics.last_applied.map_or(0, |log| log.index),
            snapshot: metrics.snapshot.map(|log| log.index),
            purged: metrics.purged.map(|log| log.index),
            followers,
            formats: self.shared.formats(),
        })
    }

    async fn change_members(&self, change: MemberChange) -> Result<Members, ReplicationError> {
        self.membership(Passed::first(Some(change))).await
    }
}

impl<M: Machine> Debug for RaftReplicator<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftReplicator")
            .field("node", &self.shared.config.node)
            .field("identity", &self.shared.member().map(|m| &m.identity))
            .finish()
    }
}
