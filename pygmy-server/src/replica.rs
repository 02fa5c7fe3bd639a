//! What the handlers of a backend replica (catalog or order) share: the
//! replicator behind them, readiness, fresh reads, and serving the peers'
//! replication calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use pygmy_core::api::internal::{MembersResponse, NewMember};
use pygmy_core::api::routes::MemberRoute;
use pygmy_core::api::Envelope;
use pygmy_core::journal::{Machine, Op};
use pygmy_core::replication::raft::sqlite::backup::{self, BackupError};
use pygmy_core::replication::{KnownMembers, MemberChange, ReplicaStatus, Replicator};

use crate::http::response::streamed;
use crate::http::{json, json_bytes, ApiError, ApiResult, Metrics, NodeInfo, Readiness, Request};

/// The size of a backup's chunks.
const BACKUP_CHUNK: usize = 64 * 1024;

/// Chunks of a backup between its reader and the connection: the reader
/// waits while the client is slow.
const BACKUP_CHUNKS_IN_FLIGHT: usize = 4;

/// A backup's bytes, sent in chunks to the response as they are written
/// (from a blocking thread).
struct Chunks {
    to: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    pending: Vec<u8>,
    /// Told once, when the first chunk goes.
    started: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Chunks {
    fn new(
        to: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
        started: tokio::sync::oneshot::Sender<()>,
    ) -> Self {
        Chunks {
            to,
            pending: Vec::with_capacity(BACKUP_CHUNK),
            started: Some(started),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(BACKUP_CHUNK));
        self.to
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))?;
        if let Some(started) = self.started.take() {
            let _ = started.send(());
        }
        Ok(())
    }

    /// Ends the body cut short.
    fn fail(&mut self, err: &BackupError) {
        let _ = self
            .to
            .blocking_send(Err(std::io::Error::other(err.to_string())));
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= BACKUP_CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// How often a replica measures the bytes of its data dir, for
/// `/metrics`: a scrape reads the last figure, and never walks the
/// directory itself.
const MEASURE_EVERY: Duration = Duration::from_secs(10);

/// One replica of a backend service, as its handler uses it.
pub struct Replica<M: Machine> {
    node: NodeInfo,
    replicator: Arc<dyn Replicator<M>>,
    /// The bytes of its data dir, as last measured.
    store_bytes: Arc<AtomicU64>,
}

impl<M: Machine> Clone for Replica<M> {
    fn clone(&self) -> Self {
        Replica {
            node: self.node.clone(),
            replicator: Arc::clone(&self.replicator),
            store_bytes: Arc::clone(&self.store_bytes),
        }
    }
}

impl<M: Machine> Replica<M> {
    /// Node `node`, replicated by `replicator`.
    pub fn new(node: NodeInfo, replicator: Arc<dyn Replicator<M>>) -> Self {
        Replica {
            node,
            replicator,
            store_bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Measures the bytes of the data dir at once and then every
    /// `MEASURE_EVERY` (10 s), off the async threads, until the task is
    /// dropped (a background task of the node).
    pub fn measure_forever(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (dir, bytes) = (self.node.data_dir.clone(), Arc::clone(&self.store_bytes));
        async move {
            let Some(dir) = dir else {
                return;
            };
            loop {
                let walked = dir.clone();
                if let Ok(measured) = tokio::task::spawn_blocking(move || dir_bytes(&walked)).await
                {
                    bytes.store(measured, Ordering::Relaxed);
                }
                tokio::time::sleep(MEASURE_EVERY).await;
            }
        }
    }

    /// Who the node is.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Whether it serves (not while it catches up).
    pub fn is_ready(&self) -> bool {
        self.replicator.is_ready()
    }

    /// Its readiness, for `GET /ready`: under `raft`, ready once it is a
    /// voter caught up with a leader it knows.
    pub fn readiness(&self) -> Readiness {
        if self.is_ready() {
            Readiness::Ready
        } else {
            Readiness::NotReady {
                state: "catching_up",
                reason: format!(
                    "{} is not yet a replica caught up with its service",
                    self.node.name
                ),
            }
        }
    }

    /// Ok once it serves; 503 while it catches up.
    pub fn ensure_ready(&self) -> Result<(), ApiError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(ApiError::unavailable(format!(
                "{} is catching up with its peers",
                self.node.name
            )))
        }
    }

    /// Leaves replication, as the node stops (see [`Replicator::stop`]).
    pub async fn stop(&self) {
        self.replicator.stop().await;
    }

    /// Ok once it serves and has applied every change acknowledged before:
    /// a read of the store that follows is fresh.
    pub async fn ready_to_read(&self) -> Result<(), ApiError> {
        self.ensure_ready()?;
        self.replicator.linearize().await?;
        Ok(())
    }

    /// `GET /backup` (internal, token already checked): the replica's
    /// state once it has applied every change acknowledged before the call
    /// (a read index), read in one transaction and sent as it is read
    /// (`raft::sqlite::backup`): never whole in memory. A failure before
    /// the first chunk is an error answer; one after it cuts the body
    /// short, and the backup then has no end line, so it is never
    /// restored.
    pub async fn backup(&self, service: &'static str) -> ApiResult {
        let Some(path) = self.node.raft_store.clone() else {
            return Err(ApiError::not_found(
                "backups are of raft services with their store in SQLite",
            ));
        };
        self.ready_to_read().await?;
        let (chunks, body) = tokio::sync::mpsc::channel(BACKUP_CHUNKS_IN_FLIGHT);
        let (started, first) = tokio::sync::oneshot::channel();
        let name = self.node.name.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut out = Chunks::new(chunks, started);
            let written = backup::write(&path, service, &mut out);
            match &written {
                Ok(header) => tracing::info!(index = header.last_log_id.index, "backup sent"),
                Err(err) => {
                    tracing::warn!(node = %name, err = %pygmy_core::error::chain(err), "backup failed");
                    out.fail(err);
                }
            }
            written
        });
        tokio::select! {
            biased;
            Ok(()) = first => Ok(streamed("application/x-ndjson", body)),
            written = written => match written {
                // Whole before its first chunk was sent: the channel holds it.
                Ok(Ok(_)) => Ok(streamed("application/x-ndjson", body)),
                Ok(Err(err)) => Err(ApiError::internal(pygmy_core::error::chain(&err))),
                Err(err) => Err(ApiError::internal(err.to_string())),
            },
        }
    }

    /// Applies `op` through the replicator (the caller checked that the
    /// replica serves).
    pub async fn propose(&self, op: Op<M::Command>) -> Result<M::Outcome, ApiError> {
        Ok(self.replicator.propose(op).await?)
    }

    /// `/members` (internal, token already checked): the membership, or a
    /// change of it.
    pub async fn members_call(&self, route: MemberRoute, req: &Request) -> ApiResult {
        let members = match route {
            MemberRoute::List => self.replicator.members().await?,
            MemberRoute::Add => {
                let NewMember { name, url } = req.json()?;
                let change = MemberChange::Add { name, url };
                self.replicator.change_members(change).await?
            }
            MemberRoute::Remove(name) => {
                let force = match req.param("force") {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => {
                        return Err(ApiError::bad_request(format!(
                            "force must be true or false, not {other:?}"
                        )))
                    }
                };
                let change = MemberChange::Remove { name, force };
                self.replicator.change_members(change).await?
            }
        };
        let answer = MembersResponse {
            members,
            envelope: Envelope::OK,
        };
        Ok(json(StatusCode::OK, &answer))
    }

    /// The members it knows of now (none with `broadcast`).
    pub fn known_members(&self) -> Option<KnownMembers> {
        self.replicator.known_members()
    }

    /// The log index of the membership it knows of now (none with
    /// `broadcast`).
    pub fn members_index(&self) -> Option<u64> {
        self.replicator.members_index()
    }

    /// Its replication state (none with `broadcast`).
    pub fn status(&self) -> Option<ReplicaStatus> {
        self.replicator.status()
    }

    /// Its figures for `/metrics`: raft state, and the bytes its data dir
    /// holds (as last measured, at most `MEASURE_EVERY` (10 s) ago).
    pub async fn write_metrics(&self, out: &mut Metrics) {
        if let Some(status) = self.status() {
            write_raft(&status, out);
        }
        if self.node.data_dir.is_some() {
            out.gauge(
                "pygmy_store_bytes",
                "Bytes in the replica's data dir (database, raft log, snapshots), measured every 10 s.",
                self.store_bytes.load(Ordering::Relaxed),
            );
        }
    }

    /// `POST /replication/<rpc>` (internal, token already checked): a
    /// peer's call to the replicator.
    pub async fn replication_call(&self, rpc: &str, req: &Request) -> ApiResult {
        let answer = self.replicator.handle(rpc, &req.body).await?;
        Ok(json_bytes(StatusCode::OK, answer.into()))
    }
}

