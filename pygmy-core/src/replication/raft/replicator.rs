//! The `raft` replicator: openraft over any log and state-machine storage
//! (openraft's `RaftLogStorage` and `RaftStateMachine`; [`super::sqlite`]
//! is the one Pygmy ships), reaching its peers through a [`Transport`].
//!
//! A replica starts in three steps, in the background (it is not ready
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, LogId, Raft, RaftMetrics, ServerState};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::config::RaftConfig;
use super::identity::{Identity, IdentityStore};
use super::messages::{self as rpc, Addressed, Adopt, Hello, Join, Joining, SnapshotChunk};
use super::network::Network;
use super::types::{NodeId, RaftTypes};
use crate::error::ReplicationError;
use crate::journal::{Machine, Op};
use crate::replication::rpc::{call, decode, encode};
use crate::replication::{Replicator, Transport};

/// How often a replica that is not yet a voter tries its next step.
const STEP_EVERY: Duration = Duration::from_millis(500);
/// Longest wait for a peer's answer while founding or joining.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the founder waits for every replica before it founds the
/// cluster with a majority.
const FOUND_WAIT: Duration = Duration::from_secs(3);
/// A learner this many entries behind the leader's log, or fewer, is made a
/// voter (it catches the rest up as a voter).
const PROMOTE_WITHIN: u64 = 64;

/// A raft replica of the service `M`.
pub struct RaftReplicator<M: Machine> {
    shared: Arc<Shared<M>>,
    starter: JoinHandle<()>,
}

/// A replica that knows its identity, running raft.
struct Member<M: Machine> {
    raft: Raft<RaftTypes<M>>,
    identity: Identity,
}

