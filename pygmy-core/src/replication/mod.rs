//! Replication: applying each op of a service on all its replicas.
//!
//! A [`Replicator`] takes an op (a [`crate::journal::Op`]) and answers its
//! outcome once the op is applied as its backend promises; it also serves the
//! calls its peers make to it ([`Replicator::handle`]), which the server
//! routes to `POST /replication/<rpc>`. Peers are reached through a
//! [`Transport`] (HTTP in the server, [`loopback::Loopback`] in tests).
//!
//! Backends:
//! - [`broadcast::Broadcast`]: the seed's protocol (apply, then send to each
//!   peer), made as good as it can be without consensus. See its docs for
//!   what it does not promise.
//! - [`raft`]: consensus on openraft 0.9 (with the `raft` feature).

pub mod broadcast;
pub mod loopback;
pub mod members;
#[cfg(feature = "raft")]
pub mod raft;
pub mod rpc;

use async_trait::async_trait;

pub use members::{KnownMember, KnownMembers, MemberChange, MemberInfo, MemberRole, Members};

/// The largest body of a replication call a node takes (a shipment of
/// ops, a raft append, a snapshot chunk); every call is built to fit.
pub const MAX_CALL_BYTES: usize = 8 * 1024 * 1024;

use crate::error::{ReplicationError, TransportError};
use crate::journal::{Machine, Op};

/// Applies a service's ops on its replicas.
///
/// Three broadcast replicas of the catalog in one process, over the
/// in-process [`loopback::Loopback`] transport; a sale proposed at one is
/// applied on all:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use pygmy_core::catalog::memory::MemoryCatalog;
/// use pygmy_core::catalog::{CatalogCommand, CatalogMachine, CatalogOutcome, CatalogStore};
/// use pygmy_core::journal::{Op, OpId};
/// use pygmy_core::replication::broadcast::{Broadcast, BroadcastConfig};
/// use pygmy_core::replication::loopback::Loopback;
/// use pygmy_core::replication::Replicator;
/// use pygmy_core::types::{default_books, ItemId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let names: Vec<String> = ["c0", "c1", "c2"].map(String::from).to_vec();
/// let net = Loopback::new();
/// let mut replicas = Vec::new();
/// for name in &names {
///     let store = Arc::new(MemoryCatalog::new());
///     store.seed(default_books()).await?;
///     let config = BroadcastConfig::new(name.as_str(), names.clone());
///     let replicator: Arc<dyn Replicator<CatalogMachine>> =
///         Arc::new(Broadcast::start(config, store.clone(), net.endpoint(name))?);
///     net.register(name, &replicator);
///     replicas.push((store, replicator));
/// }
/// while !replicas.iter().all(|(_, r)| r.is_ready()) {
///     tokio::time::sleep(Duration::from_millis(5)).await;
/// }
///
/// let sale = Op { id: OpId("sale:one".into()), cmd: CatalogCommand::Sell { item: ItemId(1) } };
/// let outcome = replicas[1].1.propose(sale).await?;
/// assert!(matches!(outcome, CatalogOutcome::Sold { .. }));
/// // Acknowledged only once every replica that is up applied it.
/// for (store, _) in &replicas {
///     assert_eq!(store.book(ItemId(1)).await?.map(|b| b.count), Some(99));
/// }
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Replicator<M: Machine>: Send + Sync {
    /// Applies `op` to the replicated service and returns its outcome.
    ///
    /// When it returns `Ok`, the op is durable on the replica that applied
    /// it, and on every other replica the backend promises (see each
    /// backend). On `Err` the op may or may not have been applied: retrying
    /// with the same op id is always safe, since an op id is applied at most
    /// once per replica and a repeat answers the recorded outcome.
    async fn propose(&self, op: Op<M::Command>) -> Result<M::Outcome, ReplicationError>;

    /// Serves a peer's call `rpc` with a JSON `body`; answers a JSON body.
    async fn handle(&self, rpc: &str, body: &[u8]) -> Result<Vec<u8>, ReplicationError>;

    /// Whether this replica serves: false while it catches up at start.
    fn is_ready(&self) -> bool;

    /// Leaves replication for good, as the node is told to stop and before
    /// it stops answering its peers: a `raft` replica that went on running
    /// raft with its server closed would stand for election cut off from
    /// its peers, and its higher term would unseat the leader when it
    /// came back. Writes and reads asked of it afterwards are refused
    /// (503), and their callers try another replica. The default does
    /// nothing.
    async fn stop(&self) {}

    /// Returns once this replica has applied every op acknowledged before
    /// the call began, so that a read of its store that starts afterwards
    /// is fresh. The default returns at once: `broadcast` acknowledges an op
    /// only once every replica that is up has it.
    async fn linearize(&self) -> Result<(), ReplicationError> {
        Ok(())
    }

    /// This replica's replication state, if the backend has one to tell.
    fn status(&self) -> Option<ReplicaStatus> {
        None
    }

    /// The members this replica knows of now, without asking anyone: none
    /// for a backend whose replicas are those of its topology (the
    /// default).
    fn known_members(&self) -> Option<KnownMembers> {
        None
    }

    /// The log index of [`Replicator::known_members`] alone (cheaper: a
    /// change asks for it).
    fn members_index(&self) -> Option<u64> {
        self.known_members().map(|members| members.index)
    }

    /// The replicas of the service, as its leader knows them. The default:
    /// a backend with a fixed set of replicas (its topology) refuses.
    async fn members(&self) -> Result<Members, ReplicationError> {
        Err(fixed_membership())
    }

    /// Adds a replica to the service or removes one, while it serves, and
    /// answers the membership as it is then (an added replica is a learner
    /// until it has caught up). The default refuses.
    async fn change_members(&self, change: MemberChange) -> Result<Members, ReplicationError> {
        let _ = change;
        Err(fixed_membership())
    }
}

