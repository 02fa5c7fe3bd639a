//! A journal in a SQLite file (rusqlite, bundled SQLite, WAL mode).
//!
//! One writer connection behind a mutex and a few reader connections; every
//! call runs on tokio's blocking pool, never on the async runtime. Commits
//! are `synchronous = FULL`: a write is on disk when `apply` returns.
//!
//! Beside the tables, a service may keep a view of them in memory
//! ([`SqliteMachine::View`]) for reads that need no SQLite and no hand-off
//! to the blocking pool: it is updated after each commit, under the writer
//! lock (so in commit order), from the outcomes of the ops the commit
//! applied anew, or reloaded whole after any other write (seeding, a
//! snapshot installed) unless the write says it leaves the service's
//! tables alone ([`SqliteJournal::write_beside`]). A caller that waited for
//! an apply to return reads a view that holds it.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{Applied, AppliedOp, Entry, HighWater, Journal, Machine, Op, OpId, Source};
use crate::error::StoreError;

/// A service whose state lives in SQLite tables beside the journal's.
pub trait SqliteMachine: Machine {
    /// `CREATE TABLE IF NOT EXISTS ...` for the service's own tables.
    const SCHEMA: &'static str;

    /// Applies `cmd` inside `tx` (the journal commits it with the op's
    /// record). Must match the in-memory backend's semantics exactly.
    fn execute(tx: &Transaction<'_>, cmd: &Self::Command) -> Result<Self::Outcome, StoreError>;

    /// What the service keeps of its tables in memory, for reads (`()`
    /// for none).
    type View: Send + Sync + 'static;

    /// The view of the tables as `conn` sees them (at open, and after any
    /// write that is not an op's apply).
    fn load_view(conn: &Connection) -> Result<Self::View, StoreError>;

    /// Brings `view` up to date with an op applied anew that answered
    /// `outcome` (never called for a repeat, whose recorded outcome may be
    /// older than the tables).
    fn update_view(view: &mut Self::View, outcome: &Self::Outcome);

    /// The first op (by its place in the apply order) whose record must be
    /// kept past the retention window, with every one after it, if the
    /// service needs its records kept longer than their age says (the
    /// catalog keeps the sales the reconciler has not passed). The same on
    /// every replica: a function of the replicated state.
    fn keep_from(_tx: &Transaction<'_>) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Called in the transaction that founds a new cluster from a backup,
    /// once its rows are in: what of the service's state must not carry
    /// over (the catalog's reconciler starts over, since the order
    /// service's backup may be older than the catalog's).
    fn restored(_tx: &Transaction<'_>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// How a commit changes the view: the outcomes of the ops it applied anew,
/// in order, a whole new view, or not at all.
enum ViewChange<M: SqliteMachine> {
    Applied(Vec<M::Outcome>),
    Reloaded(M::View),
    Kept,
}

const JOURNAL_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal_ops (
    seq        INTEGER PRIMARY KEY,
    op_id      TEXT    NOT NULL UNIQUE,
    origin     TEXT    NOT NULL,
    origin_seq INTEGER NOT NULL,
    command    TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    UNIQUE (origin, origin_seq)
);
CREATE TABLE IF NOT EXISTS journal_origins (
    origin     TEXT    PRIMARY KEY,
    high_water INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS journal_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal_marks (
    second INTEGER PRIMARY KEY,
    seq    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS journal_clock (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    stamp_ms INTEGER NOT NULL,
    now_ms   INTEGER NOT NULL
);
";

/// The most the journal's clock moves on between two stamped ops, however
/// far apart their stamps are: three of a raft leader's idle ticks
/// (`raft::batch::TICK`). A leader whose clock jumps ahead (an NTP step, a
/// resumed VM, a bad real-time clock), or a new leader whose clock is
/// ahead of the last one's, moves it on by at most this much; one whose
/// clock is behind does not move it back.
pub const MAX_CLOCK_STEP: Duration = Duration::from_secs(30);

/// An op to apply with [`SqliteJournal::apply_with_meta`]: `None` changes
/// nothing (a replication log's own entries); `at_ms` is the clock the op
/// was stamped with (its proposer's, in milliseconds since the Unix
/// epoch), by which its record is kept.
pub type Stamped<C> = (Source, Option<Op<C>>, Option<u64>);

/// The journal's clock after an op stamped `at_ms`: it moves on by the
/// stamp's advance over the last stamp, at most [`MAX_CLOCK_STEP`], and
/// never back. So its time follows the stamps while their proposers'
/// clocks agree, and no one clock that jumps, ahead or behind, moves it by
/// more than a step. A journal's first stamp sets it (where records were
/// marked before it kept a clock, it goes on from the newest mark).
fn tick(tx: &Transaction<'_>, at_ms: u64) -> Result<u64, StoreError> {
    let at = i64::try_from(at_ms).unwrap_or(i64::MAX);
    let clock: Option<(i64, i64)> = tx
        .prepare_cached("SELECT stamp_ms, now_ms FROM journal_clock WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let now = match clock {
        Some((stamp, now)) => {
            let step = i64::try_from(MAX_CLOCK_STEP.as_millis()).unwrap_or(i64::MAX);
            now.saturating_add(at.saturating_sub(stamp).clamp(0, step))
        }
        None => {
            let marked: Option<i64> = tx
                .prepare_cached("SELECT MAX(second) FROM journal_marks")?
                .query_row([], |r| r.get(0))?;
            marked.map_or(at, |second| second.saturating_mul(1000))
        }
    };
    tx.prepare_cached(
        "INSERT INTO journal_clock (id, stamp_ms, now_ms) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET stamp_ms = excluded.stamp_ms, now_ms = excluded.now_ms",
    )?
    .execute(params![at, now])?;
    Ok(u64::try_from(now).unwrap_or(0))
}

/// After an op stamped `at_ms` was applied: moves the journal's clock on
/// ([`tick`]), marks that ops up to the newest were applied by its second,
/// and deletes the records of the ops applied more than `window` before
/// it. A function of the stamped ops in order only (not of how they were
/// batched), so replicas that apply the same stamped ops keep the same
/// records; and the op just applied is marked at the clock's own second,
/// so it is never deleted by its own stamp.
fn retain<M: SqliteMachine>(
    tx: &Transaction<'_>,
    at_ms: u64,
    window: Duration,
) -> Result<(), StoreError> {
    let now_ms = tick(tx, at_ms)?;
    let second = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let newest: i64 = tx
        .prepare_cached("SELECT IFNULL(MAX(seq), 0) FROM journal_ops")?
        .query_row([], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO journal_marks (second, seq) VALUES (?1, ?2)
         ON CONFLICT (second) DO UPDATE SET seq = MAX(seq, excluded.seq)",
    )?
    .execute(params![second, newest])?;
    // The clock only moves on: the newest mark is its second.
    let latest: i64 = tx
        .prepare_cached("SELECT MAX(second) FROM journal_marks")?
        .query_row([], |r| r.get(0))?;
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    let horizon = latest.saturating_sub(window);
    let cut: Option<i64> = tx
        .prepare_cached("SELECT MAX(seq) FROM journal_marks WHERE second < ?1")?
        .query_row([horizon], |r| r.get(0))?;
    if let Some(cut) = cut {
        // The service may keep some records longer: never past its floor.
        let cut = match M::keep_from(tx)? {
            Some(keep) => cut.min(i64::try_from(keep).unwrap_or(i64::MAX).saturating_sub(1)),
            None => cut,
        };
        tx.prepare_cached("DELETE FROM journal_ops WHERE seq <= ?1")?
            .execute([cut])?;
        tx.prepare_cached("DELETE FROM journal_marks WHERE second < ?1 AND seq <= ?2")?
            .execute(params![horizon, cut])?;
    }
    Ok(())
}

const READERS: usize = 4;

/// A [`Journal`] in one SQLite file, generic over the service it stores.
pub struct SqliteJournal<M: SqliteMachine> {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    view: Arc<RwLock<M::View>>,
    path: PathBuf,
    incarnation: String,
    _machine: PhantomData<fn() -> M>,
}

/// The page size of a new SQLite file (a journal, and the raft log kept
/// in it): 2 KiB instead of SQLite's 4. Every commit writes each page it
/// dirtied whole into the write-ahead log, and an apply dirties a page or
/// two in each of several tables and indexes: with pages half the size a
/// buy writes about a quarter fewer bytes, for less CPU and more buys a
/// second; 1 KiB writes fewer still but costs CPU
/// (docs/history/benchmarks.md, "The ninth round"). A file that exists
/// keeps its page size: SQLite sets it only for a new file.
pub const PAGE_SIZE: u32 = 2048;

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source: rusqlite::Error| StoreError::Open {
        path: path.display().to_string(),
        source: Box::new(source),
    };
    let conn = Connection::open(path).map_err(open_err)?;
    // Before the write-ahead log is set up, which writes the file's header.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    // Every statement of an apply stays prepared (rusqlite's default
    // keeps 16).
    conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
    Ok(conn)
}

/// Prepared statements each connection keeps.
const STATEMENTS_KEPT: usize = 64;

fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic mid-statement rolls the open transaction back when the
    // `Transaction` drops, so the connection is still consistent.
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<M: SqliteMachine> SqliteJournal<M> {
    /// Opens (creating if needed) the database at `path`, with the
    /// journal's tables and the service's.
    ///
    /// Blocking: call it before serving, or from a blocking task.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: dir.display().to_string(),
                source: Box::new(e),
            })?;
        }
        let writer = open_connection(&path)?;
        let incarnation = writer
            .execute_batch(JOURNAL_SCHEMA)
            .and_then(|()| writer.execute_batch(M::SCHEMA))
            .and_then(|()| {
                writer.execute(
                    "INSERT OR IGNORE INTO journal_meta (key, value) VALUES ('incarnation', ?1)",
                    [uuid::Uuid::new_v4().simple().to_string()],
                )?;
                writer.query_row(
                    "SELECT value FROM journal_meta WHERE key = 'incarnation'",
                    [],
                    |row| row.get::<_, String>(0),
                )
            })
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                source: Box::new(e),
            })?;
        let readers = (0..READERS)
            .map(|_| open_connection(&path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let view = M::load_view(&writer)?;
        Ok(SqliteJournal {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(readers),
            view: Arc::new(RwLock::new(view)),
            next_reader: AtomicUsize::new(0),
            path,
            incarnation,
            _machine: PhantomData,
        })
    }

    /// Applies `ops` in order in one transaction, and sets the `meta` keys
    /// (see [`SqliteJournal::meta`]) in the same transaction: the state
    /// change and what the caller records about it are durable together. A
    /// `None` op changes nothing and answers `None`. For a replication log
    /// that must store its applied position with the state.
    ///
    /// With a `retention` window, after each stamped op the records of the
    /// ops applied more than the window before it (by their stamps) are
    /// deleted, in the same transaction: their ids can then be applied
    /// again, and they are no longer listed. The state (books, orders)
    /// keeps every op's effect.
    pub async fn apply_with_meta(
        &self,
        ops: Vec<Stamped<M::Command>>,
        meta: Vec<(String, String)>,
        retention: Option<Duration>,
    ) -> Result<Vec<Option<M::Outcome>>, StoreError> {
        self.commit(move |tx| {
            let mut outcomes = Vec::with_capacity(ops.len());
            let mut applying = Applying::new(ops.len());
            for (source, op, at_ms) in ops {
                outcomes.push(match op {
                    Some(op) => Some(applying.apply(tx, source, &op)?.outcome),
                    None => None,
                });
                if let (Some(window), Some(at_ms)) = (retention, at_ms) {
                    retain::<M>(tx, at_ms, window)?;
                }
            }
            set_meta(tx, &meta)?;
            Ok((outcomes, applying.finish(tx)?))
        })
        .await
    }

    /// The value of meta `key`, as the last [`SqliteJournal::apply_with_meta`]
    /// (or [`set_meta`]) left it.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| get_meta(conn, &key)).await
    }

