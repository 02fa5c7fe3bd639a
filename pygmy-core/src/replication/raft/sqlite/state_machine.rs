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
//! state and the op records); installing one replaces them in one
//! transaction. The current snapshot is kept in table `raft_snapshot`.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, LogId, OptionalSend, StorageError, StorageIOError, StoredMembership};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::journal::sqlite::{get_meta, set_meta, SqliteJournal, SqliteMachine};
use crate::journal::Source;
use crate::replication::raft::types::{NodeId, RaftTypes, ReplicaNode};

type Entry<M> = openraft::Entry<RaftTypes<M>>;
type Error = StorageError<NodeId>;
type Membership = StoredMembership<NodeId, ReplicaNode>;
type Meta = SnapshotMeta<NodeId, ReplicaNode>;

const APPLIED: &str = "raft_applied";
const MEMBERSHIP: &str = "raft_membership";
/// The origin under which raft's ops are recorded in the journal; their
/// sequence is the log index.
pub const RAFT_ORIGIN: &str = "raft";

/// Tables that are not part of the replicated state.
const LOCAL_TABLES: [&str; 4] = ["raft_log", "raft_meta", "raft_snapshot", "journal_meta"];

/// How long op records are kept by default: a day, as payment APIs keep
/// idempotency keys.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// The service's journal as openraft's state machine. Cheap to clone.
pub struct JournalStateMachine<M: SqliteMachine> {
    journal: Arc<SqliteJournal<M>>,
    /// How long op records are kept, by the leader's stamps.
    retention: Duration,
}

impl<M: SqliteMachine> Clone for JournalStateMachine<M> {
    fn clone(&self) -> Self {
        JournalStateMachine {
            journal: Arc::clone(&self.journal),
            retention: self.retention,
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

/// One table of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct TableDump {
    name: String,
    columns: Vec<String>,
    rows: Vec<Vec<serde_json::Value>>,
}

/// A snapshot's data.
#[derive(Debug, Serialize, Deserialize)]
struct Dump {
    tables: Vec<TableDump>,
}

fn replicated_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
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

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    // `table` comes from sqlite_master, never from outside.
    let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

fn dump(conn: &Connection) -> Result<Dump, Error> {
    let mut tables = Vec::new();
    for name in replicated_tables(conn).map_err(read_error)? {
        let columns = columns(conn, &name).map_err(read_error)?;
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{name}\""))
            .map_err(read_error)?;
        let mut rows = Vec::new();
        let mut query = stmt.query([]).map_err(read_error)?;
        while let Some(row) = query.next().map_err(read_error)? {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                values.push(match row.get_ref(i).map_err(read_error)? {
                    ValueRef::Null => serde_json::Value::Null,
                    ValueRef::Integer(n) => n.into(),
                    ValueRef::Real(x) => x.into(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                    ValueRef::Blob(_) => {
                        return Err(read_error(std::io::Error::other(
                            "blobs are not replicated",
                        )))
                    }
                });
            }
            rows.push(values);
        }
        tables.push(TableDump {
            name,
            columns,
            rows,
        });
    }
    Ok(Dump { tables })
}

/// Replaces every replicated table with the dump's rows. The dump comes
/// from a peer: its table and column names must be this store's own.
fn restore(tx: &Connection, dump: &Dump) -> Result<(), Error> {
    let known = replicated_tables(tx).map_err(sm_error)?;
    for table in &known {
        tx.execute(&format!("DELETE FROM \"{table}\""), [])
            .map_err(sm_error)?;
    }
    for table in &dump.tables {
        if !known.contains(&table.name) {
            return Err(sm_error(std::io::Error::other(format!(
                "a snapshot has an unknown table {:?}",
                table.name
            ))));
        }
        let own = columns(tx, &table.name).map_err(sm_error)?;
        if table.columns.iter().any(|c| !own.contains(c)) {
            return Err(sm_error(std::io::Error::other(format!(
                "a snapshot has unknown columns in {:?}",
                table.name
            ))));
        }
        let names: Vec<String> = table.columns.iter().map(|c| format!("\"{c}\"")).collect();
        let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO \"{}\" ({}) VALUES ({})",
            table.name,
            names.join(", "),
            marks.join(", ")
        );
        let mut insert = tx.prepare(&sql).map_err(sm_error)?;
        for row in &table.rows {
            let values: Vec<rusqlite::types::Value> = row
                .iter()
                .map(|v| match v {
                    serde_json::Value::Null => rusqlite::types::Value::Null,
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => rusqlite::types::Value::Integer(i),
                        None => rusqlite::types::Value::Real(n.as_f64().unwrap_or(0.0)),
                    },
                    serde_json::Value::String(s) => rusqlite::types::Value::Text(s.clone()),
                    other => rusqlite::types::Value::Text(other.to_string()),
                })
                .collect();
            insert
                .execute(rusqlite::params_from_iter(values))
                .map_err(sm_error)?;
        }
    }
    Ok(())
}

fn json<T: Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(sm_error)
}

