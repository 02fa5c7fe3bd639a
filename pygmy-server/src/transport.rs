//! Replication calls between nodes over HTTP (`POST /replication/<rpc>`),
//! with pooled keep-alive connections and the cluster token.

use std::collections::HashMap;

use async_trait::async_trait;
use pygmy_client::{ClientError, InternalClient};
use pygmy_core::replication::Transport;
use pygmy_core::TransportError;

/// A [`Transport`] that reaches peers by name at their HTTP addresses.
pub struct HttpTransport {
    peers: HashMap<String, InternalClient>,
}

impl HttpTransport {
    /// A transport to these `(name, client)` peers.
    pub fn new(peers: impl IntoIterator<Item = (String, InternalClient)>) -> Self {
        HttpTransport {
            peers: peers.into_iter().collect(),
        }
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn call(&self, peer: &str, rpc: &str, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let client = self
            .peers
            .get(peer)
            .ok_or_else(|| TransportError::Unreachable {
                peer: peer.to_owned(),
                reason: "not in the topology".to_owned(),
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
                message: err.to_string(),
            }),
        }
    }
}
