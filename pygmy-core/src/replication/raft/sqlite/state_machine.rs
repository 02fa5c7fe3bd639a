//! openraft's state machine: the service's journal.
//!
//! A batch of entries is applied in one transaction that also stores the
//! last applied log id and the membership (journal meta `raft_applied`,
//! `raft_membership`), so after a restart openraft resumes exactly after
//! the last entry applied. Ops keep their ids: an op committed twice (a
//! client write retried across a leader change) is applied once.
//!
//! Each op comes stamped with its leader's clock; op records older than
//! the retention window (by those stamps) are deleted as ops are applied
//! ([`SqliteJournal::apply_with_meta`]), so every replica keeps the
//! same records and the journal grows with the live state, not with its
//! history.
//!
//! A snapshot is a logical dump of the journal's tables (the service's
//! state and the op records), in a file written and read a row at a time
//! (see [`super::snapshot`]); installing one replaces the tables in one
//! transaction. The current snapshot's meta and file name are kept in table
//! `raft_snapshot_file`.

use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, LogId, OptionalSend, StorageError, StorageIOError, StoredMembership};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::snapshot::{self, SnapshotDir, Tee};

use crate::journal::sqlite::{get_meta, set_meta, SqliteJournal, SqliteMachine};
use crate::journal::Source;
use crate::replication::raft::format::{self, Format, KeepsFormat, Written};
use crate::replication::raft::types::{NodeId, RaftTypes, ReplicaNode, MAX_OPS_PER_ENTRY};

type Entry<M> = openraft::Entry<RaftTypes<M>>;
type Error = StorageError<NodeId>;
type Membership = StoredMembership<NodeId, ReplicaNode>;
type Meta = SnapshotMeta<NodeId, ReplicaNode>;

pub(super) const APPLIED: &str = "raft_applied";
/// The journal meta key of the last membership applied.
pub(super) const MEMBERSHIP: &str = "raft_membership";
/// The origin under which raft's ops are recorded in the journal; their
/// sequence is [`origin_seq`] (the log index, in logs written before ops
/// were grouped).
pub const RAFT_ORIGIN: &str = "raft";

/// The journal's sequence number of the op at `position` of the entry at
/// log `index`: one of its own per op, above every log index (the
/// sequence of entries written before ops were grouped).
pub fn origin_seq(index: u64, position: usize) -> Option<u64> {
    if position >= MAX_OPS_PER_ENTRY {
        return None;
    }
    index
        .checked_mul(MAX_OPS_PER_ENTRY as u64)?
        .checked_add(position as u64)
}

fn source(index: u64, position: usize) -> Result<Source, Error> {
    let origin_seq = origin_seq(index, position).ok_or_else(|| {
        sm_error(crate::StoreError::Refused(format!(
            "entry {index} holds more than {MAX_OPS_PER_ENTRY} ops"
        )))
    })?;
    Ok(Source::Peer {
        origin: RAFT_ORIGIN.to_owned(),
        origin_seq,
    })
}

/// Tables that are not part of the replicated state (`raft_snapshot` held
/// snapshots before they were files; it is migrated at open).
const LOCAL_TABLES: [&str; 5] = [
    "raft_log",
    "raft_meta",
    "raft_snapshot",
    "raft_snapshot_file",
    "journal_meta",
];

/// How long op records are kept by default: a day, as payment APIs keep
/// idempotency keys.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// The service's journal as openraft's state machine. Cheap to clone.
pub struct JournalStateMachine<M: SqliteMachine> {
    journal: Arc<SqliteJournal<M>>,
    /// How long op records are kept, by the leader's stamps.
    retention: Duration,
    /// Where the snapshot files are.
    files: SnapshotDir,
    /// The file a snapshot is being received into, if one is.
    receiving: Option<PathBuf>,
    /// The format its service writes, as far as it applied.
    written: Arc<Written>,
}

impl<M: SqliteMachine> Clone for JournalStateMachine<M> {
    /// A clone for a snapshot builder (it receives nothing).
    fn clone(&self) -> Self {
        JournalStateMachine {
            journal: Arc::clone(&self.journal),
            retention: self.retention,
            files: self.files.clone(),
            receiving: None,
            written: Arc::clone(&self.written),
        }
    }
}

fn sm_error(err: impl std::error::Error + 'static) -> Error {
    StorageIOError::write_state_machine(&err).into()
}

fn read_error(err: impl std::error::Error + 'static) -> Error {
    StorageIOError::read_state_machine(&err).into()
}

fn snapshot_error(err: impl std::error::Error + 'static) -> Error {
    StorageIOError::read_snapshot(None, &err).into()
}