    /// Lets the writer's commits go without a sync of their own
    /// (`synchronous = NORMAL`), for a journal whose ops are first kept
    /// durably by another writer of the same file, synced (the raft log):
    /// that writer's next sync makes them durable too (one write-ahead
    /// log), and ops lost to a power cut before it are applied again from
    /// that record. A process that crashes loses nothing either way.
    pub async fn sync_with_another_writer(&self) -> Result<(), StoreError> {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || {
            lock(&writer).pragma_update(None, "synchronous", "NORMAL")?;
            Ok(())
        })
        .await?
    }

    /// The writer connection, for a replication log kept in the same file
    /// (it never writes the service's tables, so the view stays true).
    pub(crate) fn writer(&self) -> Arc<Mutex<Connection>> {
        Arc::clone(&self.writer)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one `IMMEDIATE` transaction on the writer, committed if
    /// `f` succeeds, on the blocking pool; the in-memory view is reloaded
    /// from what the transaction leaves (so `f` may change any table).
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        self.commit(move |tx| {
            let result = f(tx)?;
            Ok((result, ViewChange::Reloaded(M::load_view(tx)?)))
        })
        .await
    }

    /// [`SqliteJournal::write`] for a write that leaves the service's
    /// tables alone (a replication log's bookkeeping beside them): the view
    /// is kept as it is, not reloaded, whatever the size of the state.
    pub async fn write_beside<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        self.commit(move |tx| Ok((f(tx)?, ViewChange::Kept))).await
    }

    /// Runs `f` in one `IMMEDIATE` transaction on the writer, on the
    /// blocking pool; once it is committed, and before the writer is free
    /// again, makes the view change `f` answered.
    async fn commit<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<(R, ViewChange<M>), StoreError> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        let view = Arc::clone(&self.view);
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&writer);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (result, change) = f(&tx)?;
            tx.commit()?;
            let write = || view.write().unwrap_or_else(|p| p.into_inner());
            match change {
                ViewChange::Applied(outcomes) => {
                    if !outcomes.is_empty() {
                        let mut view = write();
                        for outcome in &outcomes {
                            M::update_view(&mut view, outcome);
                        }
                    }
                }
                ViewChange::Reloaded(reloaded) => {
                    let old = std::mem::replace(&mut *write(), reloaded);
                    // The old view is dropped after the readers are let go
                    // (a large one takes a while to free).
                    drop(old);
                }
                ViewChange::Kept => {}
            }
            Ok(result)
        })
        .await?
    }

    /// The in-memory view of the tables, as of the last commit. Held only
    /// to copy out of it: never across an `.await`.
    pub(crate) fn view(&self) -> RwLockReadGuard<'_, M::View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a reader connection (a consistent snapshot per statement;
    /// use a transaction inside `f` for more), on the blocking pool.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || f(&lock(&readers[index]))).await?
    }
}

