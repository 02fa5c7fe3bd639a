//! Replication: applying each op of a service on all its replicas.
//!
//! A [`Replicator`] takes an op (a [`crate::journal::Op`]) and answers its
//! outcome once the op is applied as its backend promises; it also serves the
//! calls its peers make to it ([`Replicator::handle`]), which the server
//! routes to `POST /replication/<rpc>`. Peers are reached through a
//! [`Transport`] (HTTP in the server, [`loopback::Loopback`] in tests).
//!
//! Backends:
//! - [`broadcast::Broadcast`]: the seed's protocol (apply, then send to each
//!   peer), made as good as it can be without consensus. See its docs for
//!   what it does not promise.
//! - [`raft`]: consensus on openraft 0.9 (with the `raft` feature).

pub mod broadcast;
pub mod loopback;
#[cfg(feature = "raft")]
pub mod raft;
pub mod rpc;

use async_trait::async_trait;

use crate::error::{ReplicationError, TransportError};
use crate::journal::{Machine, Op};

/// Applies a service's ops on its replicas.
#[async_trait]
pub trait Replicator<M: Machine>: Send + Sync {
    /// Applies `op` to the replicated service and returns its outcome.
    ///
    /// When it returns `Ok`, the op is durable on the replica that applied
    /// it, and on every other replica the backend promises (see each
    /// backend). On `Err` the op may or may not have been applied: retrying
    /// with the same op id is always safe, since an op id is applied at most
    /// once per replica and a repeat answers the recorded outcome.
    async fn propose(&self, op: Op<M::Command>) -> Result<M::Outcome, ReplicationError>;

    /// Serves a peer's call `rpc` with a JSON `body`; answers a JSON body.
    async fn handle(&self, rpc: &str, body: &[u8]) -> Result<Vec<u8>, ReplicationError>;

    /// Whether this replica serves: false while it catches up at start.
    fn is_ready(&self) -> bool;

    /// Returns once this replica has applied every op acknowledged before
    /// the call began, so that a read of its store that starts afterwards
    /// is fresh. The default returns at once: `broadcast` acknowledges an op
    /// only once every replica that is up has it.
    async fn linearize(&self) -> Result<(), ReplicationError> {
        Ok(())
    }
}

/// The position of `node` among `replicas` (its rank with `broadcast`, its
/// raft id less one with `raft`).
pub fn position(node: &str, replicas: &[String]) -> Result<usize, ReplicationError> {
    replicas.iter().position(|r| r == node).ok_or_else(|| {
        ReplicationError::Config(format!("{node} is not one of the replicas {replicas:?}"))
    })
}

/// Sends a replication call to a peer and returns its answer.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Calls `rpc` on `peer` (a node name) with a JSON `body`. An error
    /// means no answer was had: the peer may or may not have acted.
    async fn call(&self, peer: &str, rpc: &str, body: Vec<u8>) -> Result<Vec<u8>, TransportError>;
}
