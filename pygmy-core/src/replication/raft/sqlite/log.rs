//! openraft's log and vote, in the replica's SQLite file.
//!
//! Tables `raft_log` (index, entry as JSON) and `raft_meta` (vote,
//! committed, last purged log id, and the replica's [`Identity`]). Every change is one committed
//! transaction (`synchronous = FULL`): an append is durable before openraft
//! is told it is flushed, a vote before `save_vote` returns. The committed
//! log id is written with the next append, never by itself.
//!
//! In the journal's own file, the log shares the journal's writer
//! connection ([`SqliteLog::sharing`]): SQLite empties a connection's page
//! cache whenever another connection wrote the file, so two writers of one
//! file would take turns re-reading every page they touch (and wait for
//! each other in SQLite's busy handler, which sleeps); one connection keeps
//! its cache, and the two wait on one mutex.
//!
//! The newest entries appended are also kept in memory (`Tail`):
//! openraft reads each entry back soon after appending it (to send it to
//! every follower, and to apply it), and a read from the tail needs
//! neither the writer connection nor decoding the entry's JSON.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{LogId, OptionalSend, StorageError, StorageIOError, Vote};
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::journal::Machine;
use crate::replication::raft::identity::{Identity, IdentityStore};
use crate::replication::raft::types::{NodeId, RaftTypes};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS raft_log (
    idx   INTEGER PRIMARY KEY,
    entry TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS raft_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

type Entry<M> = openraft::Entry<RaftTypes<M>>;
type Error = StorageError<NodeId>;

/// The raft log of one replica. Cheap to clone: clones share the connection.
pub struct SqliteLog<M: Machine> {
    conn: Arc<Mutex<Connection>>,
    /// The connection is the journal's writer, whose own commits are not
    /// synced (`synchronous = NORMAL`): the log's are made `FULL` each.
    shared: bool,
    /// The committed log id openraft last told of, not written yet: it is
    /// written with the next append (openraft needs it only to re-apply
    /// committed entries sooner after a restart, so it never costs a sync
    /// of its own).
    committed: Arc<Mutex<Option<Option<LogId<NodeId>>>>>,
    /// The newest entries, as the table holds them.
    tail: Arc<Mutex<Tail<M>>>,
    _machine: PhantomData<fn() -> M>,
}

/// Entries the tail keeps (a few MB at most: each holds at most
/// `MAX_OPS_PER_ENTRY` ops). A follower further behind is sent entries
/// read from the table.
const TAIL_ENTRIES: usize = 256;

/// The newest entries of the log, in memory: a run of consecutive indexes,
/// each entry as the table holds it (every write to the table changes the
/// run with it, under the connection's lock). Empty after a restart until
/// the first append.
struct Tail<M: Machine> {
    entries: VecDeque<Entry<M>>,
}

impl<M: Machine> Default for Tail<M> {
    fn default() -> Self {
        Tail {
            entries: VecDeque::new(),
        }
    }
}

impl<M: Machine> Tail<M> {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn last(&self) -> Option<u64> {
        self.entries.back().map(|e| e.log_id.index)
    }

    /// After `entries` were written, each at its index.
    fn appended(&mut self, entries: Vec<Entry<M>>) {
        for entry in entries {
            let index = entry.log_id.index;
            // openraft appends after the last entry (it truncates a
            // conflict first); an entry over the run cuts the run there.
            self.truncated(index);
            if self.last().is_some_and(|last| last + 1 != index) {
                // Not next to the run (after a snapshot was installed, say).
                self.entries.clear();
            }
            self.entries.push_back(entry);
            if self.entries.len() > TAIL_ENTRIES {
                self.entries.pop_front();
            }
        }
    }

    /// Before the entries from `index` on are deleted.
    fn truncated(&mut self, index: u64) {
        while self.last().is_some_and(|last| last >= index) {
            self.entries.pop_back();
        }
    }

    /// After the entries up to `index` were deleted.
    fn purged(&mut self, index: u64) {
        while self.first().is_some_and(|first| first <= index) {
            self.entries.pop_front();
        }
    }

    /// The entries from `start` to before `end`, if the run holds every
    /// index in that range (so any the table holds there).
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry<M>>> {
        let (first, last) = (self.first()?, self.last()?);
        if start < first || end > last.saturating_add(1) {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let count = usize::try_from(end.saturating_sub(start)).ok()?;
        Some(
            self.entries
                .iter()
                .skip(from)
                .take(count)
                .cloned()
                .collect(),
        )
    }
}

impl<M: Machine> Clone for SqliteLog<M> {
    fn clone(&self) -> Self {
        SqliteLog {
            conn: Arc::clone(&self.conn),
            shared: self.shared,
            committed: Arc::clone(&self.committed),
            tail: Arc::clone(&self.tail),
            _machine: PhantomData,
        }
    }
}

fn io_error(err: impl std::error::Error + 'static) -> Error {
    StorageIOError::write_logs(&err).into()
}

fn read_error(err: impl std::error::Error + 'static) -> Error {
    StorageIOError::read_logs(&err).into()
}

impl<M: Machine> SqliteLog<M> {
    /// Opens (creating if needed) the raft tables in the SQLite file at
    /// `path` (the replica's journal file). Blocking.
    pub fn open(path: &Path) -> Result<Self, crate::StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "page_size", crate::journal::sqlite::PAGE_SIZE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteLog {
            conn: Arc::new(Mutex::new(conn)),
            shared: false,
            committed: Arc::new(Mutex::new(None)),
            tail: Arc::default(),
            _machine: PhantomData,
        })
    }

    /// The raft tables over `conn`, the writer connection of the journal
    /// in the same file, whose commits are not synced of their own
    /// (`synchronous = NORMAL`, see
    /// [`SqliteJournal::sync_with_another_writer`](crate::journal::sqlite::SqliteJournal::sync_with_another_writer)):
    /// each of the log's is. Blocking.
    pub fn sharing(conn: Arc<Mutex<Connection>>) -> Result<Self, crate::StoreError> {
        lock(&conn).execute_batch(SCHEMA)?;
        Ok(SqliteLog {
            conn,
            shared: true,
            committed: Arc::new(Mutex::new(None)),
            tail: Arc::default(),
            _machine: PhantomData,
        })
    }

    /// Runs `f` on the connection on the blocking pool, every commit in it
    /// synced.
    async fn with<R, F>(&self, f: F) -> Result<R, Error>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, Error> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let shared = self.shared;
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&conn);
            if !shared {
                return f(&mut conn);
            }
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(io_error)?;
            let result = f(&mut conn);
            // Back to the journal's setting (if this fails, the journal's
            // commits are synced too: slower, never less durable).
            if let Err(err) = conn.pragma_update(None, "synchronous", "NORMAL") {
                tracing::warn!(%err, "the journal's commits stay synced");
            }
            result
        })
        .await
        .map_err(io_error)?
    }
}