/// Sets meta keys (in the caller's transaction). The key `incarnation` is
/// the journal's own and cannot be set.
pub fn set_meta(tx: &Connection, meta: &[(String, String)]) -> Result<(), StoreError> {
    for (key, value) in meta {
        if key == "incarnation" {
            return Err(StoreError::Refused(
                "the incarnation cannot be changed".to_owned(),
            ));
        }
        tx.prepare_cached(
            "INSERT INTO journal_meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![key, value])?;
    }
    Ok(())
}

/// Reads a meta key (in the caller's connection or transaction).
pub fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM journal_meta WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?)
}

fn high_water(tx: &Connection, origin: &str) -> Result<u64, StoreError> {
    let seq: Option<i64> = tx
        .prepare_cached("SELECT high_water FROM journal_origins WHERE origin = ?1")?
        .query_row([origin], |row| row.get(0))
        .optional()?;
    Ok(seq.map_or(0, |s| s.max(0) as u64))
}

fn raise_high_water(tx: &Connection, origin: &str, seq: u64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO journal_origins (origin, high_water) VALUES (?1, ?2)
         ON CONFLICT (origin) DO UPDATE SET high_water = max(high_water, excluded.high_water)",
    )?
    .execute(params![origin, to_sql_seq(seq)?])?;
    Ok(())
}

