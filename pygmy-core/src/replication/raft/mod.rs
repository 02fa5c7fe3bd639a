//! `raft`: replication by consensus, on openraft 0.9.
//!
//! Every op is an entry of the raft log; an op is acknowledged once a
//! majority has it durably, and every replica applies the log in order to
//! its journal. See `docs/consistency.md`.
//!
//! - [`types`]: openraft's type configuration of a service.
//! - [`log_store`]: the log and vote in SQLite.
//! - [`state_machine`]: the journal as openraft's state machine, with
//!   snapshots.
//! - [`replicator`]: the [`crate::replication::Replicator`], and openraft's
//!   network over a [`crate::replication::Transport`].

// openraft's traits dictate its error type, `StorageError`, which is large;
// the helpers here return it as the traits do.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod replicator;
pub mod state_machine;
pub mod types;

pub use log_store::SqliteLog;
pub use replicator::{RaftConfig, RaftReplicator};
pub use state_machine::JournalStateMachine;
pub use types::{NodeId, RaftTypes};
