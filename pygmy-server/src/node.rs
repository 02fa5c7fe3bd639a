//! Building a node from the topology and running it; [`Cluster`] runs many
//! nodes in one process (the all-in-one mode, and the tests' harness).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use pygmy_client::http::{pooled, Http};
use pygmy_client::{CatalogClient, ClientError, ClientOptions, InternalClient, OrderClient};
use pygmy_core::api::HealthResponse;
use pygmy_core::balance::{Balancer, HealthPolicy, LeastLoaded, Replicas, RoundRobin};
use pygmy_core::cache::{Cache, LruCache, NoCache};
use pygmy_core::catalog::memory::MemoryCatalog;
use pygmy_core::catalog::sqlite::SqliteCatalog;
use pygmy_core::catalog::{CatalogMachine, CatalogStore};
use pygmy_core::journal::sqlite::{SqliteJournal, SqliteMachine};
use pygmy_core::journal::{Journal, Machine};
use pygmy_core::order::memory::MemoryOrders;
use pygmy_core::order::sqlite::SqliteOrders;
use pygmy_core::order::{OrderMachine, OrderStore};
use pygmy_core::replication::broadcast::{Broadcast, BroadcastConfig};
use pygmy_core::replication::raft::{RaftConfig, RaftReplicator};
use pygmy_core::replication::Replicator;
use pygmy_core::StoreError;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::api::{json, json_bytes, ApiError, ApiResult, Request, Response};
use crate::catalog::CatalogNode;
use crate::config::{
    BalancerKind, ConfigError, NodeConfig, Replication, Role, StoreKind, Topology,
};
use crate::frontend::{Backend, FrontendNode};
use crate::order::OrderNode;
use crate::server::{serve, Limits};
use crate::transport::HttpTransport;

/// Who a node is: what its handlers need to know of themselves.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its name in the topology.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The cluster token its internal endpoints demand.
    pub token: Option<String>,
}

/// `GET /health`: 200 once the node serves, 503 while it catches up.
pub fn health(identity: &Identity, ready: bool) -> Response {
    let body = HealthResponse {
        node: identity.name.clone(),
        role: identity.role.to_string(),
        state: if ready { "ok" } else { "catching_up" }.to_owned(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &body)
}

/// A known path with the wrong method.
pub fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::MethodNotAllowed(method.clone())
}

/// An unknown path.
pub fn route_not_found(req: &Request) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: /{}", req.segments.join("/")))
}

/// `POST /replication/<rpc>` (internal): a peer's call to the replicator.
pub async fn replication_call<M: Machine>(
    identity: &Identity,
    replicator: &dyn Replicator<M>,
    rpc: &str,
    req: &Request,
) -> ApiResult {
    req.authorize(identity.token.as_deref())?;
    let answer = replicator.handle(rpc, &req.body).await?;
    Ok(json_bytes(StatusCode::OK, answer.into()))
}

/// A client that asks a node for its `/health` (any role).
pub fn health_client(url: &str) -> Result<InternalClient, ClientError> {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
        token: None,
    };
    InternalClient::new(url, &options)
}

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
    /// A node stopped on its own.
    #[error("node {0} stopped")]
    Stopped(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds a node's address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { addr, source })
}

fn client_options(topology: &Topology) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        timeout: Duration::from_secs(10),
        token: topology.token.clone(),
    }
}

fn limits(topology: &Topology) -> Limits {
    Limits {
        max_body: topology.max_body_bytes,
        max_internal_body: Limits::default()
            .max_internal_body
            .max(topology.max_body_bytes),
        read_timeout: Duration::from_millis(topology.read_timeout_ms),
        ..Limits::default()
    }
}

/// Clients of every node of `role`, over one shared pool.
fn clients<C>(
    topology: &Topology,
    role: Role,
    pool: &reqwest::Client,
    make: impl Fn(Http) -> C,
) -> Result<Vec<(String, C)>, NodeError> {
    topology
        .urls(role)
        .into_iter()
        .map(|(name, url)| {
            let http = Http::with_client(pool.clone(), &url, topology.token.clone())?;
            Ok((name, make(http)))
        })
        .collect()
}

/// The SQLite journal of a backend and its file, when it has one (the
/// `raft` log lives in the same file).
type SqliteParts<M> = Option<(Arc<SqliteJournal<M>>, PathBuf)>;

async fn replicator<M: SqliteMachine>(
    topology: &Topology,
    node: &NodeConfig,
    journal: Arc<dyn Journal<M>>,
    sqlite: SqliteParts<M>,
    pool: &reqwest::Client,
) -> Result<Arc<dyn Replicator<M>>, NodeError> {
    let peers = clients(topology, node.role, pool, InternalClient::from_http)?;
    let names = peers.iter().map(|(name, _)| name.clone()).collect();
    let transport = Arc::new(HttpTransport::new(peers));
    match topology.replication {
        Replication::Broadcast => {
            let config = BroadcastConfig::new(node.name.clone(), names);
            Ok(Arc::new(Broadcast::start(config, journal, transport)?))
        }
        Replication::Raft => {
            let (journal, path) = sqlite.ok_or_else(|| {
                ConfigError::Invalid(
                    "raft keeps its log in SQLite: set store = \"sqlite\"".to_owned(),
                )
            })?;
            let config = RaftConfig::new(node.name.clone(), names);
            Ok(Arc::new(
                RaftReplicator::start(config, journal, &path, transport).await?,
            ))
        }
    }
}

