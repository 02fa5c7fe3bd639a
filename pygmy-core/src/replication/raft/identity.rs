//! Who a replica is in its raft cluster: the cluster's id and its own raft
//! id, kept durably beside the log.
//!
//! A raft member must never forget what it voted for or what it
//! acknowledged. A replica that lost its disk has forgotten both, so it
//! must not come back as the member it was: it finds its identity gone,
//! joins the cluster under a new raft id as a learner, and becomes a voter
//! (in place of its old id) only once it has caught up. The cluster's id
//! travels with every raft call, so a replica never takes a call meant for
//! another cluster, or for the member it was before.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::types::NodeId;
use crate::error::StoreError;

/// A replica's identity in its raft cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster's id, chosen once when the cluster was founded.
    pub cluster: String,
    /// This replica's raft id in it: its position plus one for a founding
    /// member, a fresh random id for a replica that joined later.
    pub id: NodeId,
}

/// The smallest raft id given to a replica that joins a running cluster
/// (founding members have ids 1..=n).
pub const FIRST_JOINED_ID: NodeId = 1 << 32;

impl Identity {
    /// A fresh identity for a replica joining `cluster`.
    pub fn joining(cluster: &str) -> Identity {
        Identity {
            cluster: cluster.to_owned(),
            id: fastrand::u64(FIRST_JOINED_ID..NodeId::MAX / 2),
        }
    }

    /// Whether this replica joined a running cluster (rather than founding
    /// it), so that it must ask to become a voter.
    pub fn joined(&self) -> bool {
        self.id >= FIRST_JOINED_ID
    }
}

/// Where a replica keeps its [`Identity`]: durably, and set at most once.
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// The stored identity, if any.
    async fn identity(&self) -> Result<Option<Identity>, StoreError>;

    /// Stores `identity` unless one is stored already, durably; answers the
    /// identity stored now (the given one, or the one kept).
    async fn adopt(&self, identity: Identity) -> Result<Identity, StoreError>;

    /// Whether the storage holds raft state (a vote or log entries) from
    /// before identities were kept: such a replica is the founding member
    /// at its position.
    async fn has_raft_state(&self) -> Result<bool, StoreError>;
}
