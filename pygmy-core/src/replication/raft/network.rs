//! The calling side of raft: openraft's network ([`Network`], one
//! [`Peer`] per replica) and the calls a follower makes to its leader, all
//! through the [`Transport`]. The serving side is
//! [`super::RaftReplicator`]'s `handle`.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::messages as rpc;
use super::types::{NodeId, RaftTypes};
use crate::error::TransportError;
use crate::journal::Machine;
use crate::replication::{rpc as plumbing, Transport};

/// openraft's network: every RPC is a call through the [`Transport`].
pub struct Network<M> {
    transport: Arc<dyn Transport>,
    /// The longest an RPC may take (openraft has its own limits too).
    limit: Duration,
    _machine: std::marker::PhantomData<fn() -> M>,
}

impl<M> Network<M> {
    /// A network over `transport`.
    pub fn new(transport: Arc<dyn Transport>, limit: Duration) -> Self {
        Network {
            transport,
            limit,
            _machine: std::marker::PhantomData,
        }
    }

    /// Calls `rpc` on replica `peer` (a follower's forward to its leader).
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: &str,
        rpc: &str,
        request: &Req,
    ) -> Result<Resp, TransportError> {
        plumbing::call(&*self.transport, peer, rpc, request, self.limit).await
    }
}

impl<M: Machine> RaftNetworkFactory<RaftTypes<M>> for Network<M> {
    type Network = Peer<M>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer<M> {
        Peer {
            transport: Arc::clone(&self.transport),
            limit: self.limit,
            target,
            name: node.addr.clone(),
            _machine: std::marker::PhantomData,
        }
    }
}

/// One peer, for openraft.
pub struct Peer<M> {
    transport: Arc<dyn Transport>,
    limit: Duration,
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
        let answer: Result<Resp, E> =
            match plumbing::call(&*self.transport, &self.name, rpc, request, self.limit).await {
                Ok(answer) => answer,
                // Refused or cut off: openraft backs off before trying again.
                Err(err @ TransportError::Unreachable { .. }) => {
                    return Err(RPCError::Unreachable(Unreachable::new(&err)))
                }
                Err(err) => return Err(RPCError::Network(NetworkError::new(&err))),
            };
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl<M: Machine> RaftNetwork<RaftTypes<M>> for Peer<M> {
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
