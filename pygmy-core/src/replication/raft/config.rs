//! How a raft replica behaves: its timings and snapshot policy.

use std::time::Duration;

use openraft::{Config, SnapshotPolicy};

use crate::error::ReplicationError;

/// The size of a snapshot chunk, in bytes.
pub const SNAPSHOT_CHUNK: u64 = 1024 * 1024;

/// The most entries one append carries. With entries of up to
/// `batch::MAX_OPS` ops, the largest append stays well under
/// [`crate::replication::MAX_CALL_BYTES`] (tested in `batch.rs`); openraft's
/// default, 300, would not.
pub const MAX_APPEND_ENTRIES: u64 = 64;

/// Longest wait for a peer's answer while a replica founds, joins, or is
/// added.
pub(super) const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// A learner this many entries behind the leader's log, or fewer, is made
/// a voter (it catches the rest up as a voter), and a voter this close to
/// the leader's read index serves.
pub(super) const PROMOTE_WITHIN: u64 = 64;

/// How a raft replica behaves.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This replica's name.
    pub node: String,
    /// Every replica of the service in the topology, this one included:
    /// the founding replica `i` has raft id `i + 1`.
    pub replicas: Vec<String>,
    /// The leader's heartbeat (also the time limit of one append).
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range
    /// starts an election.
    pub election: (Duration, Duration),
    /// Longest wait for a write (through elections and forwarding).
    pub write_timeout: Duration,
    /// Longest wait for one of openraft's calls to a peer.
    pub rpc_timeout: Duration,
    /// Longest wait for one forward to the leader (a write, or a read
    /// index): a leader that does not answer by then is likely frozen or
    /// cut off, and the forward is tried again once another leads.
    pub forward_timeout: Duration,
    /// A snapshot is built after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (a replica further behind
    /// catches up by snapshot).
    pub keep_logs: u64,
    /// How long a leader goes without writing before it writes an empty,
    /// stamped entry (see `batch.rs`); at most a third of
    /// [`crate::journal::sqlite::MAX_CLOCK_STEP`].
    pub tick: Duration,
    /// The newest entry format this replica reads (and so lets its
    /// service write): this build's newest by default; an older one to
    /// keep a way back to an older build (see [`super::format`](mod@super::format)).
    pub max_format: super::format::Format,
}

impl RaftConfig {
    /// Defaults for `node` among `replicas`.
    pub fn new(node: impl Into<String>, replicas: Vec<String>) -> Self {
        RaftConfig {
            node: node.into(),
            replicas,
            heartbeat: Duration::from_millis(100),
            election: (Duration::from_millis(250), Duration::from_millis(500)),
            write_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(10),
            forward_timeout: Duration::from_secs(1),
            snapshot_every: 5_000,
            keep_logs: 1_000,
            tick: super::batch::TICK,
            max_format: super::format::NEWEST,
        }
    }

    pub(super) fn openraft(&self) -> Result<Config, ReplicationError> {
        if self.tick.is_zero() || self.tick * 3 > crate::journal::sqlite::MAX_CLOCK_STEP {
            return Err(ReplicationError::Config(format!(
                "a tick of {:?}: more than nothing, and at most a third of the journal clock's step ({:?})",
                self.tick,
                crate::journal::sqlite::MAX_CLOCK_STEP
            )));
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Config {
            cluster_name: "pygmy".to_owned(),
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election.0),
            election_timeout_max: millis(self.election.1),
            install_snapshot_timeout: 5_000,
            // Chunks travel raw (see `messages::SnapshotChunk`), far under
            // the server's 8 MiB limit on a replication call.
            snapshot_max_chunk_size: SNAPSHOT_CHUNK,
            max_payload_entries: MAX_APPEND_ENTRIES,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            purge_batch_size: 1,
            ..Config::default()
        }
        .validate()
        .map_err(|e| ReplicationError::Config(e.to_string()))
    }
}
