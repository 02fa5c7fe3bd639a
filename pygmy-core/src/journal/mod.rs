//! The journal: a replicated service's state as a state machine of commands.
//!
//! Each service (catalog, order) is a [`Machine`]: a set of commands and
//! their outcomes. Every change is an [`Op`], a command under a unique
//! [`OpId`]; a [`Journal`] applies ops to the service's state and records
//! each one with its outcome in the same transaction, so that
//!
//! - applying the same op id twice changes nothing and returns the recorded
//!   outcome (a retry, or a peer's repeat, is harmless);
//! - the ops a replica applied can be read back, per origin and in order,
//!   which is what a replica that was down catches up from.
//!
//! Replication backends ([`crate::replication`]) decide *where* an op is
//! applied; the journal decides *what* it does. The stores of each service
//! ([`crate::catalog::CatalogStore`], [`crate::order::OrderStore`]) are
//! journals with that service's reads on top.

pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::fmt::Debug;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// A replicated service: what commands it takes and what they answer.
pub trait Machine: Send + Sync + 'static {
    /// A change to the service's state. Applying a command must be
    /// deterministic: the same state and command give the same outcome on
    /// every replica.
    type Command: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What a command answered; recorded with the op, so a repeat answers
    /// the same.
    type Outcome: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static;
}

/// An op's unique id, chosen by whoever first proposes it (for a buy, derived
/// from the idempotency key, so a retried buy is the same op).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpId(pub String);

impl OpId {
    /// A fresh random id, for an op that has no natural key (a `PUT /item`).
    pub fn random() -> OpId {
        OpId(uuid::Uuid::new_v4().to_string())
    }
}

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A command under its op id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op<C> {
    /// Unique per change; a repeat of the id is ignored.
    pub id: OpId,
    /// What to do.
    pub cmd: C,
}

/// Where an op being applied comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// Proposed to this replica, which numbers it in its own sequence.
    Local {
        /// This replica's name, recorded as the op's origin.
        node: String,
    },
    /// Shipped by a peer: the op was first applied at `origin` as its
    /// `origin_seq`-th op.
    Peer {
        /// The replica that first applied the op.
        origin: String,
        /// Its number in the origin's sequence.
        origin_seq: u64,
    },
}

/// An op as a journal holds it: the op, where it was first applied, and
/// its place in that origin's sequence. An origin numbers its own ops 1, 2,
/// ... without gaps; a replica may hold another origin's with gaps (an op
/// it already had under another origin is not recorded again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<C> {
    /// The replica that first applied the op.
    pub origin: String,
    /// Its number in that origin's sequence (from 1).
    pub origin_seq: u64,
    /// The op.
    pub op: Op<C>,
}

/// The result of [`Journal::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<O> {
    /// The op's outcome: new, or the recorded one for a repeat.
    pub outcome: O,
    /// False if the op id had been applied before (nothing changed now).
    pub fresh: bool,
    /// For a fresh local op, its number in this replica's own sequence.
    pub origin_seq: Option<u64>,
}

/// An op as [`Journal::applied`] lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedOp<O> {
    /// Its place in this replica's apply order.
    pub seq: u64,
    /// Its id.
    pub id: OpId,
    /// What it answered.
    pub outcome: O,
}

/// How far a replica has applied the ops of one origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighWater {
    /// The origin replica.
    pub origin: String,
    /// The highest `origin_seq` of it applied here (0 for none).
    pub seq: u64,
}