fn write_snapshot_error(err: impl std::error::Error + 'static) -> Error {
    StorageIOError::write_snapshot(None, &err).into()
}

fn stored(err: impl std::error::Error + Send + Sync + 'static) -> crate::StoreError {
    crate::StoreError::Storage(Box::new(err))
}

/// A snapshot as the `raft_snapshot` table held it before snapshots were
/// files (read once, to migrate it).
#[derive(Debug, Deserialize)]
struct LegacyDump {
    tables: Vec<LegacyTable>,
}

#[derive(Debug, Deserialize)]
struct LegacyTable {
    name: String,
    columns: Vec<String>,
    rows: Vec<Vec<serde_json::Value>>,
}

pub(super) fn replicated_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(names
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|n| !LOCAL_TABLES.contains(&n.as_str()))
        .collect())
}

fn json<T: Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(sm_error)
}

pub(super) fn applied_in(conn: &Connection) -> Result<(Option<LogId<NodeId>>, Membership), Error> {
    let applied = get_meta(conn, APPLIED)
        .map_err(read_error)?
        .map(|v| serde_json::from_str::<Option<LogId<NodeId>>>(&v))
        .transpose()
        .map_err(read_error)?
        .flatten();
    let membership = get_meta(conn, MEMBERSHIP)
        .map_err(read_error)?
        .map(|v| serde_json::from_str::<Membership>(&v))
        .transpose()
        .map_err(read_error)?
        .unwrap_or_default();
    Ok((applied, membership))
}

/// The format the service writes, as this replica last applied it
/// ([`format::OLDEST`] if it never applied a raise).
fn applied_format(conn: &Connection) -> Result<Format, crate::StoreError> {
    match get_meta(conn, format::META_KEY)? {
        None => Ok(format::OLDEST),
        Some(text) => text.parse().map_err(|_| {
            crate::StoreError::Refused(format!("the journal holds a bad entry format: {text:?}"))
        }),
    }
}

/// The current snapshot: its meta, and its file's name.
fn current_snapshot(conn: &Connection) -> Result<Option<(Meta, String)>, crate::StoreError> {
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT meta, file FROM raft_snapshot_file WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(meta, file)| Ok((serde_json::from_str(&meta)?, file)))
        .transpose()
}

/// Makes `file` the current snapshot; answers the file it replaces.
fn set_current(
    tx: &Connection,
    meta: &Meta,
    file: &str,
) -> Result<Option<String>, crate::StoreError> {
    let previous = current_snapshot(tx)?.map(|(_, file)| file);
    tx.execute(
        "INSERT INTO raft_snapshot_file (id, meta, file) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET meta = excluded.meta, file = excluded.file",
        params![serde_json::to_string(meta)?, file],
    )?;
    Ok(previous.filter(|p| p != file))
}

/// Moves a snapshot kept in the `raft_snapshot` table (before snapshots
/// were files) to a file, and drops the table.
fn migrate_legacy(tx: &Connection, files: &SnapshotDir) -> Result<(), crate::StoreError> {
    let exists: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'raft_snapshot'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(());
    }
    let row: Option<(String, Vec<u8>)> = tx
        .query_row(
            "SELECT meta, data FROM raft_snapshot WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((meta, data)) = row {
        let meta: Meta = serde_json::from_str(&meta)?;
        let dump: LegacyDump = serde_json::from_slice(&data)?;
        let name = kept_name(files, &meta);
        snapshot::write_file(&files.path(&name), |out| {
            for table in &dump.tables {
                let header = serde_json::json!({"table": table.name, "columns": table.columns});
                serde_json::to_writer(&mut *out, &header).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                for row in &table.rows {
                    serde_json::to_writer(&mut *out, row).map_err(std::io::Error::from)?;
                    out.write_all(b"\n")?;
                }
            }
            Ok(())
        })
        .map_err(stored)?;
        files.sync().map_err(stored)?;
        set_current(tx, &meta, &name)?;
    }
    tx.execute_batch("DROP TABLE raft_snapshot")?;
    Ok(())
}

/// The name a snapshot's file is kept under (never a peer's text: a
/// snapshot id comes from the leader).
fn kept_name(files: &SnapshotDir, meta: &Meta) -> String {
    files.fresh(&format!("at-{}", meta.last_log_id.map_or(0, |l| l.index)))
}