async fn open_blocking<T: Send + 'static>(
    open: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(open).await?
}

async fn catalog_node(
    topology: &Topology,
    node: &NodeConfig,
    identity: Identity,
) -> Result<CatalogNode, NodeError> {
    let (store, sqlite): (Arc<dyn CatalogStore>, SqliteParts<CatalogMachine>) = match topology.store
    {
        StoreKind::Sqlite => {
            let path = topology.data_dir(node).join("catalog.db");
            let opened = path.clone();
            let store = Arc::new(open_blocking(move || SqliteCatalog::open(opened)).await?);
            (store.clone(), Some((store, path)))
        }
        StoreKind::Memory => (Arc::new(MemoryCatalog::new()), None),
    };
    let books = {
        let topology = topology.clone();
        tokio::task::spawn_blocking(move || topology.books())
            .await
            .map_err(StoreError::from)??
    };
    if store.seed(books).await? {
        tracing::info!("seeded a new catalog");
    }
    let pool = pooled(&client_options(topology))?;
    let journal: Arc<dyn Journal<CatalogMachine>> = store.clone();
    let replicator = replicator(topology, node, journal, sqlite, &pool).await?;
    let frontends = clients(topology, Role::Frontend, &pool, InternalClient::from_http)?;
    Ok(CatalogNode::new(identity, store, replicator, frontends))
}

async fn order_node(
    topology: &Topology,
    node: &NodeConfig,
    identity: Identity,
) -> Result<OrderNode, NodeError> {
    let (store, sqlite): (Arc<dyn OrderStore>, SqliteParts<OrderMachine>) = match topology.store {
        StoreKind::Sqlite => {
            let path = topology.data_dir(node).join("orders.db");
            let opened = path.clone();
            let store = Arc::new(open_blocking(move || SqliteOrders::open(opened)).await?);
            (store.clone(), Some((store, path)))
        }
        StoreKind::Memory => (Arc::new(MemoryOrders::new()), None),
    };
    let pool = pooled(&client_options(topology))?;
    let journal: Arc<dyn Journal<OrderMachine>> = store.clone();
    let replicator = replicator(topology, node, journal, sqlite, &pool).await?;
    // The preferred catalog replica first, then the others in file order.
    let preferred = topology.preferred_catalog(node);
    let mut catalogs = clients(topology, Role::Catalog, &pool, CatalogClient::from_http)?;
    catalogs.sort_by_key(|(name, _)| Some(name) != preferred.as_ref());
    let catalogs = catalogs.into_iter().map(|(_, client)| client).collect();
    Ok(OrderNode::new(identity, store, replicator, catalogs))
}

/// The replicas of `role` and a client of each, over one pool.
fn backend<C>(
    topology: &Topology,
    role: Role,
    pool: &reqwest::Client,
    make: impl Fn(Http) -> C,
) -> Result<Backend<C>, NodeError> {
    let clients = clients(topology, role, pool, make)?;
    let replicas = Replicas::new(topology.urls(role), HealthPolicy::default());
    let balancer: Box<dyn Balancer> = match topology.balancer {
        BalancerKind::RoundRobin => Box::new(RoundRobin::default()),
        BalancerKind::LeastLoaded => Box::new(LeastLoaded::default()),
    };
    let clients = clients.into_iter().map(|(_, c)| c).collect();
    Ok(Backend::new(replicas, clients, balancer))
}

fn frontend_node(topology: &Topology, identity: Identity) -> Result<FrontendNode, NodeError> {
    let pool = pooled(&client_options(topology))?;
    let catalogs = backend(topology, Role::Catalog, &pool, CatalogClient::from_http)?;
    let orders = backend(topology, Role::Order, &pool, OrderClient::from_http)?;
    let cache: Arc<dyn Cache> = match NonZeroUsize::new(topology.cache.capacity) {
        Some(capacity) => Arc::new(LruCache::new(
            capacity,
            Duration::from_millis(topology.cache.ttl_ms),
        )),
        None => Arc::new(NoCache::default()),
    };
    Ok(FrontendNode::new(identity, cache, catalogs, orders))
}

