//! Backups of a raft service, and a new cluster founded from one
//! (docs/operations.md, "Backup and restore").
//!
//! A backup is a replica's replicated tables read in one read transaction
//! (so the rows and the log position they reflect agree), as a header
//! line ([`BackupHeader`]: the service, the last log id applied, the
//! membership), the tables in the snapshot format (`snapshot.rs`), a row
//! at a time (it is never held whole in memory), and a last line that
//! says it is whole ([`BackupEnd`]): a backup cut short is never
//! restored. Taken after a read index (the server's `GET /backup`), it
//! holds every write acknowledged before the backup began.
//!
//! [`restore`] writes a backup into a replica's empty file as if the
//! replica had installed it as a snapshot and purged its log up to it,
//! and makes the replica the only voter of a new cluster (a membership
//! entry after the backup's last entry, as [`super::force_new_cluster`]
//! does): started, it elects itself and serves what the backup held, and
//! replicas started on empty data directories join it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use openraft::{EntryPayload, LogId, Membership, StoredMembership, Vote};
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::log::{put, IDENTITY, LAST_PURGED};
use super::snapshot::{self, SnapshotError};
use super::state_machine::{applied_in, replicated_tables, APPLIED, MEMBERSHIP};
use super::SqliteLog;
use crate::journal::sqlite::{set_meta, SqliteJournal, SqliteMachine};
use crate::replication::raft::identity::Identity;
use crate::replication::raft::types::{NodeId, RaftTypes, ReplicaNode};

/// The version of the backup format this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

/// The longest header line read (the header names the membership).
const MAX_HEADER: u64 = 1024 * 1024;

/// The raft id of the replica a backup is restored into: a founding
/// member's (see `identity.rs`).
const RESTORED_ID: NodeId = 1;

/// The last line of a backup: written once every row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupEnd {
    /// The header's `last_log_id.index` again.
    pub backup_end: u64,
}

/// The first line of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    /// [`BACKUP_FORMAT`].
    pub format: u32,
    /// The service: `catalog` or `order`.
    pub service: String,
    /// The last log entry the tables reflect.
    pub last_log_id: LogId<NodeId>,
    /// The membership the tables were applied under.
    pub membership: StoredMembership<NodeId, ReplicaNode>,
    /// When it was taken, in seconds since the Unix epoch.
    pub taken_at_s: u64,
}