impl<M: SqliteMachine> JournalStateMachine<M> {
    /// The state machine over `journal` (creating its snapshot table, and
    /// the snapshot directory beside the database; files that no snapshot
    /// names are deleted).
    pub async fn new(journal: Arc<SqliteJournal<M>>) -> Result<Self, crate::StoreError> {
        let db = journal.path().to_path_buf();
        let files = tokio::task::spawn_blocking(move || SnapshotDir::beside(&db))
            .await?
            .map_err(|source| crate::StoreError::Open {
                path: journal.path().display().to_string(),
                source: Box::new(source),
            })?;
        let dir = files.clone();
        let written = journal
            .write(move |tx| {
                tx.execute_batch(
                    "CREATE TABLE IF NOT EXISTS raft_snapshot_file (
                        id   INTEGER PRIMARY KEY CHECK (id = 1),
                        meta TEXT NOT NULL,
                        file TEXT NOT NULL
                    );",
                )?;
                migrate_legacy(tx, &dir)?;
                let current = current_snapshot(tx)?.map(|(_, file)| file);
                dir.clean(current.as_deref()).map_err(stored)?;
                applied_format(tx)
            })
            .await?;
        Ok(JournalStateMachine {
            journal,
            retention: DEFAULT_RETENTION,
            files,
            receiving: None,
            written: Written::at(written),
        })
    }

    /// The current snapshot, its file opened.
    async fn current(&self) -> Result<Option<Snapshot<RaftTypes<M>>>, Error> {
        let files = self.files.clone();
        let current = self
            .journal
            .read(move |conn| files.open_current(|| current_snapshot(conn)))
            .await
            .map_err(snapshot_error)?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }

    /// Deletes a snapshot file that was replaced (a failure only leaves a
    /// file behind, deleted at the next open).
    async fn remove(&self, replaced: Option<String>) {
        let Some(name) = replaced else {
            return;
        };
        let files = self.files.clone();
        let removed = tokio::task::spawn_blocking(move || files.remove(&name)).await;
        if let Ok(Err(err)) = removed {
            tracing::warn!(%err, "cannot delete a replaced snapshot file");
        }
    }

    /// Keeps op records for `window` instead of [`DEFAULT_RETENTION`]. Every
    /// replica of a service must use the same window (the topology's
    /// `op_retention_s`), or their records of old ops would differ.
    pub fn retaining(mut self, window: Duration) -> Self {
        self.retention = window;
        self
    }
}

impl<M: SqliteMachine> KeepsFormat for JournalStateMachine<M> {
    fn written(&self) -> Arc<Written> {
        Arc::clone(&self.written)
    }
}