fn to_sql_seq(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("sequence {seq} out of range")))
}

/// The ops of one transaction as they are applied: the outcomes applied
/// anew (for the view) and each origin's highest sequence, raised once, as
/// the transaction ends ([`Applying::finish`]): an entry of many ops from
/// one origin updates its high-water row once instead of once per op.
struct Applying<M: SqliteMachine> {
    fresh: Vec<M::Outcome>,
    /// Raises not yet written, at most one per origin.
    raises: Vec<(String, u64)>,
}

impl<M: SqliteMachine> Applying<M> {
    fn new(ops: usize) -> Self {
        Applying {
            fresh: Vec::with_capacity(ops),
            raises: Vec::new(),
        }
    }

    /// Applies `op` from `source` once: an op id recorded already answers
    /// its recorded outcome and changes nothing.
    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        source: Source,
        op: &Op<M::Command>,
    ) -> Result<Applied<M::Outcome>, StoreError> {
        let (origin, origin_seq, local) = match source {
            Source::Local { node } => {
                // The raises noted so far first: they may be this node's.
                self.write_raises(tx)?;
                let next = high_water(tx, &node)? + 1;
                (node, next, true)
            }
            Source::Peer { origin, origin_seq } => (origin, origin_seq, false),
        };
        let recorded: Option<String> = tx
            .prepare_cached("SELECT outcome FROM journal_ops WHERE op_id = ?1")?
            .query_row([&op.id.0], |row| row.get(0))
            .optional()?;
        if let Some(recorded) = recorded {
            if !local {
                self.raise(origin, origin_seq);
            }
            return Ok(Applied {
                outcome: serde_json::from_str(&recorded)?,
                fresh: false,
                origin_seq: None,
            });
        }
        let outcome = M::execute(tx, &op.cmd)?;
        tx.prepare_cached(
            "INSERT INTO journal_ops (op_id, origin, origin_seq, command, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            op.id.0,
            origin,
            to_sql_seq(origin_seq)?,
            serde_json::to_string(&op.cmd)?,
            serde_json::to_string(&outcome)?,
        ])?;
        self.raise(origin, origin_seq);
        self.fresh.push(outcome.clone());
        Ok(Applied {
            outcome,
            fresh: true,
            origin_seq: local.then_some(origin_seq),
        })
    }

    fn raise(&mut self, origin: String, seq: u64) {
        match self.raises.iter_mut().find(|(o, _)| *o == origin) {
            Some((_, high)) => *high = (*high).max(seq),
            None => self.raises.push((origin, seq)),
        }
    }

    fn write_raises(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        for (origin, seq) in self.raises.drain(..) {
            raise_high_water(tx, &origin, seq)?;
        }
        Ok(())
    }

    /// Writes the raises (before the transaction commits) and answers the
    /// view's change.
    fn finish(mut self, tx: &Transaction<'_>) -> Result<ViewChange<M>, StoreError> {
        self.write_raises(tx)?;
        Ok(ViewChange::Applied(self.fresh))
    }
}

