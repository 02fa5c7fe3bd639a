//! The storage raft ships with: the log, the vote and the state machine in
//! the replica's SQLite file, beside the service's own tables.
//!
//! - [`log`]: openraft's log storage ([`SqliteLog`]).
//! - [`state_machine`]: the service's journal as openraft's state machine
//!   ([`JournalStateMachine`]), with snapshots.
//! - [`snapshot`]: snapshots as files, written and read a row at a time.
//! - [`recover`]: a lone survivor made the only voter of a new cluster.
//! - [`backup`]: a replica's state as one file, and a new cluster founded
//!   from it.

pub mod backup;
pub mod log;
pub mod recover;
pub mod snapshot;
pub mod state_machine;

use std::path::Path;
use std::sync::Arc;

pub use self::log::SqliteLog;
pub use self::recover::{force_new_cluster, Forced, RecoverError};
pub use self::state_machine::JournalStateMachine;
use crate::error::StoreError;
use crate::journal::sqlite::{SqliteJournal, SqliteMachine};

/// Opens the raft log in the SQLite file at `path` (the file of `journal`)
/// and wraps `journal` as the state machine: the two halves of the storage
/// that [`super::RaftReplicator::start`] takes.
///
/// With the log in the journal's own file, the two share the journal's
/// writer connection (one page cache, see [`log`]), and applies are
/// committed without a sync of their own: every entry is in the log first,
/// synced, and the log's next sync covers the applies before it (one
/// write-ahead log); a power cut loses at most applies that openraft redoes
/// from the log.
pub async fn open<M: SqliteMachine>(
    journal: Arc<SqliteJournal<M>>,
    path: &Path,
) -> Result<(SqliteLog<M>, JournalStateMachine<M>), StoreError> {
    let log = if path == journal.path() {
        journal.sync_with_another_writer().await?;
        let writer = journal.writer();
        tokio::task::spawn_blocking(move || SqliteLog::<M>::sharing(writer)).await??
    } else {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || SqliteLog::<M>::open(&path)).await??
    };
    let machine = JournalStateMachine::new(journal).await?;
    Ok((log, machine))
}
