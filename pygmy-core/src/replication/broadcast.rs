//! `broadcast`: the seed's replication (apply locally, then send to every
//! peer), made as good as it can be without consensus.
//!
//! What it adds to the seed:
//! - **One writer at a time, when nothing fails.** Replicas are ranked in
//!   configured order; a replica forwards each op to the first replica
//!   before it that answers, and applies it itself only if none does. So
//!   with all replicas up, every op is applied first at replica 0, and a
//!   sale is the conditional step there: no oversell.
//! - **Ops, not values.** What travels is the op (a command under a unique
//!   id), applied by the journal at most once per replica: a repeat, from a
//!   retry or a resend, changes nothing.
//! - **Nothing is dropped.** Each replica ships its own ops to each peer
//!   from its journal, in order and in batches, from the peer's high-water
//!   mark; a peer that was down gets them when it is back. A proposal waits
//!   (bounded by `ack_timeout`) until every peer that is up has them.
//! - **Catch-up at start, and a hand-over back.** A replica serves only
//!   after it pulled, from every peer it can reach, the ops it missed. Then
//!   it tells the lower-ranked replicas it is back (`resume`): each stops
//!   writing locally and finishes the writes it had begun, the returning
//!   replica pulls those too, and only then takes writes. So a clean restart
//!   never leaves two replicas writing at once.
//! - **Origins are incarnations.** A replica numbers the ops it applies
//!   first as `<node>@<incarnation>`; a replica whose data was lost comes
//!   back as a new origin, never reusing the numbers of its past life.
//! - **No lock across the network**, and a peer that is down costs a
//!   refused connection, never a hang.
//!
//! What it cannot promise (`tests/broadcast.rs` shows it): when a replica
//! is cut off or frozen rather than down, or crashes between applying and
//! shipping, two replicas can take writes at once; they then sell the same
//! copy twice and their orders get different ids. A replica that starts
//! while no peer answers serves what it has. Use `raft` for those.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{Replicator, Transport};
use crate::error::{ReplicationError, TransportError};
use crate::journal::{Entry, HighWater, Journal, Machine, Op, Source};

/// How a broadcast replica behaves.
#[derive(Debug, Clone)]
pub struct BroadcastConfig {
    /// This replica's name.
    pub node: String,
    /// Every replica of the service, this one included, in rank order.
    pub replicas: Vec<String>,
    /// Longest wait for a peer's answer to one call.
    pub call_timeout: Duration,
    /// Longest wait, after applying an op, for the peers to have it.
    pub ack_timeout: Duration,
    /// How long a replica that failed to answer a forward is passed over.
    pub suspect_for: Duration,
    /// Most ops per shipment.
    pub batch: usize,
}

impl BroadcastConfig {
    /// Defaults for `node` among `replicas`.
    pub fn new(node: impl Into<String>, replicas: Vec<String>) -> Self {
        BroadcastConfig {
            node: node.into(),
            replicas,
            call_timeout: Duration::from_secs(2),
            ack_timeout: Duration::from_secs(2),
            suspect_for: Duration::from_secs(1),
            batch: 256,
        }
    }
}

/// The shortest pause between two attempts to reach a peer that is down.
const MIN_RETRY: Duration = Duration::from_millis(50);

/// The RPCs, as `POST /replication/<rpc>`.
mod rpc {
    pub const PROPOSE: &str = "propose";
    pub const SHIP: &str = "ship";
    pub const HIGH_WATERS: &str = "high_waters";
    pub const ENTRIES: &str = "entries";
    pub const RESUME: &str = "resume";
}

/// Body of `resume`: a higher-ranked replica is back and takes the writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// The replica that is back.
    pub from: String,
}

/// Where a replica is in its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Pulling what it missed; refuses writes (503), so others pass it over.
    CatchingUp,
    /// Told the lower-ranked replicas it is back, pulling their last writes;
    /// holds the writes forwarded to it until it is ready.
    Resuming,
    /// Serving.
    Ready,
}

/// Body of `ship`: ops of one origin, in order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "C: Serialize + DeserializeOwned")]
pub struct ShipRequest<C> {
    /// The ops, by ascending `origin_seq`, all of one origin.
    pub entries: Vec<Entry<C>>,
}

