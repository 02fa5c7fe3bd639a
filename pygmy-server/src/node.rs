//! Wiring: one function builds a node of the topology (its store, its
//! replication, its clients of other nodes, its handler) and serves it.
//! Nothing here handles a request.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pygmy_client::http::{pooled, Http, Pool};
use pygmy_client::{CatalogClient, ClientError, ClientOptions, InternalClient, OrderClient};
use pygmy_core::balance::{Balancer, HealthPolicy, LeastLoaded, Preferred, ReplicaSet, RoundRobin};
use pygmy_core::cache::{Cache, LruCache, NoCache};
use pygmy_core::catalog::memory::MemoryCatalog;
use pygmy_core::catalog::{CatalogMachine, CatalogStore};
use pygmy_core::journal::sqlite::{get_meta, set_meta, SqliteJournal, SqliteMachine};
use pygmy_core::journal::Journal;
use pygmy_core::order::memory::MemoryOrders;
use pygmy_core::order::{OrderMachine, OrderStore};
use pygmy_core::replication::broadcast::{Broadcast, BroadcastConfig};
use pygmy_core::replication::raft::{self, RaftConfig, RaftReplicator};
use pygmy_core::replication::Replicator;
use pygmy_core::topology::token::{TokenSource, TOKEN_ENV};
use pygmy_core::topology::{
    BalancerKind, ConfigError, NodeConfig, Replication, Role, StoreKind, Topology,
};
use pygmy_core::StoreError;
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;

use crate::background::Background;
use crate::catalog::CatalogNode;
use crate::frontend::{Backends, DialCatalog, FrontendNode};
use crate::http::{serve, Handler, Limits, NodeInfo};
use crate::order::steps::SalesRoute;
use crate::order::{OrderNode, OrderShardPlace};
use crate::tls::NodeTls;
use crate::transport::HttpTransport;

/// A node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The topology is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A client could not be built (a bad address).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The replicator could not start.
    #[error(transparent)]
    Replication(#[from] pygmy_core::ReplicationError),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] pygmy_client::tls::TlsError),
    /// A node stopped on its own.
    #[error("node {0} stopped")]
    Stopped(String),
    /// A task run off the async threads failed.
    #[error("a blocking task failed: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Sets `topology`'s cluster token ([`Topology::resolve_token`], with
/// `PYGMY_TOKEN` from the environment), generating one at the first start
/// of a loopback cluster; a cluster beyond loopback without one is
/// refused. Every node runs with a token.
pub fn resolve_token(topology: &mut Topology) -> Result<Option<TokenSource>, ConfigError> {
    let from_env = std::env::var(TOKEN_ENV).ok();
    let source = topology.resolve_token(from_env, true)?;
    if let Some(TokenSource::Generated(path)) = &source {
        tracing::info!(
            file = %path.display(),
            "generated the cluster token (`pygmy-server --print-token` shows it)"
        );
    }
    Ok(source)
}

/// [`resolve_token`] off the async threads: it reads, and at a first
/// start writes, the token file.
pub async fn resolve_token_off_runtime(
    topology: &mut Topology,
) -> Result<Option<TokenSource>, NodeError> {
    let mut owned = topology.clone();
    let (owned, source) = tokio::task::spawn_blocking(move || {
        let source = resolve_token(&mut owned);
        (owned, source)
    })
    .await?;
    topology.token = owned.token;
    Ok(source?)
}

/// Connections the kernel may hold for a node before it accepts them (the
/// kernel caps it at `net.core.somaxconn`). With fewer, a burst of new
/// clients overflows the queue and the kernel drops their handshakes, which
/// they retry only after a second.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds a node's address, with a backlog of [`LISTEN_BACKLOG`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As std's and tokio's own bind: a restarted node may take its
        // address back while old connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| NodeError::Bind { addr, source })
}

/// A client that asks a node for its `/health` or `/ready` (any role),
/// over `tls` for an `https://` node.
pub fn probe_client(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<InternalClient, ClientError> {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
        token: None,
        tls,
    };
    InternalClient::new(url, &options)
}

/// TLS for a caller of a cluster's public endpoints (its health, its
/// readiness): the cluster's CA to trust, no certificate to show; none
/// for a cluster without TLS. Reads the CA's file.
pub fn public_tls(
    topology: &Topology,
) -> Result<Option<Arc<rustls::ClientConfig>>, pygmy_client::tls::TlsError> {
    let Some(files) = topology.tls_files(pygmy_core::topology::CLIENT_CERT_NAME) else {
        return Ok(None);
    };
    pygmy_client::tls::client_config(&files.ca, None).map(Some)
}

