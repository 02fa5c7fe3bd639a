//! The `raft` replicator: openraft over any log and state-machine storage
//! (openraft's `RaftLogStorage` and `RaftStateMachine`; [`super::sqlite`]
//! is the one Pygmy ships), reaching its peers through a [`Transport`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, LogId, Raft, ServerState};

use super::config::RaftConfig;
use super::messages as rpc;
use super::network::Network;
use super::types::{NodeId, RaftTypes};
use crate::error::ReplicationError;
use crate::journal::{Machine, Op};
use crate::replication::rpc::{decode, encode};
use crate::replication::{Replicator, Transport};

/// A raft replica of the service `M`.
pub struct RaftReplicator<M: Machine> {
    raft: Raft<RaftTypes<M>>,
    id: NodeId,
    names: Arc<Vec<String>>,
    network: Network<M>,
    write_timeout: Duration,
}

impl<M: Machine> Drop for RaftReplicator<M> {
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

fn unavailable(err: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Unavailable(err.to_string())
}

impl<M: Machine> RaftReplicator<M> {
    /// Starts the replica over its storage (`log` and `machine`), and
    /// offers the cluster's membership: the first replica to start with an
    /// empty log founds the cluster, the others' offers are refused by
    /// openraft and ignored.
    pub async fn start<L, S>(
        config: RaftConfig,
        log: L,
        machine: S,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, ReplicationError>
    where
        L: RaftLogStorage<RaftTypes<M>>,
        S: RaftStateMachine<RaftTypes<M>>,
    {
        let id = crate::replication::position(&config.node, &config.replicas)? as NodeId + 1;
        let names = Arc::new(config.replicas.clone());
        let network = Network::new(Arc::clone(&transport), config.rpc_timeout);
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
            network: Network::new(transport, config.rpc_timeout),
            write_timeout: config.write_timeout,
        })
    }

    /// The name of replica `id`.
    fn name(&self, id: NodeId) -> Option<&str> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        self.names.get(index).map(String::as_str)
    }

    /// Calls `rpc` on the leader `leader`.
    async fn call_leader<Req, Resp>(
        &self,
        leader: NodeId,
        rpc: &str,
        request: &Req,
    ) -> Result<Resp, crate::TransportError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let peer = self.name(leader).unwrap_or_default();
        self.network.call(peer, rpc, request).await
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
}

#[async_trait]
impl<M: Machine> Replicator<M> for RaftReplicator<M> {
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
                            ReplicationError::Invalid("an op applied with no outcome".to_owned())
                        })
                    }
                    Err(RaftError::APIError(err)) => Err(err.to_string()),
                    Err(RaftError::Fatal(err)) => return Err(unavailable(err)),
                }
            } else {
                match self.call_leader(leader, rpc::PROPOSE, &op).await {
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
            .call_leader(leader, rpc::READ_INDEX, &())
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

impl<M: Machine> Debug for RaftReplicator<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftReplicator")
            .field("id", &self.id)
            .finish()
    }
}