/// Answer of `ship`: how far the receiver now has the sender's ops.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShipAck {
    /// The receiver's high-water mark for the sender.
    pub high_water: u64,
}

/// Body of `entries`: which ops to read.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntriesRequest {
    /// Of which origin.
    pub origin: String,
    /// After which `origin_seq`.
    pub after: u64,
    /// At most how many.
    pub limit: usize,
}

/// Why a shipment failed: our journal, or the peer.
enum ShipError {
    Local(crate::error::StoreError),
    Peer(TransportError),
}

impl From<TransportError> for ShipError {
    fn from(err: TransportError) -> Self {
        ShipError::Peer(err)
    }
}

/// What this replica knows of one peer, published to waiting proposals.
#[derive(Debug, Clone, Copy)]
struct PeerProgress {
    /// The peer's high-water mark for this replica's ops, as last acked.
    acked: u64,
    /// Whether the last call to it got an answer.
    up: bool,
}

struct Shared<M: Machine> {
    config: BroadcastConfig,
    rank: usize,
    /// This replica's origin: `<node>@<incarnation>`.
    origin: String,
    journal: Arc<dyn Journal<M>>,
    transport: Arc<dyn Transport>,
    phase: watch::Sender<Phase>,
    /// Woken after each local op, for the shippers.
    committed: Notify,
    progress: HashMap<String, watch::Sender<PeerProgress>>,
    suspected: Mutex<HashMap<String, Instant>>,
    /// Bumped when a higher-ranked replica says it is back: a proposal that
    /// chose to apply here before that goes back to forwarding.
    epoch: AtomicU64,
    /// Held shared while an op is applied here, and exclusively by `resume`
    /// to wait until the local writes under way are applied.
    local_writes: tokio::sync::RwLock<()>,
}

/// A broadcast replica of the service `M`. Dropping it stops its tasks.
pub struct Broadcast<M: Machine> {
    shared: Arc<Shared<M>>,
    tasks: Vec<JoinHandle<()>>,
}

impl<M: Machine> Drop for Broadcast<M> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl<M: Machine> Broadcast<M> {
    /// Starts the replica: catches up from its peers in the background
    /// (until then it is not ready), then ships its ops to each of them.
    ///
    /// Fails if `config.node` is not among `config.replicas`.
    pub fn start(
        config: BroadcastConfig,
        journal: Arc<dyn Journal<M>>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, ReplicationError> {
        let rank = super::position(&config.node, &config.replicas)?;
        let peers: Vec<String> = config
            .replicas
            .iter()
            .filter(|r| **r != config.node)
            .cloned()
            .collect();
        let progress = peers
            .iter()
            .map(|p| {
                let (tx, _) = watch::channel(PeerProgress { acked: 0, up: true });
                (p.clone(), tx)
            })
            .collect();
        let origin = format!("{}@{}", config.node, journal.incarnation());
        let shared = Arc::new(Shared {
            config,
            rank,
            origin,
            journal,
            transport,
            phase: watch::channel(Phase::CatchingUp).0,
            committed: Notify::new(),
            progress,
            suspected: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            local_writes: tokio::sync::RwLock::new(()),
        });
        let starter = Arc::clone(&shared);
        // The tasks log inside the caller's span (the node's, in a server).
        let mut tasks = vec![tokio::spawn(starter.start_up().in_current_span())];
        for peer in peers {
            let shipper = Arc::clone(&shared);
            tasks.push(tokio::spawn(shipper.ship_to(peer).in_current_span()));
        }
        Ok(Broadcast { shared, tasks })
    }
}

/// What a replica knows of one of its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's name.
    pub name: String,
    /// Whether its last call answered.
    pub up: bool,
    /// How far it has this replica's ops (its last ack).
    pub acked: u64,
}