/// The longest a node-to-node call may take (a backstop: callers that
/// can try another replica give each attempt [`ATTEMPT_TIMEOUT`]).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one attempt at a replica may take before the caller tries
/// the next one (a frozen replica answers nothing): well under a client's
/// 10 s, and over a write that waits out one raft election (about 1.6 s).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How a node calls the others: with the cluster token, and over TLS
/// showing its own certificate when the cluster has TLS.
fn client_options(topology: &Topology, tls: Option<&NodeTls>) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        timeout: CALL_TIMEOUT,
        token: topology.token.clone(),
        tls: tls.map(|tls| Arc::clone(&tls.client)),
    }
}

fn limits(topology: &Topology) -> Limits {
    Limits {
        max_connections: topology.max_connections,
        peer_connections: topology.peer_connections,
        max_body_in_flight: topology.max_body_in_flight_bytes,
        max_body: topology.max_body_bytes,
        max_internal_body: Limits::default()
            .max_internal_body
            .max(topology.max_body_bytes),
        read_timeout: Duration::from_millis(topology.read_timeout_ms),
        ..Limits::default()
    }
}

/// Clients of the nodes at `urls` (`(name, url)`), over one shared pool.
fn clients<C>(
    topology: &Topology,
    urls: &[(String, String)],
    pool: &Pool,
    make: impl Fn(Http) -> C,
) -> Result<Vec<(String, C)>, NodeError> {
    urls.iter()
        .map(|(name, url)| {
            let http = Http::with_client(pool.clone(), url, topology.token.clone())?;
            Ok((name.clone(), make(http)))
        })
        .collect()
}

/// The replicas of shard `shard` of `role` as a [`ReplicaSet`], tried in
/// `balancer`'s order.
fn replica_set<C>(
    topology: &Topology,
    role: Role,
    shard: usize,
    pool: &Pool,
    make: impl Fn(Http) -> C,
    balancer: Box<dyn Balancer>,
) -> Result<ReplicaSet<C>, NodeError> {
    let urls = topology.shard_urls(role, shard);
    let clients = clients(topology, &urls, pool, make)?;
    let replicas = urls
        .into_iter()
        .zip(clients)
        .map(|((name, url), (_, client))| (name, url, client));
    Ok(ReplicaSet::new(
        replicas,
        balancer,
        HealthPolicy::default(),
        ATTEMPT_TIMEOUT,
    ))
}

/// The replicas of each shard of `role`, in shard order, each set tried
/// in the order of the balancer the topology names.
fn balanced_shards<C>(
    topology: &Topology,
    role: Role,
    pool: &Pool,
    make: impl Fn(Http) -> C,
) -> Result<Vec<ReplicaSet<C>>, NodeError> {
    (0..topology.shard_names(role).len())
        .map(|shard| replica_set(topology, role, shard, pool, &make, balancer(topology)))
        .collect()
}

/// The balancer the topology names.
fn balancer(topology: &Topology) -> Box<dyn Balancer> {
    match topology.balancer {
        BalancerKind::RoundRobin => Box::new(RoundRobin::default()),
        BalancerKind::LeastLoaded => Box::new(LeastLoaded::default()),
    }
}

/// A backend service as a node opens it: its store (as the service's store
/// trait), from its SQLite file or in memory.
trait Service: SqliteMachine + Sized {
    /// The service's store trait object (`dyn CatalogStore`, ...).
    type Store: ?Sized + Send + Sync + 'static;
    /// Its file in the node's data directory.
    const FILE: &'static str;
    /// The store over a SQLite journal.
    fn sqlite(journal: Arc<SqliteJournal<Self>>) -> Arc<Self::Store>;
    /// A store in memory.
    fn memory() -> Arc<Self::Store>;
    /// The store as the replicator sees it.
    fn journal(store: &Arc<Self::Store>) -> Arc<dyn Journal<Self>>;
}