/// The raft state of a replica as Prometheus samples.
fn write_raft(status: &ReplicaStatus, out: &mut Metrics) {
    for state in ["leader", "follower", "candidate", "learner", "shutdown"] {
        out.gauge_with(
            "pygmy_raft_state",
            "1 for the replica's raft state, 0 for the others.",
            &[("state", state)],
            u64::from(status.state == state),
        );
    }
    out.gauge("pygmy_raft_term", "The current raft term.", status.term);
    if let Some(leader) = &status.leader {
        out.gauge_with(
            "pygmy_raft_leader",
            "1, labelled with the leader this replica knows.",
            &[("leader", leader)],
            1,
        );
    }
    out.gauge(
        "pygmy_raft_last_log_index",
        "The index of the replica's last log entry.",
        status.last_log,
    );
    if let Some(committed) = status.committed {
        out.gauge(
            "pygmy_raft_committed_index",
            "On the leader: the highest index a majority of voters holds.",
            committed,
        );
    }
    out.gauge(
        "pygmy_raft_applied_index",
        "The index of the last entry the replica applied.",
        status.applied,
    );
    out.gauge(
        "pygmy_raft_snapshot_index",
        "The index the replica's last snapshot covers (0: none).",
        status.snapshot.unwrap_or(0),
    );
    out.gauge(
        "pygmy_raft_purged_index",
        "The index up to which the replica dropped its log behind a snapshot.",
        status.purged.unwrap_or(0),
    );
    out.gauge(
        "pygmy_raft_format_writes",
        "The raft entry format the replica's service writes, as far as it applied.",
        u64::from(status.formats.writes),
    );
    out.gauge(
        "pygmy_raft_format_reads_newest",
        "The newest raft entry format the replica reads.",
        u64::from(status.formats.newest),
    );
    for (follower, lag) in &status.followers {
        out.gauge_with(
            "pygmy_raft_follower_lag_entries",
            "On the leader: entries of its log a member has not acknowledged.",
            &[("follower", follower)],
            *lag,
        );
    }
}

/// The bytes of the files in `dir` and below (0 if it cannot be read).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