pub(super) fn get<T: DeserializeOwned>(conn: &Connection, key: &str) -> Result<Option<T>, Error> {
    let value: Option<String> = conn
        .prepare_cached("SELECT value FROM raft_meta WHERE key = ?1")
        .and_then(|mut select| select.query_row([key], |r| r.get(0)).optional())
        .map_err(read_error)?;
    value
        .map(|v| serde_json::from_str(&v).map_err(read_error))
        .transpose()
}

pub(super) fn put<T: Serialize>(conn: &Connection, key: &str, value: &T) -> Result<(), Error> {
    let value = serde_json::to_string(value).map_err(io_error)?;
    conn.prepare_cached(
        "INSERT INTO raft_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut upsert| upsert.execute(params![key, value]))
    .map_err(io_error)?;
    Ok(())
}

/// `raft_meta`'s key of the replica's identity.
pub(super) const IDENTITY: &str = "identity";
/// `raft_meta`'s key of the last log id purged.
pub(super) const LAST_PURGED: &str = "last_purged";
const COMMITTED: &str = "committed";

#[async_trait::async_trait]
impl<M: Machine> IdentityStore for SqliteLog<M> {
    async fn identity(&self) -> Result<Option<Identity>, crate::StoreError> {
        self.with(|conn| get(conn, IDENTITY))
            .await
            .map_err(|e| crate::StoreError::Storage(Box::new(e)))
    }

    async fn adopt(&self, identity: Identity) -> Result<Identity, crate::StoreError> {
        self.with(move |conn| {
            // One transaction: of two adopters, the first one wins.
            let tx = conn.transaction().map_err(io_error)?;
            let kept = match get::<Identity>(&tx, IDENTITY)? {
                Some(kept) => kept,
                None => {
                    put(&tx, IDENTITY, &identity)?;
                    identity
                }
            };
            tx.commit().map_err(io_error)?;
            Ok(kept)
        })
        .await
        .map_err(|e| crate::StoreError::Storage(Box::new(e)))
    }

    async fn has_raft_state(&self) -> Result<bool, crate::StoreError> {
        self.with(|conn| {
            let vote: Option<Vote<NodeId>> = get(conn, "vote")?;
            let entries: i64 = conn
                .query_row("SELECT COUNT(*) FROM raft_log", [], |r| r.get(0))
                .map_err(read_error)?;
            Ok(vote.is_some() || entries > 0)
        })
        .await
        .map_err(|e| crate::StoreError::Storage(Box::new(e)))
    }
}

/// Locks `mutex`, taking a poisoned one as it is: a transaction a panic
/// broke off rolls back, and every step of a change to the tail leaves it a
/// run of entries the table holds.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn index(i: u64) -> i64 {
    // Log indexes stay far below 2^63.
    i64::try_from(i).unwrap_or(i64::MAX)
}