struct Shared<M: Machine> {
    config: RaftConfig,
    /// This replica's place among the topology's replicas.
    position: usize,
    transport: Arc<dyn Transport>,
    identities: Arc<dyn IdentityStore>,
    /// Set once, when the replica knows its identity and runs raft.
    member: OnceLock<Member<M>>,
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

fn unavailable(err: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Unavailable(err.to_string())
}

impl<M: Machine> RaftReplicator<M> {
    /// Starts the replica over its storage (`log`, which also keeps its
    /// identity, and `machine`). It finds or founds its cluster in the
    /// background, and is ready once it is a voter with a known leader.
    pub async fn start<L, S>(
        config: RaftConfig,
        log: L,
        machine: S,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, ReplicationError>
    where
        L: RaftLogStorage<RaftTypes<M>> + IdentityStore + Clone,
        S: RaftStateMachine<RaftTypes<M>>,
    {
        let position = crate::replication::position(&config.node, &config.replicas)?;
        let openraft = Arc::new(config.openraft()?);
        let shared = Arc::new(Shared {
            config,
            position,
            transport,
            identities: Arc::new(log.clone()),
            member: OnceLock::new(),
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

impl<M: Machine> Shared<M> {
    fn member(&self) -> Option<&Member<M>> {
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

    /// The three steps of a start (see the module's docs).
    async fn run<L, S>(
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
}

impl<M: Machine> Member<M> {
    fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// The name of member `id`, from the membership.
    fn name(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr.clone())
    }

    /// Checks that an openraft call is meant for this member.
    fn check_address(&self, cluster: &str, to: NodeId) -> Result<(), ReplicationError> {
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
    async fn join(&self, join: &Join) -> Result<Joining, ReplicationError> {
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

impl<M: Machine> RaftReplicator<M> {
    fn member(&self) -> Result<&Member<M>, ReplicationError> {
        self.shared
            .member()
            .ok_or_else(|| unavailable("this replica has not joined its raft cluster yet"))
    }

    /// Calls `rpc` on the leader `leader`.
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
        let peer = member.name(leader).unwrap_or_default();
        call(
            &*self.shared.transport,
            &peer,
            rpc,
            request,
            self.shared.config.forward_timeout,
        )
        .await
    }

    /// After a forward to `leader` failed: waits until another leader is
    /// known, at most until `deadline` or one election timeout (the leader
    /// may be back by then), so that the retry does not go to the same
    /// silent leader at once.
    async fn await_other_leader(
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
    async fn await_leader(
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
                    .unwrap_or_else(|| unavailable("starting")));
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

    fn hello(&self) -> Hello {
        match self.shared.member() {
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
                // A leader cut off from the others never commits: bounded.
                let written =
                    tokio::time::timeout_at(deadline, member.raft.client_write(op.clone())).await;
                match written {
                    Ok(Ok(response)) => {
                        return response.data.ok_or_else(|| {
                            ReplicationError::Invalid("an op applied with no outcome".to_owned())
                        })
                    }
                    Ok(Err(RaftError::APIError(err))) => Err(err.to_string()),
                    Ok(Err(RaftError::Fatal(err))) => return Err(unavailable(err)),
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
            rpc::HELLO => return encode(&self.hello()),
            rpc::ADOPT => {
                let adopt: Adopt = decode(body)?;
                let kept = self
                    .shared
                    .identities
                    .adopt(adopt.identity)
                    .await
                    .map_err(unavailable)?;
                return encode(&kept);
            }
            _ => {}
        }
        let member = self.member()?;
        match rpc {
            rpc::PROPOSE => {
                let op: Op<M::Command> = decode(body)?;
                encode(&self.propose(op).await?)
            }
            rpc::APPEND => {
                let call: Addressed<AppendEntriesRequest<RaftTypes<M>>> = decode(body)?;
                member.check_address(&call.cluster, call.to)?;
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
                let limit = self.shared.config.write_timeout;
                let read: Option<LogId<NodeId>> =
                    tokio::time::timeout(limit, member.raft.ensure_linearizable())
                        .await
                        .map_err(|_| unavailable("leadership not confirmed in time"))?
                        .map_err(unavailable)?;
                encode(&read)
            }
            rpc::JOIN => {
                let join: Join = decode(body)?;
                let leader = member.metrics().current_leader;
                match leader {
                    Some(leader) if leader == member.identity.id => {
                        encode(&member.join(&join).await?)
                    }
                    Some(leader) => {
                        let answer: Joining = self
                            .call_leader(member, leader, rpc::JOIN, &join)
                            .await
                            .map_err(unavailable)?;
                        encode(&answer)
                    }
                    None => Err(unavailable("no raft leader")),
                }
            }
            other => Err(ReplicationError::UnknownRpc(other.to_owned())),
        }
    }

    fn is_ready(&self) -> bool {
        let Some(member) = self.shared.member() else {
            return false;
        };
        let metrics = member.raft.metrics();
        let metrics = metrics.borrow();
        metrics.running_state.is_ok()
            && metrics.current_leader.is_some()
            && matches!(metrics.state, ServerState::Leader | ServerState::Follower)
    }

    /// The leader confirms it still leads (a round of heartbeats to a
    /// majority) and waits until it applied its commit index; a follower
    /// asks the leader for that index and waits until it applied it.
    async fn linearize(&self) -> Result<(), ReplicationError> {
        let write_timeout = self.shared.config.write_timeout;
        let deadline = tokio::time::Instant::now() + write_timeout;
        let (member, leader) = self.await_leader(deadline).await?;
        if leader == member.identity.id {
            tokio::time::timeout_at(deadline, member.raft.ensure_linearizable())
                .await
                .map_err(|_| unavailable("leadership not confirmed in time"))?
                .map_err(unavailable)?;
            return Ok(());
        }
        let read: Option<LogId<NodeId>> =
            match self.call_leader(member, leader, rpc::READ_INDEX, &()).await {
                Ok(read) => read,
                Err(err) => {
                    // Once: a reader waits at most one more forward.
                    if !err.passes_over() {
                        return Err(unavailable(err));
                    }
                    self.await_other_leader(member, leader, deadline).await;
                    let (member, leader) = self.await_leader(deadline).await?;
                    if leader == member.identity.id {
                        tokio::time::timeout_at(deadline, member.raft.ensure_linearizable())
                            .await
                            .map_err(|_| unavailable("leadership not confirmed in time"))?
                            .map_err(unavailable)?;
                        return Ok(());
                    }
                    self.call_leader(member, leader, rpc::READ_INDEX, &())
                        .await
                        .map_err(unavailable)?
                }
            };
        let wait = write_timeout.saturating_sub(Duration::from_millis(1));
        member
            .raft
            .wait(Some(wait))
            .applied_index_at_least(read.map(|l| l.index), "read index")
            .await
            .map_err(unavailable)?;
        Ok(())
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
