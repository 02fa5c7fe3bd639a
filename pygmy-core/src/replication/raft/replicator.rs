//! The `raft` replicator: openraft wired to the journal, the SQLite log and
//! the peers (through a [`Transport`]).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, LogId, Raft, ServerState, SnapshotPolicy};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{NodeId, RaftTypes};
use super::{JournalStateMachine, SqliteLog};
use crate::error::{ReplicationError, TransportError};
use crate::journal::sqlite::{SqliteJournal, SqliteMachine};
use crate::journal::Op;
use crate::replication::{Replicator, Transport};

/// How a raft replica behaves.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This replica's name.
    pub node: String,
    /// Every replica of the service, this one included: replica `i` has
    /// raft id `i + 1`.
    pub replicas: Vec<String>,
    /// The leader's heartbeat (also the time limit of one append).
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range
    /// starts an election.
    pub election: (Duration, Duration),
    /// Longest wait for a write (through elections and forwarding).
    pub write_timeout: Duration,
    /// A snapshot is built after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (a replica further behind
    /// catches up by snapshot).
    pub keep_logs: u64,
}

impl RaftConfig {
    /// Defaults for `node` among `replicas`.
    pub fn new(node: impl Into<String>, replicas: Vec<String>) -> Self {
        RaftConfig {
            node: node.into(),
            replicas,
            heartbeat: Duration::from_millis(150),
            election: (Duration::from_millis(750), Duration::from_millis(1500)),
            write_timeout: Duration::from_secs(5),
            snapshot_every: 5_000,
            keep_logs: 1_000,
        }
    }

    fn openraft(&self) -> Result<Config, ReplicationError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Config {
            cluster_name: "pygmy".to_owned(),
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election.0),
            election_timeout_max: millis(self.election.1),
            install_snapshot_timeout: 5_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            purge_batch_size: 1,
            ..Config::default()
        }
        .validate()
        .map_err(|e| ReplicationError::Config(e.to_string()))
    }
}

/// The RPCs, as `POST /replication/<rpc>`.
mod rpc {
    pub const PROPOSE: &str = "propose";
    pub const APPEND: &str = "raft-append";
    pub const VOTE: &str = "raft-vote";
    pub const SNAPSHOT: &str = "raft-snapshot";
    pub const READ_INDEX: &str = "read-index";
}

/// A raft replica of the service `M`.
pub struct RaftReplicator<M: SqliteMachine> {
    raft: Raft<RaftTypes<M>>,
    id: NodeId,
    names: Arc<Vec<String>>,
    transport: Arc<dyn Transport>,
    write_timeout: Duration,
}

