//! The plumbing every replication backend shares: its messages encoded as
//! JSON, and a typed call to a peer through the [`Transport`], within a
//! time limit.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Transport;
use crate::error::{ReplicationError, TransportError};

/// Decodes a peer's message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ReplicationError> {
    serde_json::from_slice(body).map_err(ReplicationError::BadMessage)
}

/// Encodes a message for a peer.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ReplicationError> {
    serde_json::to_vec(value).map_err(ReplicationError::BadMessage)
}

/// Calls `rpc` on `peer` with `request`, and decodes its answer; no answer
/// within `limit` counts as an unreachable peer.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    transport: &dyn Transport,
    peer: &str,
    rpc: &str,
    request: &Req,
    limit: Duration,
) -> Result<Resp, TransportError> {
    let body = serde_json::to_vec(request).map_err(|e| TransportError::Codec {
        peer: peer.to_owned(),
        reason: format!("cannot encode: {e}"),
    })?;
    send(transport, peer, rpc, body, limit).await
}

/// Sends an encoded `body` as `rpc` to `peer`, and decodes its answer; no
/// answer within `limit` counts as an unreachable peer.
pub async fn send<Resp: DeserializeOwned>(
    transport: &dyn Transport,
    peer: &str,
    rpc: &str,
    body: Vec<u8>,
    limit: Duration,
) -> Result<Resp, TransportError> {
    let answer = tokio::time::timeout(limit, transport.call(peer, rpc, body))
        .await
        .map_err(|_| TransportError::Unreachable {
            peer: peer.to_owned(),
            reason: format!("no answer within {limit:?}"),
        })??;
    serde_json::from_slice(&answer).map_err(|e| TransportError::Codec {
        peer: peer.to_owned(),
        reason: format!("undecodable answer: {e}"),
    })
}