impl Service for CatalogMachine {
    type Store = dyn CatalogStore;
    const FILE: &'static str = "catalog.db";
    fn sqlite(journal: Arc<SqliteJournal<Self>>) -> Arc<dyn CatalogStore> {
        journal
    }
    fn memory() -> Arc<dyn CatalogStore> {
        Arc::new(MemoryCatalog::new())
    }
    fn journal(store: &Arc<dyn CatalogStore>) -> Arc<dyn Journal<Self>> {
        store.clone()
    }
}

impl Service for OrderMachine {
    type Store = dyn OrderStore;
    const FILE: &'static str = "orders.db";
    fn sqlite(journal: Arc<SqliteJournal<Self>>) -> Arc<dyn OrderStore> {
        journal
    }
    fn memory() -> Arc<dyn OrderStore> {
        Arc::new(MemoryOrders::new())
    }
    fn journal(store: &Arc<dyn OrderStore>) -> Arc<dyn Journal<Self>> {
        store.clone()
    }
}

/// The SQLite file of backend `node`'s store; none for a frontend.
pub(crate) fn store_file(topology: &Topology, node: &NodeConfig) -> Option<PathBuf> {
    let file = match node.role {
        Role::Catalog => CatalogMachine::FILE,
        Role::Order => OrderMachine::FILE,
        Role::Frontend => return None,
    };
    Some(topology.data_dir(node).join(file))
}

/// A backend's store, and its SQLite journal and file when it has one (the
/// `raft` log lives in the same file).
struct Store<M: Service> {
    store: Arc<M::Store>,
    sqlite: Option<(Arc<SqliteJournal<M>>, PathBuf)>,
}

/// Opens the store of service `M` for `node`.
async fn open_store<M: Service>(
    topology: &Topology,
    node: &NodeConfig,
) -> Result<Store<M>, NodeError> {
    match topology.store {
        StoreKind::Sqlite => {
            let path = topology.data_dir(node).join(M::FILE);
            let opened = path.clone();
            let journal = tokio::task::spawn_blocking(move || SqliteJournal::<M>::open(opened))
                .await
                .map_err(StoreError::from)??;
            let journal = Arc::new(journal);
            Ok(Store {
                store: M::sqlite(Arc::clone(&journal)),
                sqlite: Some((journal, path)),
            })
        }
        StoreKind::Memory => Ok(Store {
            store: M::memory(),
            sqlite: None,
        }),
    }
}

/// Starts the replication of `store` among the replicas of `node`'s shard
/// (its raft group).
async fn replicator<M: Service>(
    topology: &Topology,
    node: &NodeConfig,
    store: &Store<M>,
    pool: &Pool,
) -> Result<Arc<dyn Replicator<M>>, NodeError> {
    let group = topology.shard_urls(node.role, topology.shard_index(node));
    let peers = clients(topology, &group, pool, InternalClient::from_http)?;
    let names = peers.iter().map(|(name, _)| name.clone()).collect();
    let transport = Arc::new(HttpTransport::new(
        peers,
        pool.clone(),
        topology.token.clone(),
    ));
    match topology.replication {
        Replication::Broadcast => {
            let config = BroadcastConfig::new(node.name.clone(), names);
            let journal = M::journal(&store.store);
            Ok(Arc::new(Broadcast::start(config, journal, transport)?))
        }
        Replication::Raft => {
            let (journal, path): (&Arc<SqliteJournal<M>>, &Path) = match &store.sqlite {
                Some((journal, path)) => (journal, path),
                None => {
                    return Err(ConfigError::Invalid(
                        "raft keeps its log in SQLite: set store = \"sqlite\"".to_owned(),
                    )
                    .into())
                }
            };
            let (log, machine) = raft::sqlite::open(Arc::clone(journal), path).await?;
            let machine = machine.retaining(Duration::from_secs(topology.op_retention_s));
            let mut config = RaftConfig::new(node.name.clone(), names);
            config.snapshot_every = topology.raft_snapshot_every;
            config.keep_logs = topology.raft_keep_logs;
            if let Some(max) = node.max_format {
                config.max_format = max;
            }
            Ok(Arc::new(
                RaftReplicator::start(config, log, machine, transport).await?,
            ))
        }
    }
}