fn applied_in(conn: &Connection) -> Result<(Option<LogId<NodeId>>, Membership), Error> {
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

/// The current snapshot as stored: its meta, and its data.
fn stored_snapshot(conn: &Connection) -> Result<Option<(Meta, Vec<u8>)>, Error> {
    let row: Option<(String, Vec<u8>)> = conn
        .query_row(
            "SELECT meta, data FROM raft_snapshot WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(snapshot_error)?;
    row.map(|(meta, data)| Ok((serde_json::from_str(&meta).map_err(snapshot_error)?, data)))
        .transpose()
}

fn store_snapshot(
    tx: &Connection,
    meta: &SnapshotMeta<NodeId, ReplicaNode>,
    data: &[u8],
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO raft_snapshot (id, meta, data) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET meta = excluded.meta, data = excluded.data",
        params![json(meta)?, data],
    )
    .map_err(sm_error)?;
    Ok(())
}

impl<M: SqliteMachine> JournalStateMachine<M> {
    /// The state machine over `journal` (creating its snapshot table).
    pub async fn new(journal: Arc<SqliteJournal<M>>) -> Result<Self, crate::StoreError> {
        journal
            .write(|tx| {
                tx.execute_batch(
                    "CREATE TABLE IF NOT EXISTS raft_snapshot (
                        id   INTEGER PRIMARY KEY CHECK (id = 1),
                        meta TEXT NOT NULL,
                        data BLOB NOT NULL
                    );",
                )?;
                Ok(())
            })
            .await?;
        Ok(JournalStateMachine {
            journal,
            retention: DEFAULT_RETENTION,
        })
    }

    /// Keeps op records for `window` instead of [`DEFAULT_RETENTION`]. Every
    /// replica of a service must use the same window (the topology's
    /// `op_retention_s`), or their records of old ops would differ.
    pub fn retaining(mut self, window: Duration) -> Self {
        self.retention = window;
        self
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

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Option<M::Outcome>>, Error>
    where
        I: IntoIterator<Item = Entry<M>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ops = Vec::new();
        let mut last = None;
        let mut membership = None;
        for entry in entries {
            last = Some(entry.log_id);
            let source = Source::Peer {
                origin: RAFT_ORIGIN.to_owned(),
                origin_seq: entry.log_id.index,
            };
            match entry.payload {
                EntryPayload::Blank => ops.push((source, None, None)),
                EntryPayload::Normal(stamped) => {
                    ops.push((source, Some(stamped.op), stamped.at_ms));
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    ops.push((source, None, None));
                }
            }
        }
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut meta = vec![(APPLIED.to_owned(), json(&last)?)];
        if let Some(membership) = membership {
            meta.push((MEMBERSHIP.to_owned(), json(&membership)?));
        }
        self.journal
            .apply_with_meta(ops, meta, Some(self.retention))
            .await
            .map_err(sm_error)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Error> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ReplicaNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Error> {
        let data = snapshot.into_inner();
        let dump: Dump = serde_json::from_slice(&data).map_err(snapshot_error)?;
        let meta = meta.clone();
        self.journal
            .write(move |tx| {
                let wrap = |e: Error| crate::StoreError::Storage(Box::new(e));
                restore(tx, &dump).map_err(wrap)?;
                set_meta(
                    tx,
                    &[
                        (APPLIED.to_owned(), json(&meta.last_log_id).map_err(wrap)?),
                        (
                            MEMBERSHIP.to_owned(),
                            json(&meta.last_membership).map_err(wrap)?,
                        ),
                    ],
                )?;
                store_snapshot(tx, &meta, &data).map_err(wrap)
            })
            .await
            .map_err(sm_error)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<RaftTypes<M>>>, Error> {
        let stored = self
            .journal
            .read(|conn| stored_snapshot(conn).map_err(|e| crate::StoreError::Storage(Box::new(e))))
            .await
            .map_err(snapshot_error)?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl<M: SqliteMachine> RaftSnapshotBuilder<RaftTypes<M>> for JournalStateMachine<M> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<RaftTypes<M>>, Error> {
        let wrap = |e: Error| crate::StoreError::Storage(Box::new(e));
        // One read transaction: the data and its applied position agree.
        let (applied, membership, data) = self
            .journal
            .read(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let (applied, membership) = applied_in(&tx).map_err(wrap)?;
                let data = serde_json::to_vec(&dump(&tx).map_err(wrap)?)?;
                tx.commit()?;
                Ok((applied, membership, data))
            })
            .await
            .map_err(snapshot_error)?;
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id: format!(
                "{}-{}",
                applied.map_or(0, |l| l.index),
                uuid::Uuid::new_v4().simple()
            ),
        };
        // Keep the newest: a snapshot installed meanwhile may be newer.
        let (stored_meta, stored_data) = {
            let (meta, data) = (meta.clone(), data.clone());
            self.journal
                .write(move |tx| {
                    let current = stored_snapshot(tx).map_err(wrap)?;
                    match current {
                        Some((current, current_data)) if current.last_log_id > meta.last_log_id => {
                            Ok((current, current_data))
                        }
                        _ => {
                            store_snapshot(tx, &meta, &data).map_err(wrap)?;
                            Ok((meta, data))
                        }
                    }
                })
                .await
                .map_err(sm_error)?
        };
        Ok(Snapshot {
            meta: stored_meta,
            snapshot: Box::new(Cursor::new(stored_data)),
        })
    }
}