/// What went wrong with a backup, or a restore from one.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file has no raft state: nothing to back up.
    #[error("the store holds no applied raft state")]
    NothingApplied,
    /// The input is not a backup this build reads.
    #[error("not a Pygmy backup: {0}")]
    NotABackup(String),
    /// The backup does not end with its last line: it was cut short.
    #[error("the backup is cut short (no end line): take it again")]
    CutShort,
    /// A backup of another service.
    #[error("a backup of the {found} service, not of {expected}")]
    WrongService {
        /// The service restored.
        expected: String,
        /// The backup's.
        found: String,
    },
    /// The replica's data directory holds a store already.
    #[error(
        "{0} exists: a restore founds a new cluster on empty data directories \
         (move the old one away first)"
    )]
    Exists(PathBuf),
    /// The database failed.
    #[error("the store failed")]
    Database(#[from] rusqlite::Error),
    /// The rows could not be written or read.
    #[error("the backup's rows")]
    Rows(#[from] SnapshotError),
    /// The journal could not be opened, or its meta written.
    #[error("the journal failed")]
    Journal(#[from] crate::StoreError),
    /// A raft record could not be written or read.
    #[error("a raft record")]
    Raft(#[source] Box<openraft::StorageError<NodeId>>),
    /// A record could not be encoded or decoded.
    #[error("an undecodable record")]
    Json(#[from] serde_json::Error),
    /// Reading the backup, or writing it out.
    #[error("the backup's file")]
    Io(#[from] std::io::Error),
}

impl From<openraft::StorageError<NodeId>> for BackupError {
    fn from(err: openraft::StorageError<NodeId>) -> Self {
        BackupError::Raft(Box::new(err))
    }
}

/// Writes a backup of the replica file at `db` (service `service`) to
/// `out`, in one read transaction of a connection of its own (writes go
/// on meanwhile). Answers its header. Blocking.
pub fn write(db: &Path, service: &str, out: &mut dyn Write) -> Result<BackupHeader, BackupError> {
    let mut conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let (applied, membership) = applied_in(&tx)?;
    let header = BackupHeader {
        format: BACKUP_FORMAT,
        service: service.to_owned(),
        last_log_id: applied.ok_or(BackupError::NothingApplied)?,
        membership,
        taken_at_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    };
    serde_json::to_writer(&mut *out, &header)?;
    out.write_all(b"\n")?;
    snapshot::dump(&tx, &replicated_tables(&tx)?, out)?;
    serde_json::to_writer(
        &mut *out,
        &BackupEnd {
            backup_end: header.last_log_id.index,
        },
    )?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(header)
}

/// Checks that the backup file at `path` is whole (its last line is its
/// [`BackupEnd`]), and answers its header and a reader of its rows (the
/// lines between).
pub fn open(path: &Path) -> Result<(BackupHeader, impl BufRead), BackupError> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let tail_len = len.min(256);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = Vec::new();
    (&mut file).take(tail_len).read_to_end(&mut tail)?;
    let tail = String::from_utf8_lossy(&tail);
    let last = tail
        .strip_suffix('\n')
        .and_then(|t| t.rsplit('\n').next())
        .ok_or(BackupError::CutShort)?;
    let end: BackupEnd = serde_json::from_str(last).map_err(|_| BackupError::CutShort)?;
    let rows_end = len - (last.len() as u64 + 1);
    file.seek(SeekFrom::Start(0))?;
    let mut input = BufReader::new(file.take(rows_end));
    let header = read_header(&mut input)?;
    if end.backup_end != header.last_log_id.index {
        return Err(BackupError::CutShort);
    }
    Ok((header, input))
}

/// Reads a backup's header line from `input`.
pub fn read_header(input: &mut impl BufRead) -> Result<BackupHeader, BackupError> {
    let mut line = String::new();
    input.take(MAX_HEADER).read_line(&mut line)?;
    let header: BackupHeader = serde_json::from_str(line.trim_end())
        .map_err(|err| BackupError::NotABackup(format!("its first line: {err}")))?;
    if header.format != BACKUP_FORMAT {
        return Err(BackupError::NotABackup(format!(
            "format {}, and this build reads {BACKUP_FORMAT}",
            header.format
        )));
    }
    Ok(header)
}

/// What [`restore`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup's header.
    pub header: BackupHeader,
    /// The new cluster's identity of the replica.
    pub identity: Identity,
}

/// Founds a new cluster of service `service` from the backup file at
/// `backup`, in the replica file at `db`, which must not exist: the
/// replica `me` becomes its only voter (see the module's docs). What of
/// the service's state must not carry over is dropped
/// ([`SqliteMachine::restored`]: the catalog's reconciler starts again,
/// so that a sale whose order an older backup of the order service lacks
/// gets it). Blocking.
pub fn restore<M: SqliteMachine>(
    db: &Path,
    service: &str,
    me: ReplicaNode,
    backup: &Path,
) -> Result<Restored, BackupError> {
    let (header, input) = open(backup)?;
    if header.service != service {
        return Err(BackupError::WrongService {
            expected: service.to_owned(),
            found: header.service,
        });
    }
    if db.exists() {
        return Err(BackupError::Exists(db.to_path_buf()));
    }
    if let Some(dir) = db.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // The service's tables, then raft's, as a first start makes them.
    drop(SqliteJournal::<M>::open(db)?);
    drop(SqliteLog::<M>::open(db)?);

    let mut conn = Connection::open(db)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    snapshot::restore(&tx, &replicated_tables(&tx)?, input)?;
    M::restored(&tx)?;
    let last = header.last_log_id;
    set_meta(
        &tx,
        &[
            (APPLIED.to_owned(), serde_json::to_string(&Some(last))?),
            (
                MEMBERSHIP.to_owned(),
                serde_json::to_string(&header.membership)?,
            ),
        ],
    )?;
    put(&tx, LAST_PURGED, &last)?;
    // Voted for the leader of the backup's last entry in its term: what a
    // follower that applied it holds; the replica's first election is in
    // the next term.
    put(
        &tx,
        "vote",
        &Vote::new(last.leader_id.term, last.leader_id.node_id),
    )?;
    let alone = Membership::new(
        vec![BTreeSet::from([RESTORED_ID])],
        BTreeMap::from([(RESTORED_ID, me)]),
    );
    let entry: openraft::Entry<RaftTypes<M>> = openraft::Entry {
        log_id: LogId::new(last.leader_id, last.index + 1),
        payload: EntryPayload::Membership(alone),
    };
    tx.execute(
        "INSERT INTO raft_log (idx, entry) VALUES (?1, ?2)",
        params![
            i64::try_from(last.index + 1).unwrap_or(i64::MAX),
            serde_json::to_string(&entry)?
        ],
    )?;
    let identity = Identity {
        cluster: uuid::Uuid::new_v4().simple().to_string(),
        id: RESTORED_ID,
    };
    put(&tx, IDENTITY, &identity)?;
    tx.commit()?;
    Ok(Restored { header, identity })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogMachine, CatalogStore};
    use crate::types::default_books;

    /// A catalog replica's file, seeded, as raft would have applied it up
    /// to index 41 of term 3 under leader 2.
    async fn applied_catalog(path: &Path) -> LogId<NodeId> {
        let journal = SqliteJournal::<CatalogMachine>::open(path).expect("open");
        journal.seed(default_books()).await.expect("seed");
        let last = LogId::new(openraft::CommittedLeaderId::new(3, 2), 41);
        let membership: StoredMembership<NodeId, ReplicaNode> = StoredMembership::default();
        journal
            .write(move |tx| {
                set_meta(
                    tx,
                    &[
                        (
                            APPLIED.to_owned(),
                            serde_json::to_string(&Some(last)).unwrap_or_default(),
                        ),
                        (
                            MEMBERSHIP.to_owned(),
                            serde_json::to_string(&membership).unwrap_or_default(),
                        ),
                    ],
                )
            })
            .await
            .expect("meta");
        last
    }

    /// A backup restored into an empty file holds the same books, under a
    /// membership of the restored replica alone; a backup cut short, of
    /// the wrong service, or into a file that exists, is refused.
    #[tokio::test]
    async fn a_backup_restores_whole_and_a_cut_one_never() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("catalog.db");
        let last = applied_catalog(&source).await;
        let backup = dir.path().join("catalog.backup");
        let mut out = std::fs::File::create(&backup).expect("create");
        let header = write(&source, "catalog", &mut out).expect("backup");
        drop(out);
        assert_eq!(header.last_log_id, last);

        let text = std::fs::read(&backup).expect("read");
        for cut in [text.len() - 1, text.len() / 2, 10] {
            let short = dir.path().join(format!("short-{cut}"));
            std::fs::write(&short, &text[..cut]).expect("write");
            assert!(
                matches!(
                    open(&short),
                    Err(BackupError::CutShort | BackupError::NotABackup(_))
                ),
                "a backup cut at {cut} of {} was taken",
                text.len()
            );
        }
        let me = ReplicaNode {
            name: "catalog-a".to_owned(),
            url: Some("http://127.0.0.1:9".to_owned()),
        };
        let target = dir.path().join("restored").join("catalog.db");
        assert!(matches!(
            restore::<CatalogMachine>(&target, "order", me.clone(), &backup),
            Err(BackupError::WrongService { .. })
        ));
        let restored =
            restore::<CatalogMachine>(&target, "catalog", me.clone(), &backup).expect("restore");
        assert_eq!(restored.header, header);
        assert!(matches!(
            restore::<CatalogMachine>(&target, "catalog", me, &backup),
            Err(BackupError::Exists(_))
        ));
        let journal = SqliteJournal::<CatalogMachine>::open(&target).expect("open");
        assert_eq!(
            journal.books(None).await.expect("books"),
            default_books(),
            "the books restored"
        );
        let conn = Connection::open(&target).expect("open");
        let (applied, _) = applied_in(&conn).expect("applied");
        assert_eq!(applied, Some(last));
        let entry: String = conn
            .query_row("SELECT entry FROM raft_log WHERE idx = 42", [], |r| {
                r.get(0)
            })
            .expect("the membership entry after the backup's last");
        let entry: openraft::Entry<RaftTypes<CatalogMachine>> =
            serde_json::from_str(&entry).expect("an entry");
        match entry.payload {
            EntryPayload::Membership(membership) => {
                assert_eq!(
                    membership.voter_ids().collect::<Vec<_>>(),
                    vec![RESTORED_ID]
                );
            }
            other => panic!("not a membership: {other:?}"),
        }
    }
}