impl<M: Machine> Broadcast<M> {
    /// What this replica knows of each peer, in configured order.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let shared = &self.shared;
        shared
            .config
            .replicas
            .iter()
            .filter_map(|name| {
                let progress = *shared.progress.get(name)?.borrow();
                Some(PeerStatus {
                    name: name.clone(),
                    up: progress.up,
                    acked: progress.acked,
                })
            })
            .collect()
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ReplicationError> {
    serde_json::from_slice(body).map_err(|e| ReplicationError::BadMessage(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ReplicationError> {
    serde_json::to_vec(value).map_err(|e| ReplicationError::BadMessage(e.to_string()))
}

/// Whether an error from a forward means "try the next replica": it did not
/// answer, or answered that it cannot take writes now.
fn passes_over(err: &TransportError) -> bool {
    match err {
        TransportError::Unreachable { .. } => true,
        TransportError::Status { status, .. } => *status == 503,
    }
}

impl<M: Machine> Shared<M> {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: &str,
        rpc: &str,
        request: &Req,
    ) -> Result<Resp, TransportError> {
        self.call_within(self.config.call_timeout, peer, rpc, request)
            .await
    }

    async fn call_within<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        limit: Duration,
        peer: &str,
        rpc: &str,
        request: &Req,
    ) -> Result<Resp, TransportError> {
        let body = serde_json::to_vec(request).map_err(|e| TransportError::Status {
            peer: peer.to_owned(),
            status: 400,
            body: e.to_string(),
        })?;
        let call = self.transport.call(peer, rpc, body);
        let answer = tokio::time::timeout(limit, call).await.map_err(|_| {
            TransportError::Unreachable {
                peer: peer.to_owned(),
                reason: format!("no answer within {limit:?}"),
            }
        })??;
        serde_json::from_slice(&answer).map_err(|e| TransportError::Status {
            peer: peer.to_owned(),
            status: 502,
            body: format!("undecodable answer: {e}"),
        })
    }

    fn is_suspected(&self, peer: &str) -> bool {
        let suspected = self.suspected.lock().unwrap_or_else(|p| p.into_inner());
        suspected
            .get(peer)
            .is_some_and(|until| Instant::now() < *until)
    }

    fn suspect(&self, peer: &str) {
        let until = Instant::now() + self.config.suspect_for;
        self.suspected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.to_owned(), until);
    }

    /// Catches up, hands the writes back, catches up again, serves.
    async fn start_up(self: Arc<Self>) {
        self.catch_up().await;
        self.phase.send_replace(Phase::Resuming);
        let request = ResumeRequest {
            from: self.config.node.clone(),
        };
        for peer in self.progress.keys() {
            if let Err(err) = self.call::<_, ()>(peer, rpc::RESUME, &request).await {
                tracing::debug!(%peer, %err, "could not tell a peer we are back");
            }
        }
        // What the others wrote until they heard of us; from now on they
        // ship us their new ops and wait for our acks.
        self.catch_up().await;
        self.phase.send_replace(Phase::Ready);
        tracing::info!(origin = %self.origin, "caught up; serving");
    }

    /// Forwards to the first higher-ranked replica that answers, else
    /// applies here.
    async fn propose(&self, op: Op<M::Command>) -> Result<M::Outcome, ReplicationError> {
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            if let Some(answer) = self.forward(&op).await {
                return answer;
            }
            self.wait_ready().await?;
            let gate = self.local_writes.read().await;
            if self.epoch.load(Ordering::Acquire) != epoch {
                // A higher-ranked replica came back while we decided.
                continue;
            }
            let source = Source::Local {
                node: self.origin.clone(),
            };
            let applied = self.journal.apply(source, op).await?;
            drop(gate);
            if let Some(seq) = applied.origin_seq {
                self.committed.notify_waiters();
                self.await_peers(seq).await;
            }
            return Ok(applied.outcome);
        }
    }

    /// Offers `op` to each higher-ranked replica in turn; `None` if none
    /// took it (all down, or catching up).
    async fn forward(&self, op: &Op<M::Command>) -> Option<Result<M::Outcome, ReplicationError>> {
        for peer in &self.config.replicas[..self.rank] {
            if self.is_suspected(peer) {
                continue;
            }
            // The peer may itself wait up to `ack_timeout` for its peers.
            let limit = self.config.call_timeout + self.config.ack_timeout;
            match self.call_within(limit, peer, rpc::PROPOSE, op).await {
                Ok(outcome) => return Some(Ok(outcome)),
                Err(err) if passes_over(&err) => {
                    tracing::debug!(%peer, %err, "passing over a replica for a write");
                    self.suspect(peer);
                }
                Err(err) => {
                    return Some(Err(ReplicationError::Unavailable(format!(
                        "replica {peer} failed the write: {err}"
                    ))))
                }
            }
        }
        None
    }