/// Builds node `name` of `topology` and serves it on `listener` until
/// `shutdown` completes.
pub async fn run_node(
    topology: &Topology,
    name: &str,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let node = topology
        .node(name)
        .ok_or_else(|| ConfigError::UnknownNode(name.to_owned()))?;
    let identity = Identity {
        name: node.name.clone(),
        role: node.role,
        token: topology.token.clone(),
    };
    let limits = limits(topology);
    let addr = listener.local_addr().map_err(|source| NodeError::Bind {
        addr: node.addr,
        source,
    })?;
    tracing::info!(%addr, role = %node.role, "starting");
    match node.role {
        Role::Frontend => {
            let handler = Arc::new(frontend_node(topology, identity)?);
            let probe = tokio::spawn(Arc::clone(&handler).probe_forever().in_current_span());
            serve(listener, handler, limits, shutdown).await;
            probe.abort();
        }
        Role::Catalog => {
            let handler = Arc::new(catalog_node(topology, node, identity).await?);
            serve(listener, handler, limits, shutdown).await;
        }
        Role::Order => {
            let handler = Arc::new(order_node(topology, node, identity).await?);
            let reconciler = tokio::spawn(
                handler
                    .as_ref()
                    .clone()
                    .reconcile_forever()
                    .in_current_span(),
            );
            serve(listener, handler, limits, shutdown).await;
            reconciler.abort();
        }
    }
    tracing::info!("stopped");
    Ok(())
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), NodeError>>,
}

/// Many nodes of one topology, running in this process.
pub struct Cluster {
    topology: Topology,
    running: HashMap<String, Running>,
}

impl Cluster {
    /// Binds every node's address first (a port 0 becomes a free port,
    /// written back into the topology, so that the nodes find each other),
    /// then starts them all.
    pub async fn start(mut topology: Topology) -> Result<Cluster, NodeError> {
        let mut listeners = Vec::new();
        for node in &mut topology.nodes {
            let listener = bind(node.addr).await?;
            node.addr = listener.local_addr().map_err(|source| NodeError::Bind {
                addr: node.addr,
                source,
            })?;
            listeners.push((node.name.clone(), listener));
        }
        let mut cluster = Cluster {
            topology,
            running: HashMap::new(),
        };
        for (name, listener) in listeners {
            cluster.spawn(&name, listener);
        }
        Ok(cluster)
    }

    fn spawn(&mut self, name: &str, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let topology = self.topology.clone();
        let node = name.to_owned();
        let span = tracing::info_span!("node", node = %name);
        let task = tokio::spawn(
            async move {
                let result = run_node(&topology, &node, listener, async {
                    let _ = stopped.await;
                })
                .await;
                if let Err(err) = &result {
                    tracing::error!(%err, "node failed");
                }
                result
            }
            .instrument(span),
        );
        self.running.insert(name.to_owned(), Running { stop, task });
    }

    /// The topology, with the addresses actually bound.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// `http://addr` of node `name`.
    pub fn url(&self, name: &str) -> Option<String> {
        self.topology
            .node(name)
            .map(|n| format!("http://{}", n.addr))
    }

    /// Waits until every running node answers `/health` with 200, at most
    /// `timeout`.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        for name in self.running.keys() {
            let url = self.url(name).ok_or_else(|| format!("no node {name}"))?;
            let client = health_client(&url).map_err(|e| e.to_string())?;
            loop {
                if client.health().await.is_ok() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("{name} is not healthy after {timeout:?}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Stops node `name` gracefully (it finishes the requests under way,
    /// then closes every connection; its peers then find it refusing
    /// connections) and waits until it has stopped.
    pub async fn stop_node(&mut self, name: &str) -> Result<(), NodeError> {
        match self.running.remove(name) {
            Some(running) => stop(name, running).await,
            None => Ok(()),
        }
    }

    /// Starts node `name` again on its address, over its data.
    pub async fn restart_node(&mut self, name: &str) -> Result<(), NodeError> {
        self.stop_node(name).await?;
        let addr = self
            .topology
            .node(name)
            .ok_or_else(|| ConfigError::UnknownNode(name.to_owned()))?
            .addr;
        let listener = bind(addr).await?;
        self.spawn(name, listener);
        Ok(())
    }

    /// Runs until `signal` completes, or until a node fails (a store that
    /// cannot be opened, say), then stops every node.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), NodeError> {
        let mut signal = std::pin::pin!(signal);
        loop {
            let failed = self
                .running
                .iter()
                .find(|(_, running)| running.task.is_finished())
                .map(|(name, _)| name.clone());
            if let Some(name) = failed {
                let running = self.running.remove(&name);
                let result = match running {
                    Some(running) => stop(&name, running).await,
                    None => Ok(()),
                };
                let _ = self.shutdown().await;
                return match result {
                    Ok(()) => Err(NodeError::Stopped(name)),
                    Err(err) => Err(err),
                };
            }
            tokio::select! {
                () = &mut signal => return self.shutdown().await,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Stops every node; the first error of any node, if one failed.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let mut first = Ok(());
        for (name, running) in self.running.drain() {
            let result = stop(&name, running).await;
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

async fn stop(name: &str, running: Running) -> Result<(), NodeError> {
    let _ = running.stop.send(());
    match running.task.await {
        Ok(result) => result,
        Err(err) => {
            tracing::error!(node = %name, %err, "node task panicked");
            Ok(())
        }
    }
}
