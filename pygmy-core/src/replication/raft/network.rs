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
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::messages::{self as rpc, Addressed, SnapshotChunk};
use super::types::{NodeId, RaftTypes, ReplicaNode};
use crate::error::{ErrorKind, TransportError};
use crate::journal::Machine;
use crate::replication::{rpc as plumbing, Transport};

/// openraft's network: every RPC is a call through the [`Transport`],
/// addressed to one member of one cluster.
pub struct Network<M> {
    transport: Arc<dyn Transport>,
    /// The longest an RPC may take (openraft has its own limits too).
    limit: Duration,
    /// The cluster's id.
    cluster: Arc<str>,
    _machine: std::marker::PhantomData<fn() -> M>,
}

impl<M> Network<M> {
    /// A network of cluster `cluster` over `transport`.
    pub fn new(transport: Arc<dyn Transport>, limit: Duration, cluster: &str) -> Self {
        Network {
            transport,
            limit,
            cluster: Arc::from(cluster),
            _machine: std::marker::PhantomData,
        }
    }
}

impl<M: Machine> RaftNetworkFactory<RaftTypes<M>> for Network<M> {
    type Network = Peer<M>;

    async fn new_client(&mut self, target: NodeId, node: &ReplicaNode) -> Peer<M> {
        learn(&*self.transport, node);
        Peer {
            transport: Arc::clone(&self.transport),
            limit: self.limit,
            cluster: Arc::clone(&self.cluster),
            target,
            name: node.name.clone(),
            _machine: std::marker::PhantomData,
        }
    }
}

/// Tells `transport` where `node` is, if the membership says (a replica
/// added at run time, which the topology may not name).
pub fn learn(transport: &dyn Transport, node: &ReplicaNode) {
    if let Some(url) = &node.url {
        if let Err(err) = transport.learn(&node.name, url) {
            tracing::warn!(name = %node.name, %url, %err, "cannot reach a member at its URL");
        }
    }
}

/// One peer, for openraft.
pub struct Peer<M> {
    transport: Arc<dyn Transport>,
    limit: Duration,
    cluster: Arc<str>,
    target: NodeId,
    name: String,
    _machine: std::marker::PhantomData<fn() -> M>,
}

impl<M> Peer<M> {
    /// Calls openraft's `rpc` on this peer, addressed to it.
    async fn call<Req, Resp, E>(
        &self,
        rpc: &str,
        request: Req,
    ) -> Result<Resp, RPCError<NodeId, ReplicaNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addressed = Addressed {
            cluster: self.cluster.to_string(),
            to: self.target,
            request,
        };
        let body =
            plumbing::encode(&addressed).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(rpc, body).await
    }

    /// Sends an encoded call and decodes openraft's answer.
    async fn send<Resp, E>(
        &self,
        rpc: &str,
        body: Vec<u8>,
    ) -> Result<Resp, RPCError<NodeId, ReplicaNode, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, E> =
            match plumbing::send(&*self.transport, &self.name, rpc, body, self.limit).await {
                Ok(answer) => answer,
                // Cut off, or not (or no longer) the member called:
                // openraft backs off before trying again.
                Err(
                    err @ (TransportError::Unreachable { .. }
                    | TransportError::Refused {
                        kind: ErrorKind::Unavailable,
                        ..
                    }),
                ) => return Err(RPCError::Unreachable(Unreachable::new(&err))),
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
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ReplicaNode, RaftError<NodeId>>>
    {
        self.call(rpc::APPEND, request).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<RaftTypes<M>>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, ReplicaNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // The data travels raw after a JSON header (as JSON, a byte array
        // would be a list of numbers, 3 to 4 times its size).
        let header = SnapshotChunk {
            cluster: self.cluster.to_string(),
            to: self.target,
            vote: request.vote,
            meta: request.meta,
            offset: request.offset,
            done: request.done,
        };
        let body = rpc::frame_chunk(&header, &request.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(rpc::SNAPSHOT, body).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ReplicaNode, RaftError<NodeId>>> {
        self.call(rpc::VOTE, request).await
    }
}