    /// Ok once this replica takes writes: at once if ready, after a short
    /// wait if it is finishing its start, never while it catches up.
    async fn wait_ready(&self) -> Result<(), ReplicationError> {
        let mut phase = self.phase.subscribe();
        let catching_up =
            || ReplicationError::Unavailable(format!("{} is catching up", self.config.node));
        match *phase.borrow_and_update() {
            Phase::Ready => return Ok(()),
            Phase::CatchingUp => return Err(catching_up()),
            Phase::Resuming => {}
        }
        let ready = phase.wait_for(|p| *p == Phase::Ready);
        let ready = tokio::time::timeout(self.config.call_timeout / 2, ready)
            .await
            .is_ok_and(|r| r.is_ok());
        if ready {
            Ok(())
        } else {
            Err(catching_up())
        }
    }

    /// Replica `from` is back. Ship to it again at once, and count it up
    /// (so proposals wait for its acks again); if it is higher-ranked,
    /// forward writes to it from now on. Returns once the local writes
    /// under way are applied, so the returning replica's last catch-up sees
    /// every write this replica made without it.
    async fn resume(&self, from: &str) {
        self.suspected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(from);
        if let Some(progress) = self.progress.get(from) {
            progress.send_modify(|p| p.up = true);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        drop(self.local_writes.write().await);
        self.committed.notify_waiters();
    }

    /// Waits until every peer that is up has op `seq` of ours, at most
    /// `ack_timeout` in all. A peer that is down gets it later from its
    /// shipper.
    async fn await_peers(&self, seq: u64) {
        let deadline = tokio::time::Instant::now() + self.config.ack_timeout;
        for (peer, progress) in &self.progress {
            let mut rx = progress.subscribe();
            let done = rx.wait_for(|p| !p.up || p.acked >= seq);
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                tracing::warn!(%peer, seq, "peer did not ack in time");
            }
        }
    }

    /// Pulls from every reachable peer the ops this replica lacks.
    async fn catch_up(&self) {
        for peer in self.progress.keys() {
            if let Err(err) = self.catch_up_from(peer).await {
                tracing::warn!(%peer, %err, "cannot catch up from a peer; going on");
            }
        }
    }

    async fn catch_up_from(&self, peer: &str) -> Result<(), ReplicationError> {
        let theirs: Vec<HighWater> = self
            .call(peer, rpc::HIGH_WATERS, &())
            .await
            .map_err(|e| ReplicationError::Unavailable(e.to_string()))?;
        let ours: HashMap<String, u64> = self
            .journal
            .high_waters()
            .await?
            .into_iter()
            .map(|hw| (hw.origin, hw.seq))
            .collect();
        for HighWater { origin, seq } in theirs {
            let mut after = ours.get(&origin).copied().unwrap_or(0);
            while after < seq {
                let request = EntriesRequest {
                    origin: origin.clone(),
                    after,
                    limit: self.config.batch,
                };
                let entries: Vec<Entry<M::Command>> = self
                    .call(peer, rpc::ENTRIES, &request)
                    .await
                    .map_err(|e| ReplicationError::Unavailable(e.to_string()))?;
                let Some(last) = entries.last().map(|e| e.origin_seq) else {
                    break;
                };
                self.apply_shipped(entries).await?;
                after = last;
            }
            if after > 0 {
                tracing::info!(%peer, %origin, upto = after, "caught up");
            }
        }
        Ok(())
    }

    /// This replica's high-water mark for `origin`.
    async fn high_water(&self, origin: &str) -> Result<u64, ReplicationError> {
        Ok(self
            .journal
            .high_waters()
            .await?
            .into_iter()
            .find(|hw| hw.origin == origin)
            .map_or(0, |hw| hw.seq))
    }

    /// Applies a batch of a peer's entries in one transaction; returns the
    /// `origin_seq` of the last (0 for none).
    async fn apply_shipped(
        &self,
        entries: Vec<Entry<M::Command>>,
    ) -> Result<u64, ReplicationError> {
        let last = entries.last().map_or(0, |e| e.origin_seq);
        self.journal.apply_entries(entries).await?;
        Ok(last)
    }