/// A service's state with its op log.
///
/// Every method may be called concurrently. Errors are the store's own; an
/// op's refusal (sold out, unknown item) is an outcome, not an error.
///
/// A service of your own is a [`Machine`] and a state that executes its
/// commands; [`memory::MemoryJournal`] (or the SQLite journal) turns it into
/// a journal, and any replicator can then replicate it:
///
/// ```
/// use pygmy_core::journal::memory::{MemoryJournal, MemoryState};
/// use pygmy_core::journal::{Journal, Machine, Op, OpId, Source};
///
/// /// A counter that never goes below zero.
/// struct Counter;
/// impl Machine for Counter {
///     type Command = i64; // add this much
///     type Outcome = Option<i64>; // the new value, or None if refused
/// }
///
/// #[derive(Default)]
/// struct CounterState(i64);
/// impl MemoryState for CounterState {
///     type Machine = Counter;
///     fn execute(&mut self, add: &i64) -> Option<i64> {
///         let next = self.0.checked_add(*add).filter(|n| *n >= 0)?;
///         self.0 = next;
///         Some(next)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), pygmy_core::StoreError> {
/// let journal = MemoryJournal::<CounterState>::new();
/// let here = Source::Local { node: "a".into() };
/// let add = |id: &str, n| Op { id: OpId(id.into()), cmd: n };
/// assert_eq!(journal.apply(here.clone(), add("one", 5)).await?.outcome, Some(5));
/// // A retry of the same op id answers the recorded outcome and changes nothing.
/// let retry = journal.apply(here.clone(), add("one", 5)).await?;
/// assert_eq!((retry.outcome, retry.fresh), (Some(5), false));
/// // A refusal is an outcome, recorded like any other.
/// assert_eq!(journal.apply(here.clone(), add("two", -9)).await?.outcome, None);
/// assert_eq!(journal.outcome(&OpId("two".into())).await?, Some(None));
/// // The ops this replica originated, in order, for a peer that catches up.
/// let origin = &journal.high_waters().await?[0];
/// assert_eq!((origin.origin.as_str(), origin.seq), ("a", 2));
/// assert_eq!(journal.entries("a", 0, 10).await?.len(), 2);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Journal<M: Machine>: Send + Sync {
    /// Applies `op` and records it, atomically: either the state change, the
    /// op's record (with its outcome) and the origin's high-water mark are
    /// all stored, or none is. Durable when it returns `Ok`.
    ///
    /// Idempotent by op id: if `op.id` was applied before, nothing changes
    /// (except a peer origin's high-water mark, which only rises) and the
    /// recorded outcome is returned with `fresh == false`. So a caller may
    /// retry after any error.
    async fn apply(
        &self,
        source: Source,
        op: Op<M::Command>,
    ) -> Result<Applied<M::Outcome>, StoreError>;

    /// Applies a peer's `entries` in order, as [`Journal::apply`] with
    /// [`Source::Peer`] would one by one, but in one transaction: all or
    /// none, and durable (one sync) when it returns. For catch-up and
    /// shipping, where ops come in batches.
    ///
    /// Required: a loop over [`Journal::apply`] would leave the first
    /// entries applied when a later one fails, which the conformance suite
    /// (`a_batch_of_peer_ops_applies_whole_or_not_at_all`) refuses.
    async fn apply_entries(&self, entries: Vec<Entry<M::Command>>) -> Result<(), StoreError>;

    /// The ops first applied at `origin` with `origin_seq > after`, in
    /// order, at most `limit` of them. Only ops recorded here are returned
    /// (a peer op whose id this replica already had under another origin is
    /// not).
    async fn entries(
        &self,
        origin: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry<M::Command>>, StoreError>;

    /// The ops applied here whose id starts with `prefix`, in the order
    /// they were applied (`seq`, from 1), after `after`, at most `limit`,
    /// with their outcomes. With `raft` every replica numbers them alike.
    async fn applied(
        &self,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AppliedOp<M::Outcome>>, StoreError>;

    /// For each origin seen, the highest `origin_seq` applied here.
    async fn high_waters(&self) -> Result<Vec<HighWater>, StoreError>;

    /// The recorded outcome of op `id`, if it was applied here.
    async fn outcome(&self, id: &OpId) -> Result<Option<M::Outcome>, StoreError>;

    /// A random id chosen when this journal was created, stable for its
    /// life: a replica whose data was lost comes back with a new one, so its
    /// new ops are never mistaken for the old ones it numbered the same.
    fn incarnation(&self) -> &str;
}