#[async_trait]
impl<M: SqliteMachine> Journal<M> for SqliteJournal<M> {
    async fn apply(
        &self,
        source: Source,
        op: Op<M::Command>,
    ) -> Result<Applied<M::Outcome>, StoreError> {
        self.commit(move |tx| {
            let mut applying = Applying::new(1);
            let applied = applying.apply(tx, source, &op)?;
            Ok((applied, applying.finish(tx)?))
        })
        .await
    }

    async fn apply_entries(&self, entries: Vec<Entry<M::Command>>) -> Result<(), StoreError> {
        self.commit(move |tx| {
            let mut applying = Applying::new(entries.len());
            for entry in entries {
                let source = Source::Peer {
                    origin: entry.origin,
                    origin_seq: entry.origin_seq,
                };
                applying.apply(tx, source, &entry.op)?;
            }
            Ok(((), applying.finish(tx)?))
        })
        .await
    }

    async fn entries(
        &self,
        origin: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry<M::Command>>, StoreError> {
        let origin = origin.to_owned();
        let after = to_sql_seq(after)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT op_id, origin_seq, command FROM journal_ops
                 WHERE origin = ?1 AND origin_seq > ?2 ORDER BY origin_seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![origin, after, limit], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (id, origin_seq, command) = row?;
                entries.push(Entry {
                    origin: origin.clone(),
                    origin_seq: origin_seq.max(0) as u64,
                    op: Op {
                        id: OpId(id),
                        cmd: serde_json::from_str(&command)?,
                    },
                });
            }
            Ok(entries)
        })
        .await
    }

    async fn applied(
        &self,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AppliedOp<M::Outcome>>, StoreError> {
        // `prefix` is matched with substr, never as a LIKE pattern.
        let prefix = prefix.to_owned();
        let after = to_sql_seq(after)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, op_id, outcome FROM journal_ops
                 WHERE seq > ?1 AND substr(op_id, 1, length(?2)) = ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![after, prefix, limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            let mut ops = Vec::new();
            for row in rows {
                let (seq, id, outcome) = row?;
                ops.push(AppliedOp {
                    seq: seq.max(0) as u64,
                    id: OpId(id),
                    outcome: serde_json::from_str(&outcome)?,
                });
            }
            Ok(ops)
        })
        .await
    }

    async fn high_waters(&self) -> Result<Vec<HighWater>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT origin, high_water FROM journal_origins ORDER BY origin")?;
            let rows = stmt.query_map([], |row| {
                Ok(HighWater {
                    origin: row.get(0)?,
                    seq: row.get::<_, i64>(1)?.max(0) as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn outcome(&self, id: &OpId) -> Result<Option<M::Outcome>, StoreError> {
        let id = id.0.clone();
        self.read(move |conn| {
            let recorded: Option<String> = conn
                .prepare_cached("SELECT outcome FROM journal_ops WHERE op_id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()?;
            Ok(recorded.map(|r| serde_json::from_str(&r)).transpose()?)
        })
        .await
    }

    fn incarnation(&self) -> &str {
        &self.incarnation
    }
}