async fn catalog_node(
    topology: &Topology,
    node: &NodeConfig,
    info: NodeInfo,
    tls: Option<&NodeTls>,
) -> Result<(Arc<CatalogNode>, Background), NodeError> {
    let store = open_store::<CatalogMachine>(topology, node).await?;
    let (ranges, shard) = (topology.item_ranges(), topology.shard_index(node));
    let books = {
        let topology = topology.clone();
        tokio::task::spawn_blocking(move || topology.books())
            .await
            .map_err(StoreError::from)??
    };
    // A shard holds the books of its range alone.
    let books: Vec<_> = books
        .into_iter()
        .filter(|book| ranges.holds(shard, book.id))
        .collect();
    if store.store.seed(books).await? {
        tracing::info!("seeded a new catalog");
    }
    let pool = pooled(&client_options(topology, tls))?;
    let replicator = replicator(topology, node, &store, &pool).await?;
    let frontends = clients(
        topology,
        &topology.urls(Role::Frontend),
        &pool,
        InternalClient::from_http,
    )?;
    let (catalog, background) =
        CatalogNode::new(info, store.store, replicator, frontends, (ranges, shard));
    Ok((Arc::new(catalog), background))
}

async fn order_node(
    topology: &Topology,
    node: &NodeConfig,
    info: NodeInfo,
    tls: Option<&NodeTls>,
) -> Result<(Arc<OrderNode>, Background), NodeError> {
    let store = open_store::<OrderMachine>(topology, node).await?;
    if let Some((journal, _)) = &store.sqlite {
        keep_order_shards(journal, topology.key_shards().len()).await?;
    }
    let pool = pooled(&client_options(topology, tls))?;
    let replicator = replicator(topology, node, &store, &pool).await?;
    // In each catalog shard, the preferred replica first, then the others
    // in file order.
    let shards = (0..topology.item_ranges().len()).map(|shard| {
        let preferred = topology.preferred_catalog(node, shard);
        let first = topology
            .shard_urls(Role::Catalog, shard)
            .iter()
            .position(|(name, _)| Some(name) == preferred.as_ref())
            .unwrap_or(0);
        replica_set(
            topology,
            Role::Catalog,
            shard,
            &pool,
            CatalogClient::from_http,
            Box::new(Preferred::new(first)),
        )
    });
    let catalogs = shards.collect::<Result<Vec<_>, _>>()?;
    let place = OrderShardPlace {
        shard: topology.shard_index(node),
        keys: topology.key_shards(),
    };
    let (order, background) = OrderNode::new(
        info,
        store.store,
        replicator,
        SalesRoute::new(catalogs, topology.item_ranges()),
        place,
    );
    Ok((Arc::new(order), background))
}

/// The journal meta key of the number of order shards an order replica's
/// store was founded under.
const ORDER_SHARDS_META: &str = "order_shards";

/// Refuses an order replica whose store was founded under another number
/// of order shards than `shards`: a buy's key would hash to another shard
/// than the one holding its order, and a retry could buy twice. A store
/// that does not say yet (new, restored from a backup, or from a build
/// before this check) takes `shards`.
async fn keep_order_shards(
    journal: &SqliteJournal<OrderMachine>,
    shards: usize,
) -> Result<(), NodeError> {
    let now = shards.to_string();
    let founded = journal
        .write_beside(move |tx| {
            if let Some(founded) = get_meta(tx, ORDER_SHARDS_META)? {
                return Ok(founded);
            }
            set_meta(tx, &[(ORDER_SHARDS_META.to_owned(), now.clone())])?;
            Ok(now)
        })
        .await?;
    if founded == shards.to_string() {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!(
        "this order replica's store was founded under {founded} order shard(s), and the \
         topology has {shards}: the keys of its orders would hash to other shards, so a \
         retried buy could buy twice; keep the number of order shards"
    ))
    .into())
}

fn frontend_node(
    topology: &Topology,
    info: NodeInfo,
    tls: Option<&NodeTls>,
) -> Result<(Arc<FrontendNode>, Background), NodeError> {
    let pool = pooled(&client_options(topology, tls))?;
    let ranges = topology.item_ranges();
    let keys = topology.key_shards();
    let catalogs = balanced_shards(topology, Role::Catalog, &pool, CatalogClient::from_http)?;
    let orders = balanced_shards(topology, Role::Order, &pool, OrderClient::from_http)?;
    let backends = Backends {
        catalogs,
        ranges,
        orders,
        keys,
    };
    let cache: Arc<dyn Cache> = match NonZeroUsize::new(topology.cache.capacity) {
        Some(capacity) => Arc::new(LruCache::new(
            capacity,
            Duration::from_millis(topology.cache.ttl_ms),
        )),
        None => Arc::new(NoCache::default()),
    };
    let token = topology.token.clone();
    let dial: DialCatalog = Box::new(move |url: &str| {
        Http::with_client(pool.clone(), url, token.clone()).map(CatalogClient::from_http)
    });
    Ok(FrontendNode::new(info, cache, backends, dial))
}