/// A replica's view of its replication, for `/metrics` and
/// `pygmy-client status` (backends with consensus; `broadcast` has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: &'static str,
    /// The current term.
    pub term: u64,
    /// The leader it knows, by name.
    pub leader: Option<String>,
    /// The index of its last log entry (0: none).
    pub last_log: u64,
    /// On a leader: the highest index a majority of the voters hold (its
    /// commit index, as far as it can be told from outside openraft).
    pub committed: Option<u64>,
    /// The index of the last entry it applied (0: none).
    pub applied: u64,
    /// The index its last snapshot covers, if it has one.
    pub snapshot: Option<u64>,
    /// The index up to which its log was dropped behind a snapshot.
    pub purged: Option<u64>,
    /// On a leader: each other member by name, with how many entries of
    /// the leader's log it lacks (the leader's last index less the last it
    /// acknowledged).
    pub followers: Vec<(String, u64)>,
    /// The entry formats it reads, and the one its service writes as far
    /// as it applied.
    pub formats: raft::format::Formats,
}

fn fixed_membership() -> ReplicationError {
    ReplicationError::Refused {
        kind: crate::error::ErrorKind::Unprocessable,
        message: "this replication backend's replicas are those of its topology: \
                  change the topology and restart"
            .to_owned(),
    }
}

/// The position of `node` among `replicas` (its rank with `broadcast`, its
/// raft id less one with `raft`).
pub fn position(node: &str, replicas: &[String]) -> Result<usize, ReplicationError> {
    replicas.iter().position(|r| r == node).ok_or_else(|| {
        ReplicationError::Config(format!("{node} is not one of the replicas {replicas:?}"))
    })
}

/// Sends a replication call to a peer and returns its answer.
///
/// The server's transport is HTTP (`POST /replication/<rpc>` with the
/// cluster's token); [`loopback::Loopback`] calls the peer in process. A
/// transport of your own only moves bytes, for example one that counts the
/// calls of another:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// use async_trait::async_trait;
/// use pygmy_core::catalog::CatalogMachine;
/// use pygmy_core::error::TransportError;
/// use pygmy_core::replication::loopback::Loopback;
/// use pygmy_core::replication::Transport;
///
/// struct Counted {
///     inner: Arc<dyn Transport>,
///     calls: AtomicU64,
/// }
///
/// #[async_trait]
/// impl Transport for Counted {
///     async fn call(&self, peer: &str, rpc: &str, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
///         self.calls.fetch_add(1, Ordering::Relaxed);
///         self.inner.call(peer, rpc, body).await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let net = Loopback::<CatalogMachine>::new();
/// let transport = Counted { inner: net.endpoint("c0"), calls: AtomicU64::new(0) };
/// // Nobody is registered as c1: the call fails, without an answer.
/// let err = transport.call("c1", "entries", b"{}".to_vec()).await.unwrap_err();
/// assert!(matches!(err, TransportError::Unreachable { .. }));
/// assert_eq!(transport.calls.load(Ordering::Relaxed), 1);
/// # }
/// ```
#[async_trait]
pub trait Transport: Send + Sync {
    /// Calls `rpc` on `peer` (a node name) with a JSON `body`. An error
    /// means no answer was had: the peer may or may not have acted.
    async fn call(&self, peer: &str, rpc: &str, body: Vec<u8>) -> Result<Vec<u8>, TransportError>;

    /// Learns that `peer` is reached at `url`: a replica added at run time
    /// (see [`Replicator::change_members`]), which the topology this
    /// transport was made from may not name. A name the transport knows
    /// already keeps its address. The default knows nothing of addresses
    /// (an in-process transport reaches its peers by name alone).
    fn learn(&self, peer: &str, url: &str) -> Result<(), TransportError> {
        let _ = (peer, url);
        Ok(())
    }
}
