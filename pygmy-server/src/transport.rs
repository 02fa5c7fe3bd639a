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
        // A poisoned lock still holds a usable map: each insert is whole.
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

    /// Reaches `peer` at `url` from now on: a replica added at run time,
    /// or one removed and added again at another address (calls go to its
    /// address of now, not the one first learned).
    fn learn(&self, peer: &str, url: &str) -> Result<(), TransportError> {
        let http =
            Http::with_client(self.pool.clone(), url, self.token.clone()).map_err(|err| {
                TransportError::Codec {
                    peer: peer.to_owned(),
                    reason: err.to_string(),
                }
            })?;
        if self
            .client(peer)
            .is_some_and(|known| known.url() == http.base())
        {
            return Ok(());
        }
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        peers.insert(peer.to_owned(), InternalClient::from_http(http));
        tracing::info!(%peer, %url, "a peer's address learned from the membership");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pygmy_client::http::pooled;
    use pygmy_client::ClientOptions;

    use super::*;

    /// A replica removed and added again at another address is called at
    /// the new one (seen failing when the first address learned stayed).
    #[test]
    fn a_peer_learned_again_at_another_address_is_called_there() {
        let pool = pooled(&ClientOptions::default()).expect("pool");
        let transport = HttpTransport::new(Vec::new(), pool, None);
        let at = |transport: &HttpTransport| {
            transport
                .client("catalog-3")
                .map(|client| client.url().to_string())
        };
        assert_eq!(at(&transport), None);
        transport
            .learn("catalog-3", "http://127.0.0.1:9103")
            .expect("learn");
        assert_eq!(at(&transport).as_deref(), Some("http://127.0.0.1:9103/"));
        transport
            .learn("catalog-3", "http://127.0.0.1:9203")
            .expect("learn again");
        assert_eq!(at(&transport).as_deref(), Some("http://127.0.0.1:9203/"));
    }
}