/// Builds node `name` of `topology` and serves it on `listener` until
/// `shutdown` completes.
pub async fn run_node(
    topology: &Topology,
    name: &str,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let mut resolved;
    let topology = if topology.token.is_some() {
        topology
    } else {
        resolved = topology.clone();
        resolve_token_off_runtime(&mut resolved).await?;
        &resolved
    };
    let node = topology
        .node(name)
        .ok_or_else(|| ConfigError::UnknownNode(name.to_owned()))?;
    let info = NodeInfo {
        name: node.name.clone(),
        role: node.role,
        token: topology.token.clone(),
        data_dir: (node.role != Role::Frontend).then(|| topology.data_dir(node)),
        raft_store: match (topology.replication, topology.store) {
            (Replication::Raft, StoreKind::Sqlite) => store_file(topology, node),
            _ => None,
        },
    };
    let limits = limits(topology);
    let addr = listener.local_addr().map_err(|source| NodeError::Bind {
        addr: node.addr,
        source,
    })?;
    let tls = {
        let (topology, name) = (topology.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || NodeTls::of(&topology, &name)).await??
    };
    tracing::info!(%addr, role = %node.role, tls = tls.is_some(), "starting");
    let serving = Serving {
        listener,
        limits,
        acceptor: tls.as_ref().map(|tls| tls.acceptor.clone()),
    };
    let tls = tls.as_ref();
    match node.role {
        Role::Frontend => {
            let (handler, background) = frontend_node(topology, info, tls)?;
            serving.serve(handler, background, shutdown).await;
        }
        Role::Catalog => {
            let (handler, background) = catalog_node(topology, node, info, tls).await?;
            serving.serve(handler, background, shutdown).await;
        }
        Role::Order => {
            let (handler, background) = order_node(topology, node, info, tls).await?;
            serving.serve(handler, background, shutdown).await;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Where and how a node serves: its listener, its limits, its TLS.
struct Serving {
    listener: TcpListener,
    limits: Limits,
    acceptor: Option<TlsAcceptor>,
}

impl Serving {
    /// Serves `handler` until `shutdown` completes, with the node's
    /// `background` work running: every task started at once, into one
    /// set, and stopped together once the server has drained.
    async fn serve<H: Handler>(
        self,
        handler: Arc<H>,
        background: Background,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut tasks = background.start();
        serve(self.listener, handler, self.limits, self.acceptor, shutdown).await;
        tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An order replica starts only under the number of order shards its
    /// store was founded under, kept across a reopen of its file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_order_replica_keeps_the_order_shards_it_was_founded_under() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || {
            let path = dir.path().join("orders.db");
            async move {
                tokio::task::spawn_blocking(move || SqliteJournal::<OrderMachine>::open(path))
                    .await
                    .expect("task")
                    .expect("open")
            }
        };
        let store = open().await;
        keep_order_shards(&store, 2).await.expect("founded under 2");
        keep_order_shards(&store, 2).await.expect("the same count");
        drop(store);
        let reopened = open().await;
        let refused = keep_order_shards(&reopened, 3)
            .await
            .expect_err("3 after 2");
        assert!(refused.to_string().contains("founded under 2"), "{refused}");
        keep_order_shards(&reopened, 2)
            .await
            .expect("its own count");
    }

    /// More clients than a backlog of 128 would hold connect at once,
    /// before the node accepts any: the kernel completes every handshake.
    #[tokio::test]
    async fn a_burst_of_new_connections_fits_the_backlog() {
        let listener = bind(([127, 0, 0, 1], 0).into()).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connects = (0..300).map(|_| {
            tokio::spawn(async move {
                // A dropped handshake is retried after a second: this
                // waits less.
                tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
            })
        });
        let mut streams = Vec::new();
        for connect in connects.collect::<Vec<_>>() {
            if let Ok(Ok(stream)) = connect.await.expect("task") {
                streams.push(stream);
            }
        }
        assert_eq!(streams.len(), 300);
        drop(listener);
    }
}