impl<M: SqliteMachine> RaftStateMachine<RaftTypes<M>> for JournalStateMachine<M> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), Error> {
        self.journal
            .read(|conn| applied_in(conn).map_err(|e| crate::StoreError::Storage(Box::new(e))))
            .await
            .map_err(read_error)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<M::Outcome>>, Error>
    where
        I: IntoIterator<Item = Entry<M>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ops = Vec::new();
        // How many of `ops` each entry has.
        let mut sizes = Vec::new();
        let mut last = None;
        let mut membership = None;
        let mut raised = None;
        for entry in entries {
            last = Some(entry.log_id);
            let index = entry.log_id.index;
            match entry.payload {
                EntryPayload::Blank => sizes.push(0),
                EntryPayload::Normal(proposal) => {
                    raised = proposal.raise.max(raised);
                    sizes.push(proposal.ops.len());
                    let count = proposal.ops.len();
                    if count == 0 {
                        // An idle leader's tick: its stamp alone.
                        ops.push((source(index, 0)?, None, proposal.at_ms));
                    }
                    for (position, op) in proposal.ops.into_iter().enumerate() {
                        // The stamp once, after the entry's last op: one
                        // pass over the records past the window per entry.
                        let at_ms = (position + 1 == count).then_some(proposal.at_ms).flatten();
                        ops.push((source(index, position)?, Some(op), at_ms));
                    }
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    sizes.push(0);
                }
            }
        }
        if sizes.is_empty() {
            return Ok(Vec::new());
        }
        let mut meta = vec![(APPLIED.to_owned(), json(&last)?)];
        if let Some(membership) = membership {
            meta.push((MEMBERSHIP.to_owned(), json(&membership)?));
        }
        // A raise is kept with the entry that makes it; never lowered.
        let raised = raised.filter(|format| *format > self.written.get());
        if let Some(format) = raised {
            meta.push((format::META_KEY.to_owned(), format.to_string()));
        }
        let outcomes = self
            .journal
            .apply_with_meta(ops, meta, Some(self.retention))
            .await
            .map_err(sm_error)?;
        if let Some(format) = raised {
            tracing::info!(format, "the service writes a newer entry format");
            self.written.raise(format);
        }
        // Each entry's outcomes, in order.
        let mut outcomes = outcomes.into_iter().flatten();
        Ok(sizes
            .into_iter()
            .map(|size| outcomes.by_ref().take(size).collect())
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, Error> {
        if let Some(unfinished) = self.receiving.take() {
            let _ = tokio::fs::remove_file(unfinished).await;
        }
        let path = self.files.path(&self.files.fresh("receiving"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(write_snapshot_error)?;
        self.receiving = Some(path);
        Ok(Box::new(file))
    }

    /// Restores the tables from the snapshot, reading it a line at a time,
    /// and keeps a copy of it as the current snapshot, in one pass.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ReplicaNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), Error> {
        let mut received = *snapshot;
        received.flush().await.map_err(snapshot_error)?;
        received.rewind().await.map_err(snapshot_error)?;
        let received = received.into_std().await;
        let meta = meta.clone();
        let name = kept_name(&self.files, &meta);
        let kept = self.files.path(&name);
        let copy_to = kept.clone();
        let files = self.files.clone();
        let installed = self
            .journal
            .write(move |tx| {
                let copy = BufWriter::new(std::fs::File::create(&copy_to).map_err(stored)?);
                let mut tee = Tee {
                    from: received,
                    copy,
                };
                let tables = replicated_tables(tx)?;
                snapshot::restore(tx, &tables, BufReader::new(&mut tee)).map_err(stored)?;
                let copy = tee.copy.into_inner().map_err(|e| stored(e.into_error()))?;
                copy.sync_all().map_err(stored)?;
                files.sync().map_err(stored)?;
                set_meta(
                    tx,
                    &[
                        (APPLIED.to_owned(), json(&meta.last_log_id).map_err(stored)?),
                        (
                            MEMBERSHIP.to_owned(),
                            json(&meta.last_membership).map_err(stored)?,
                        ),
                    ],
                )?;
                set_current(tx, &meta, &name)
            })
            .await;
        if let Some(receiving) = self.receiving.take() {
            let _ = tokio::fs::remove_file(receiving).await;
        }
        match installed {
            Ok(replaced) => {
                self.remove(replaced).await;
                Ok(())
            }
            Err(err) => {
                let _ = tokio::fs::remove_file(kept).await;
                Err(sm_error(err))
            }
        }
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<RaftTypes<M>>>, Error> {
        self.current().await
    }
}

impl<M: SqliteMachine> RaftSnapshotBuilder<RaftTypes<M>> for JournalStateMachine<M> {
    /// Dumps the tables to a file, a row at a time, in one read
    /// transaction (the data and its applied position agree), and makes it
    /// the current snapshot unless a newer one was installed meanwhile;
    /// answers the current snapshot.
    async fn build_snapshot(&mut self) -> Result<Snapshot<RaftTypes<M>>, Error> {
        let building = self.files.path(&self.files.fresh("building"));
        let path = building.clone();
        let built = self
            .journal
            .read(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let (applied, membership) = applied_in(&tx).map_err(stored)?;
                let tables = replicated_tables(&tx)?;
                snapshot::write_file(&path, |out| snapshot::dump(&tx, &tables, out))
                    .map_err(stored)?;
                tx.commit()?;
                Ok((applied, membership))
            })
            .await;
        let (applied, membership) = match built {
            Ok(built) => built,
            Err(err) => {
                let _ = tokio::fs::remove_file(&building).await;
                return Err(write_snapshot_error(err));
            }
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id: format!(
                "{}-{}",
                applied.map_or(0, |l| l.index),
                uuid::Uuid::new_v4().simple()
            ),
        };
        let name = kept_name(&self.files, &meta);
        let files = self.files.clone();
        // Keep the newest: a snapshot installed meanwhile may be newer.
        let replaced = self
            .journal
            .write_beside(move |tx| match current_snapshot(tx)? {
                Some((current, _)) if current.last_log_id > meta.last_log_id => {
                    std::fs::remove_file(&building).map_err(stored)?;
                    Ok(None)
                }
                _ => {
                    std::fs::rename(&building, files.path(&name)).map_err(stored)?;
                    files.sync().map_err(stored)?;
                    set_current(tx, &meta, &name)
                }
            })
            .await
            .map_err(write_snapshot_error)?;
        self.remove(replaced).await;
        // This one, or a newer one installed since.
        self.current()
            .await?
            .ok_or_else(|| snapshot_error(std::io::Error::other("the snapshot built is gone")))
    }
}
