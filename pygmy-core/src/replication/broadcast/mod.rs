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

mod catch_up;
pub mod messages;
mod shipper;

use self::messages::{self as rpc, EntriesRequest, ResumeRequest, ShipAck, ShipRequest};
use super::{rpc as call, Replicator, Transport};
use crate::error::{ReplicationError, TransportError};
use crate::journal::{Journal, Machine, Op, Source};

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
            // Together well under a caller's attempt (2 s for node-to-node
            // calls): a forward to a frozen peer (whose kernel still takes
            // the connection) must fail, and the wait for its ack end,
            // while the caller still waits, or the replica never gets to
            // answer an op it applied in the peer's place.
            call_timeout: Duration::from_millis(500),
            ack_timeout: Duration::from_millis(500),
            suspect_for: Duration::from_secs(1),
            batch: 256,
        }
    }
}

/// The shortest pause between two attempts to reach a peer that is down.
const MIN_RETRY: Duration = Duration::from_millis(50);

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
        call::call(&*self.transport, peer, rpc, request, limit).await
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
                Err(err) if err.passes_over() => {
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
                let op: Op<M::Command> = call::decode(body)?;
                call::encode(&shared.propose(op).await?)
            }
            rpc::SHIP => {
                let request: ShipRequest<M::Command> = call::decode(body)?;
                let origin = match request.entries.first() {
                    Some(first) => first.origin.clone(),
                    None => return call::encode(&ShipAck { high_water: 0 }),
                };
                if request.entries.iter().any(|e| e.origin != origin) {
                    return Err(ReplicationError::Invalid(
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
                call::encode(&ShipAck { high_water })
            }
            rpc::HIGH_WATERS => call::encode(&shared.journal.high_waters().await?),
            rpc::ENTRIES => {
                let request: EntriesRequest = call::decode(body)?;
                let limit = request.limit.clamp(1, 4096);
                let entries = shared
                    .journal
                    .entries(&request.origin, request.after, limit)
                    .await?;
                call::encode(&entries)
            }
            rpc::RESUME => {
                let request: ResumeRequest = call::decode(body)?;
                shared.resume(&request.from).await;
                call::encode(&())
            }
            other => Err(ReplicationError::UnknownRpc(other.to_owned())),
        }
    }

    fn is_ready(&self) -> bool {
        *self.shared.phase.borrow() == Phase::Ready
    }
}
