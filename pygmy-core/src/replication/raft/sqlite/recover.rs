//! Recovery of a service that lost its majority for good (two disks of
//! three): the replica left becomes the only voter of a new cluster, with
//! everything it holds, as etcd's `--force-new-cluster` does.
//!
//! [`force_new_cluster`] works on the stopped replica's file, in one
//! transaction: it appends to the log a membership entry that makes the
//! replica the only voter (after its last entry, under that entry's
//! leader), and gives the replica a new cluster id (its raft id stays).
//! When the replica starts, openraft takes the newest membership in the
//! log as the effective one: the replica elects itself and commits the
//! whole log it holds, entries it had not seen committed included (they
//! were never acknowledged, or were by a majority this replica was part
//! of). Empty replicas that ask it then join the new cluster as learners
//! (as after a lost disk).
//!
//! The new cluster id keeps the old members out: a replica whose volume
//! of the old cluster comes back is refused by the new one (every raft
//! call names its cluster), and must be emptied to rejoin. Forcing is for
//! a majority lost for good: two old members that come back together
//! could elect a leader of the old cluster of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::{EntryPayload, LogId, Membership, StoredMembership};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::log::{get, put, IDENTITY, LAST_PURGED};
use super::state_machine::MEMBERSHIP;
use crate::journal::sqlite::get_meta;
use crate::journal::Machine;
use crate::replication::raft::identity::Identity;
use crate::replication::raft::types::{NodeId, RaftTypes, ReplicaNode};

type Entry<M> = openraft::Entry<RaftTypes<M>>;

/// Why a replica's file cannot be made a cluster of its own.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// No file at the path: the replica's volume is not there.
    #[error("no store at {0}")]
    NoStore(PathBuf),
    /// The replica never belonged to a cluster.
    #[error("the store holds no raft identity: it never belonged to a cluster")]
    NoIdentity,
    /// The replica holds no log: it has nothing to recover from.
    #[error("the store holds no raft log")]
    NoLog,
    /// The replica was not a voter: it may lack acknowledged writes.
    #[error(
        "raft id {0} is not a voter of its cluster's last membership: it may lack \
         acknowledged writes"
    )]
    NotAVoter(NodeId),
    /// The file could not be read or written.
    #[error("the store failed")]
    Database(#[from] rusqlite::Error),
    /// A record in the file could not be decoded.
    #[error("an undecodable raft record")]
    Decode(#[from] serde_json::Error),
    /// The raft tables' own helpers failed.
    #[error("the raft tables failed")]
    Storage(#[source] Box<openraft::StorageError<NodeId>>),
    /// The journal's meta could not be read.
    #[error("the journal failed")]
    Journal(#[from] crate::StoreError),
}

impl From<openraft::StorageError<NodeId>> for RecoverError {
    fn from(err: openraft::StorageError<NodeId>) -> Self {
        RecoverError::Storage(Box::new(err))
    }
}

/// What [`force_new_cluster`] made of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forced {
    /// Its identity now: a new cluster id, its raft id.
    pub identity: Identity,
    /// The log index of the membership entry that makes it the only voter.
    pub index: u64,
    /// The members the old membership had beside it, by name.
    pub dropped: Vec<String>,
}

/// Makes the stopped replica whose SQLite file is at `path` (service `M`)
/// the only voter of a new cluster (see the module's docs). Blocking.
pub fn force_new_cluster<M: Machine>(path: &Path) -> Result<Forced, RecoverError> {
    if !path.is_file() {
        return Err(RecoverError::NoStore(path.to_path_buf()));
    }
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mine: Identity = get(&tx, IDENTITY)?.ok_or(RecoverError::NoIdentity)?;
    let last = last_log_id::<M>(&tx)?.ok_or(RecoverError::NoLog)?;
    let membership = last_membership::<M>(&tx)?;
    let membership = membership.membership();
    if !membership.voter_ids().any(|id| id == mine.id) {
        return Err(RecoverError::NotAVoter(mine.id));
    }
    let me = membership
        .get_node(&mine.id)
        .cloned()
        .ok_or(RecoverError::NotAVoter(mine.id))?;
    let dropped = membership
        .nodes()
        .filter(|(id, _)| **id != mine.id)
        .map(|(_, node): (&NodeId, &ReplicaNode)| node.name.clone())
        .collect();
    let alone = Membership::new(
        vec![BTreeSet::from([mine.id])],
        BTreeMap::from([(mine.id, me)]),
    );
    let index = last.index + 1;
    let entry: Entry<M> = openraft::Entry {
        log_id: LogId::new(last.leader_id, index),
        payload: EntryPayload::Membership(alone),
    };
    tx.execute(
        "INSERT INTO raft_log (idx, entry) VALUES (?1, ?2)",
        params![
            i64::try_from(index).unwrap_or(i64::MAX),
            serde_json::to_string(&entry)?
        ],
    )?;
    let identity = Identity {
        cluster: uuid::Uuid::new_v4().simple().to_string(),
        id: mine.id,
    };
    put(&tx, IDENTITY, &identity)?;
    tx.commit()?;
    Ok(Forced {
        identity,
        index,
        dropped,
    })
}

/// The id of the last entry of the log, or of the last one purged.
fn last_log_id<M: Machine>(conn: &Connection) -> Result<Option<LogId<NodeId>>, RecoverError> {
    let last: Option<String> = conn
        .query_row(
            "SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match last {
        Some(text) => Ok(Some(serde_json::from_str::<Entry<M>>(&text)?.log_id)),
        None => Ok(get(conn, LAST_PURGED)?),
    }
}

/// The newest membership: the last one in the log, or the one the state
/// machine applied (the log before it is purged).
fn last_membership<M: Machine>(
    conn: &Connection,
) -> Result<StoredMembership<NodeId, ReplicaNode>, RecoverError> {
    let mut newest_first = conn.prepare("SELECT entry FROM raft_log ORDER BY idx DESC")?;
    let mut rows = newest_first.query([])?;
    while let Some(row) = rows.next()? {
        let text: String = row.get(0)?;
        let entry: Entry<M> = serde_json::from_str(&text)?;
        if let EntryPayload::Membership(membership) = entry.payload {
            return Ok(StoredMembership::new(Some(entry.log_id), membership));
        }
    }
    match get_meta(conn, MEMBERSHIP)? {
        Some(text) => Ok(serde_json::from_str(&text)?),
        None => Ok(StoredMembership::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogMachine;
    use crate::replication::raft::sqlite::SqliteLog;

    /// A file that never belonged to a cluster, or none at all, is refused
    /// and left as it was.
    #[test]
    fn a_store_without_a_cluster_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("catalog.db");
        assert!(matches!(
            force_new_cluster::<CatalogMachine>(&path),
            Err(RecoverError::NoStore(_))
        ));
        assert!(!path.exists(), "a store was made");
        SqliteLog::<CatalogMachine>::open(&path).expect("open");
        assert!(matches!(
            force_new_cluster::<CatalogMachine>(&path),
            Err(RecoverError::NoIdentity)
        ));
    }
}