    /// Ships this replica's ops to `peer`, forever: from the peer's
    /// high-water mark, in batches, retrying with back-off while it is down.
    async fn ship_to(self: Arc<Self>, peer: String) {
        let Some(progress) = self.progress.get(&peer) else {
            return;
        };
        let me = self.origin.clone();
        let mut acked: Option<u64> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            // Register interest before reading, so a commit in between wakes us.
            let committed = self.committed.notified();
            let step = async {
                let from = match acked {
                    Some(seq) => seq,
                    None => {
                        let theirs: Vec<HighWater> =
                            self.call(&peer, rpc::HIGH_WATERS, &()).await?;
                        theirs
                            .into_iter()
                            .find(|hw| hw.origin == me)
                            .map_or(0, |hw| hw.seq)
                    }
                };
                let entries = self
                    .journal
                    .entries(&me, from, self.config.batch)
                    .await
                    .map_err(ShipError::Local)?;
                if entries.is_empty() {
                    return Ok::<_, ShipError>((from, false));
                }
                let ack: ShipAck = self
                    .call(&peer, rpc::SHIP, &ShipRequest { entries })
                    .await?;
                Ok((ack.high_water, true))
            };
            match step.await {
                Ok((high, shipped)) => {
                    acked = Some(high);
                    backoff = Duration::from_millis(50);
                    progress.send_replace(PeerProgress {
                        acked: high,
                        up: true,
                    });
                    if !shipped {
                        // Wait for a new op, or re-check now and then.
                        let _ = tokio::time::timeout(Duration::from_secs(1), committed).await;
                    }
                }
                Err(ShipError::Local(err)) => {
                    // Our own journal failed: the peer is not to blame.
                    tracing::error!(%err, "cannot read the journal to ship");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(ShipError::Peer(err)) => {
                    if progress.borrow().up {
                        tracing::warn!(%peer, %err, "peer unreachable; will resend when it is back");
                    }
                    acked = None;
                    progress.send_modify(|p| p.up = false);
                    // Retry after the back-off, or sooner when there is a new
                    // op to deliver, but never more often than MIN_RETRY.
                    let retry_at = tokio::time::Instant::now() + MIN_RETRY;
                    let _ = tokio::time::timeout(backoff, self.committed.notified()).await;
                    tokio::time::sleep_until(retry_at).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

#[async_trait]
impl<M: Machine> Replicator<M> for Broadcast<M> {
    async fn propose(&self, op: Op<M::Command>) -> Result<M::Outcome, ReplicationError> {
        self.shared.propose(op).await
    }

    async fn handle(&self, rpc: &str, body: &[u8]) -> Result<Vec<u8>, ReplicationError> {
        let shared = &self.shared;
        match rpc {
            rpc::PROPOSE => {
                let op: Op<M::Command> = decode(body)?;
                encode(&shared.propose(op).await?)
            }
            rpc::SHIP => {
                let request: ShipRequest<M::Command> = decode(body)?;
                let origin = match request.entries.first() {
                    Some(first) => first.origin.clone(),
                    None => return encode(&ShipAck { high_water: 0 }),
                };
                if request.entries.iter().any(|e| e.origin != origin) {
                    return Err(ReplicationError::BadMessage(
                        "a shipment mixes origins".to_owned(),
                    ));
                }
                // The sender ships its own ops, numbered without gaps: take
                // them in order, and stop at a gap (it resends from our mark).
                let mut high_water = shared.high_water(&origin).await?;
                let mut next = Vec::new();
                for entry in request.entries {
                    if entry.origin_seq <= high_water {
                        continue;
                    }
                    if entry.origin_seq != high_water + 1 {
                        break;
                    }
                    high_water = entry.origin_seq;
                    next.push(entry);
                }
                shared.apply_shipped(next).await?;
                encode(&ShipAck { high_water })
            }
            rpc::HIGH_WATERS => encode(&shared.journal.high_waters().await?),
            rpc::ENTRIES => {
                let request: EntriesRequest = decode(body)?;
                let limit = request.limit.clamp(1, 4096);
                let entries = shared
                    .journal
                    .entries(&request.origin, request.after, limit)
                    .await?;
                encode(&entries)
            }
            rpc::RESUME => {
                let request: ResumeRequest = decode(body)?;
                shared.resume(&request.from).await;
                encode(&())
            }
            other => Err(ReplicationError::UnknownRpc(other.to_owned())),
        }
    }

    fn is_ready(&self) -> bool {
        *self.shared.phase.borrow() == Phase::Ready
    }
}