impl<M: SqliteMachine> Drop for RaftReplicator<M> {
    fn drop(&mut self) {
        let raft = self.raft.clone();
        // Stop openraft's tasks; nothing waits for them.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ReplicationError> {
    serde_json::from_slice(body).map_err(|e| ReplicationError::BadMessage(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ReplicationError> {
    serde_json::to_vec(value).map_err(|e| ReplicationError::BadMessage(e.to_string()))
}

fn unavailable(err: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Unavailable(err.to_string())
}

impl<M: SqliteMachine> RaftReplicator<M> {
    /// Starts the replica over `journal` (whose SQLite file at `path` also
    /// holds the raft log), and offers the cluster's membership: the first
    /// replica to start with an empty log founds the cluster, the others'
    /// offers are refused by openraft and ignored.
    pub async fn start(
        config: RaftConfig,
        journal: Arc<SqliteJournal<M>>,
        path: &Path,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, ReplicationError> {
        let id = crate::replication::position(&config.node, &config.replicas)? as NodeId + 1;
        let path = path.to_path_buf();
        let log = tokio::task::spawn_blocking(move || SqliteLog::<M>::open(&path))
            .await
            .map_err(|e| ReplicationError::Store(e.into()))??;
        let machine = JournalStateMachine::new(journal).await?;
        let names = Arc::new(config.replicas.clone());
        let network = Network {
            transport: Arc::clone(&transport),
            _machine: std::marker::PhantomData,
        };
        let raft = Raft::new(id, Arc::new(config.openraft()?), network, log, machine)
            .await
            .map_err(unavailable)?;
        let members: BTreeMap<NodeId, BasicNode> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (i as NodeId + 1, BasicNode::new(name)))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => tracing::info!("founded the raft cluster"),
            Err(RaftError::APIError(err)) => tracing::debug!(%err, "the cluster exists already"),
            Err(err) => return Err(unavailable(err)),
        }
        Ok(RaftReplicator {
            raft,
            id,
            names,
            transport,
            write_timeout: config.write_timeout,
        })
    }

    /// The name of replica `id`.
    fn name(&self, id: NodeId) -> Option<&str> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        self.names.get(index).map(String::as_str)
    }

    /// Waits (a little) until a leader is known.
    async fn await_leader(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<NodeId, ReplicationError> {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(leader) = metrics.borrow_and_update().current_leader {
                return Ok(leader);
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

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        leader: NodeId,
        rpc: &str,
        request: &Req,
    ) -> Result<Resp, TransportError> {
        let peer = self.name(leader).unwrap_or_default().to_owned();
        let body = serde_json::to_vec(request).map_err(|e| TransportError::Status {
            peer: peer.clone(),
            status: 400,
            body: e.to_string(),
        })?;
        let answer = self.transport.call(&peer, rpc, body).await?;
        serde_json::from_slice(&answer).map_err(|e| TransportError::Status {
            peer,
            status: 502,
            body: e.to_string(),
        })
    }
}

#[async_trait]
impl<M: SqliteMachine> Replicator<M> for RaftReplicator<M> {
    /// On the leader, appends the op to the log and answers once a majority
    /// has it and it is applied here; on a follower, forwards it to the
    /// leader. Retries through an election, at most `write_timeout`.
    async fn propose(&self, op: Op<M::Command>) -> Result<M::Outcome, ReplicationError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        loop {
            let leader = self.await_leader(deadline).await?;
            let answer: Result<(), String> = if leader == self.id {
                match self.raft.client_write(op.clone()).await {
                    Ok(response) => {
                        return response.data.ok_or_else(|| {
                            ReplicationError::BadMessage("an op applied with no outcome".to_owned())
                        })
                    }
                    Err(RaftError::APIError(err)) => Err(err.to_string()),
                    Err(RaftError::Fatal(err)) => return Err(unavailable(err)),
                }
            } else {
                match self.call(leader, rpc::PROPOSE, &op).await {
                    Ok(outcome) => return Ok(outcome),
                    Err(err) => Err(err.to_string()),
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
            rpc::PROPOSE => {
                let op: Op<M::Command> = decode(body)?;
                encode(&self.propose(op).await?)
            }
            rpc::APPEND => {
                let request: AppendEntriesRequest<RaftTypes<M>> = decode(body)?;
                encode(&self.raft.append_entries(request).await)
            }
            rpc::VOTE => {
                let request: VoteRequest<NodeId> = decode(body)?;
                encode(&self.raft.vote(request).await)
            }
            rpc::SNAPSHOT => {
                let request: InstallSnapshotRequest<RaftTypes<M>> = decode(body)?;
                encode(&self.raft.install_snapshot(request).await)
            }
            rpc::READ_INDEX => {
                // Only the leader can vouch for a read index.
                let read: Option<LogId<NodeId>> =
                    self.raft.ensure_linearizable().await.map_err(unavailable)?;
                encode(&read)
            }
            other => Err(ReplicationError::UnknownRpc(other.to_owned())),
        }
    }

    fn is_ready(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.running_state.is_ok()
            && metrics.current_leader.is_some()
            && matches!(metrics.state, ServerState::Leader | ServerState::Follower)
    }

    /// The leader confirms it still leads (a round of heartbeats to a
    /// majority) and waits until it applied its commit index; a follower
    /// asks the leader for that index and waits until it applied it.
    async fn linearize(&self) -> Result<(), ReplicationError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let leader = self.await_leader(deadline).await?;
        if leader == self.id {
            self.raft.ensure_linearizable().await.map_err(unavailable)?;
            return Ok(());
        }
        let read: Option<LogId<NodeId>> = self
            .call(leader, rpc::READ_INDEX, &())
            .await
            .map_err(unavailable)?;
        let wait = self.write_timeout.saturating_sub(Duration::from_millis(1));
        self.raft
            .wait(Some(wait))
            .applied_index_at_least(read.map(|l| l.index), "read index")
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// openraft's network: every RPC is a call through the [`Transport`].
struct Network<M> {
    transport: Arc<dyn Transport>,
    _machine: std::marker::PhantomData<fn() -> M>,
}

impl<M: SqliteMachine> RaftNetworkFactory<RaftTypes<M>> for Network<M> {
    type Network = Peer<M>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer<M> {
        Peer {
            transport: Arc::clone(&self.transport),
            target,
            name: node.addr.clone(),
            _machine: std::marker::PhantomData,
        }
    }
}

/// One peer, for openraft.
struct Peer<M> {
    transport: Arc<dyn Transport>,
    target: NodeId,
    name: String,
    _machine: std::marker::PhantomData<fn() -> M>,
}

impl<M> Peer<M> {
    async fn call<Req, Resp, E>(
        &self,
        rpc: &str,
        request: &Req,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = match self.transport.call(&self.name, rpc, body).await {
            Ok(answer) => answer,
            // Refused or cut off: openraft backs off before trying again.
            Err(err @ TransportError::Unreachable { .. }) => {
                return Err(RPCError::Unreachable(Unreachable::new(&err)))
            }
            Err(err) => return Err(RPCError::Network(NetworkError::new(&err))),
        };
        let result: Result<Resp, E> = serde_json::from_slice(&answer)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl<M: SqliteMachine> RaftNetwork<RaftTypes<M>> for Peer<M> {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<RaftTypes<M>>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(rpc::APPEND, &request).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<RaftTypes<M>>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(rpc::SNAPSHOT, &request).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(rpc::VOTE, &request).await
    }
}

impl<M: SqliteMachine> Debug for RaftReplicator<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftReplicator")
            .field("id", &self.id)
            .finish()
    }
}