impl<M: Machine> RaftLogReader<RaftTypes<M>> for SqliteLog<M> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<M>>, Error> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(entries) = lock(&self.tail).get(start, end) {
            return Ok(entries);
        }
        let (start, end) = (index(start), index(end));
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT entry FROM raft_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
                )
                .map_err(read_error)?;
            let rows = stmt
                .query_map(params![start, end], |r| r.get::<_, String>(0))
                .map_err(read_error)?;
            let mut entries = Vec::new();
            for row in rows {
                let text = row.map_err(read_error)?;
                entries.push(serde_json::from_str(&text).map_err(read_error)?);
            }
            Ok(entries)
        })
        .await
    }
}

impl<M: Machine> RaftLogStorage<RaftTypes<M>> for SqliteLog<M> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<RaftTypes<M>>, Error> {
        self.with(|conn| {
            let last_purged_log_id: Option<LogId<NodeId>> = get(conn, LAST_PURGED)?;
            let last: Option<String> = conn
                .query_row(
                    "SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(read_error)?;
            let last_log_id = match last {
                Some(text) => {
                    let entry: Entry<M> = serde_json::from_str(&text).map_err(read_error)?;
                    Some(entry.log_id)
                }
                None => last_purged_log_id,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), Error> {
        let vote = *vote;
        self.with(move |conn| put(conn, "vote", &vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, Error> {
        self.with(|conn| get(conn, "vote")).await
    }

    /// Kept until the next append writes it: a committed id read after a
    /// restart may be older than the last one told, never newer.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), Error> {
        *lock(&self.committed) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, Error> {
        self.with(|conn| Ok(get::<Option<LogId<NodeId>>>(conn, COMMITTED)?.flatten()))
            .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<RaftTypes<M>>,
    ) -> Result<(), Error>
    where
        I: IntoIterator<Item = Entry<M>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<M>> = entries.into_iter().collect();
        let rows = entries
            .iter()
            .map(|entry| {
                Ok((
                    index(entry.log_id.index),
                    serde_json::to_string(entry).map_err(io_error)?,
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let tail = Arc::clone(&self.tail);
        let committed = lock(&self.committed).take();
        let written = self
            .with(move |conn| {
                let tx = conn.transaction().map_err(io_error)?;
                if let Some(committed) = committed {
                    put(&tx, COMMITTED, &committed)?;
                }
                {
                    let mut insert = tx
                        .prepare_cached(
                            "INSERT OR REPLACE INTO raft_log (idx, entry) VALUES (?1, ?2)",
                        )
                        .map_err(io_error)?;
                    for (idx, entry) in &rows {
                        insert.execute(params![idx, entry]).map_err(io_error)?;
                    }
                }
                tx.commit().map_err(io_error)?;
                lock(&tail).appended(entries);
                Ok(())
            })
            .await;
        // Durable (committed, synchronous = FULL) before openraft hears of it.
        match &written {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(err) => callback.log_io_completed(Err(std::io::Error::other(err.to_string()))),
        }
        written
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), Error> {
        let tail = Arc::clone(&self.tail);
        self.with(move |conn| {
            // The tail first: a reader then either finds the entries gone
            // from it or waits for the connection, past the delete.
            lock(&tail).truncated(log_id.index);
            conn.execute(
                "DELETE FROM raft_log WHERE idx >= ?1",
                [index(log_id.index)],
            )
            .map_err(io_error)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), Error> {
        let tail = Arc::clone(&self.tail);
        self.with(move |conn| {
            let tx = conn.transaction().map_err(io_error)?;
            put(&tx, LAST_PURGED, &log_id)?;
            tx.execute(
                "DELETE FROM raft_log WHERE idx <= ?1",
                [index(log_id.index)],
            )
            .map_err(io_error)?;
            tx.commit().map_err(io_error)?;
            lock(&tail).purged(log_id.index);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogMachine;
    use crate::journal::sqlite::SqliteJournal;

    fn entry(term: u64, index: u64) -> Entry<CatalogMachine> {
        openraft::Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, 0), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    fn indexes(entries: &[Entry<CatalogMachine>]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[test]
    fn the_tail_holds_a_run_of_the_newest_entries() {
        let mut tail = Tail::<CatalogMachine>::default();
        tail.appended((1..=5).map(|i| entry(1, i)).collect());
        assert_eq!(
            indexes(&tail.get(2, 4).expect("held")),
            vec![(1, 2), (1, 3)]
        );
        assert_eq!(tail.get(1, 6).expect("held").len(), 5);
        assert!(
            tail.get(1, 7).is_none(),
            "past the run: the table may hold more"
        );
        assert!(tail.get(0, 3).is_none(), "before the run");
        // A conflict truncated, and new entries in its place.
        tail.truncated(4);
        tail.appended(vec![entry(2, 4)]);
        assert_eq!(
            indexes(&tail.get(3, 5).expect("held")),
            vec![(1, 3), (2, 4)]
        );
        tail.purged(2);
        assert!(tail.get(2, 5).is_none());
        assert_eq!(tail.get(3, 5).expect("held").len(), 2);
        // An append past a hole (a snapshot installed): the run starts over.
        tail.appended(vec![entry(2, 10)]);
        assert!(tail.get(4, 5).is_none());
        assert_eq!(indexes(&tail.get(10, 11).expect("held")), vec![(2, 10)]);
        // At most TAIL_ENTRIES are kept.
        let next = 11..11 + TAIL_ENTRIES as u64;
        tail.appended(next.map(|i| entry(2, i)).collect());
        assert_eq!(tail.entries.len(), TAIL_ENTRIES);
        assert!(tail.get(10, 12).is_none());
    }

    async fn append(log: &mut SqliteLog<CatalogMachine>, entries: Vec<Entry<CatalogMachine>>) {
        use openraft::storage::RaftLogStorageExt;
        log.blocking_append(entries).await.expect("append");
    }

    /// Entries just appended are read from memory, not from the table; a
    /// range the tail cannot answer whole is read from the table.
    #[tokio::test]
    async fn entries_just_appended_are_read_from_the_tail() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log =
            SqliteLog::<CatalogMachine>::open(&dir.path().join("db.sqlite")).expect("log");
        append(&mut log, (1..=3).map(|i| entry(1, i)).collect()).await;
        // Spoil the table's copies: a read from it would fail to decode.
        log.with(|conn| {
            conn.execute("UPDATE raft_log SET entry = 'spoilt'", [])
                .map_err(io_error)?;
            Ok(())
        })
        .await
        .expect("spoil");
        let read = log.try_get_log_entries(1..=3).await.expect("from the tail");
        assert_eq!(indexes(&read), vec![(1, 1), (1, 2), (1, 3)]);
        assert!(
            log.try_get_log_entries(1..).await.is_err(),
            "an open range is read from the table"
        );
        // Truncated entries are gone from the tail with the table's.
        log.truncate(LogId::new(openraft::CommittedLeaderId::new(1, 0), 2))
            .await
            .expect("truncate");
        assert!(log
            .try_get_log_entries(2..3)
            .await
            .is_ok_and(|e| e.is_empty()));
    }

    fn synchronous(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("pragma")
    }

    /// On the journal's writer connection, the log's commits are synced
    /// (`FULL`, 2) and the journal's are left as it set them (`NORMAL`, 1).
    #[tokio::test]
    async fn a_log_on_the_journals_connection_syncs_its_own_commits_only() {
        let dir = tempfile::tempdir().expect("dir");
        let journal =
            SqliteJournal::<CatalogMachine>::open(dir.path().join("db.sqlite")).expect("open");
        journal.sync_with_another_writer().await.expect("normal");
        let writer = journal.writer();
        let log = SqliteLog::<CatalogMachine>::sharing(Arc::clone(&writer)).expect("log");
        let inside = log.with(|conn| Ok(synchronous(conn))).await.expect("with");
        assert_eq!(inside, 2, "the log commits with synchronous = FULL");
        let after = synchronous(&lock(&writer));
        assert_eq!(after, 1, "the journal's commits are back to NORMAL");
    }
}
