//! Replication calls between nodes over HTTP (`POST /replication/<rpc>`),
//! with pooled keep-alive connections and the cluster token.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use pygmy_client::http::{Http, Pool};
use pygmy_client::{ClientError, InternalClient};
use pygmy_core::replication::Transport;
use pygmy_core::TransportError;

/// A [`Transport`] that reaches peers by name at their HTTP addresses: the
/// topology's, and those a raft membership names (replicas added at run
/// time).
pub struct HttpTransport {
    peers: RwLock<HashMap<String, InternalClient>>,
    /// The connection pool and token for peers learned later.
    pool: Pool,
    token: Option<String>,
}

impl HttpTransport {
    /// A transport to these `(name, client)` peers; a peer learned later
    /// shares `pool` and is sent `token`.
    pub fn new(
        peers: impl IntoIterator<Item = (String, InternalClient)>,
        pool: Pool,
        token: Option<String>,
    ) -> Self {
        HttpTransport {
            peers: RwLock::new(peers.into_iter().collect()),
            pool,
            token,
        }
    }

    fn client(&self, peer: &str) -> Option<InternalClient> {
        // A poisoned lock still holds a usable map: it is only inserted to.
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        peers.get(peer).cloned()
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn call(&self, peer: &str, rpc: &str, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let client = self
            .client(peer)
            .ok_or_else(|| TransportError::Unreachable {
                peer: peer.to_owned(),
                reason: "not in the topology, nor in the membership".to_owned(),
            })?;
        match client.replicate(rpc, body).await {
            Ok(answer) => Ok(answer.to_vec()),
            Err(err @ ClientError::Transport { .. }) => Err(TransportError::Unreachable {
                peer: peer.to_owned(),
                reason: err.to_string(),
            }),
            Err(err) => Err(TransportError::Refused {
                peer: peer.to_owned(),
                kind: err.kind(),
                message: err
                    .answered()
                    .map_or_else(|| err.to_string(), str::to_owned),
            }),
        }
    }

    fn learn(&self, peer: &str, url: &str) -> Result<(), TransportError> {
        if self.client(peer).is_some() {
            return Ok(());
        }
        let http =
            Http::with_client(self.pool.clone(), url, self.token.clone()).map_err(|err| {
                TransportError::Codec {
                    peer: peer.to_owned(),
                    reason: err.to_string(),
                }
            })?;
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        peers
            .entry(peer.to_owned())
            .or_insert_with(|| InternalClient::from_http(http));
        tracing::info!(%peer, %url, "a peer's address learned from the membership");
        Ok(())
    }
}
