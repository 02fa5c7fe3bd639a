//! `raft`: replication by consensus, on openraft 0.9.
//!
//! Every op is an entry of the raft log; an op is acknowledged once a
//! majority has it durably, and every replica applies the log in order to
//! its journal. See `docs/consistency.md`.
//!
//! - [`replicator`]: [`RaftReplicator`], the [`crate::replication::Replicator`]
//!   over any storage that implements openraft's `RaftLogStorage` and
//!   `RaftStateMachine`: the replica's state, writes, fresh reads, and the
//!   serving side of its peers' calls.
//! - [`network`]: the calling side: openraft's network, and a follower's
//!   calls to its leader, through a [`crate::replication::Transport`].
//! - `start`: how a replica founds or joins its cluster, becomes a voter
//!   and catches up (the background steps of its start).
//! - `membership`: an operator's list, add and remove, and the leader's
//!   side of a replica's join.
//! - [`identity`]: a replica's cluster id and raft id, kept durably, and
//!   why a replica that lost its disk rejoins under a new id.
//! - `batch`: group commit: the ops proposed while the leader writes go
//!   into one entry.
//! - `read_index`: the reads waiting for a read index share one round.
//! - [`format`](mod@format): entry formats, and how a leader raises its service's
//!   format once every member reads it (a rolling upgrade).
//! - [`messages`]: the RPC names and the messages of founding and joining.
//! - [`config`]: the replica's timings and snapshot policy ([`RaftConfig`]).
//! - [`types`]: openraft's type configuration of a service.
//! - [`sqlite`]: the storage Pygmy ships: the log, the vote and the
//!   journal as state machine in the replica's SQLite file.

// openraft's traits dictate its error type, `StorageError`, which is large;
// the helpers here return it as the traits do.
#![allow(clippy::result_large_err)]

mod batch;
pub mod config;
pub mod format;
pub mod identity;
mod membership;
pub mod messages;
pub mod network;
mod read_index;
pub mod replicator;
pub mod sqlite;
mod start;
pub mod types;

pub use config::RaftConfig;
pub use identity::{Identity, IdentityStore};
pub use replicator::RaftReplicator;
pub use sqlite::{JournalStateMachine, SqliteLog};
pub use types::{NodeId, Proposal, RaftTypes, Stamped};
