//! A harness for tests: a real cluster on loopback (on ports below the
//! kernel's ephemeral range), with its data in a temporary directory, and
//! typed clients of each of its nodes. Used by this crate's integration
//! tests and by `pygmy-client`'s.

use std::net::SocketAddr;
use std::time::Duration;

use pygmy_client::{CatalogClient, Client, ClientOptions, OrderClient};
use pygmy_core::topology::{NodeConfig, Role, ShardConfig, StoreKind, Topology};
use pygmy_core::types::{Book, ItemId};

use crate::Cluster;

pub mod netns;
mod ports;

/// The cluster token of test clusters.
pub const TOKEN: &str = "test-cluster-token";

/// How to build the test cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Catalog replicas.
    pub catalogs: usize,
    /// Order replicas.
    pub orders: usize,
    /// The cluster token (default [`TOKEN`]; `None`: generated at first
    /// start, as a cluster with none in its topology does).
    pub token: Option<String>,
    /// Stock of every book (None: the seed's 100).
    pub stock: Option<i64>,
    /// Where the backends keep their data.
    pub store: StoreKind,
    /// How the backends replicate.
    pub replication: pygmy_core::topology::Replication,
    /// Books added to the seed's seven (topic `archive`, long titles), to
    /// make a large store.
    pub extra_books: usize,
    /// `raft_snapshot_every` and `raft_keep_logs`, if not the defaults.
    pub snapshots: Option<(u64, u64)>,
    /// Every backend replica's `max_format` (the newest raft entry format
    /// it reads), if not its build's newest.
    pub max_format: Option<u32>,
    /// The shards of each backend service (none: one each). With shards,
    /// `catalogs` and `orders` count the replicas of each shard.
    pub shards: Option<TestShards>,
}

/// The shards of a test cluster: the catalog split at `catalog_splits`
/// (the first item of each shard after the first), and `orders` order
/// shards. The replicas keep the names `catalog-<i>` and `order-<i>`,
/// numbered on across the shards in order.
#[derive(Debug, Clone, Default)]
pub struct TestShards {
    /// The first item of each catalog shard after the first.
    pub catalog_splits: Vec<i64>,
    /// Order shards.
    pub orders: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            catalogs: 2,
            orders: 2,
            token: Some(TOKEN.to_owned()),
            stock: None,
            store: StoreKind::Sqlite,
            replication: pygmy_core::topology::Replication::Broadcast,
            extra_books: 0,
            snapshots: None,
            max_format: None,
            shards: None,
        }
    }
}

impl Options {
    /// The default store's shape: `raft`, three catalog and three order
    /// replicas.
    pub fn raft() -> Self {
        Options {
            catalogs: 3,
            orders: 3,
            replication: pygmy_core::topology::Replication::Raft,
            ..Options::default()
        }
    }
}

/// A running test cluster; its directory is removed when it drops.
pub struct TestCluster {
    /// The nodes.
    pub cluster: Cluster,
    /// Data and logs.
    pub dir: tempfile::TempDir,
}

/// A free port on 127.0.0.1 for a test node, from [`ports`]: never one the
/// kernel hands out as the source port of an outgoing connection, so a node
/// stopped and started again finds its port still free.
fn any_port() -> SocketAddr {
    ports::take().unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// The topology of a test cluster: a frontend, then `catalog-<i>` and
/// `order-<i>` replicas, each on a free port of its own, with data and logs
/// under `dir`.
pub fn topology(options: &Options, dir: &std::path::Path) -> Topology {
    let mut topology = Topology::default_local();
    topology.log_dir = dir.join("logs");
    topology.token = options.token.clone();
    // With no token set, the cluster generates one here at first start.
    topology.token_file = Some(dir.join("data").join("cluster.token"));
    topology.store = options.store;
    topology.replication = options.replication;
    let node = |name: String, role| NodeConfig {
        data_dir: (role != Role::Frontend).then(|| dir.join("data").join(&name)),
        name,
        role,
        addr: any_port(),
        catalog: None,
        max_format: options.max_format.filter(|_| role != Role::Frontend),
        shard: None,
    };
    topology.nodes = vec![node("frontend".to_owned(), Role::Frontend)];
    let (catalog_shards, order_shards) = match &options.shards {
        Some(shards) => {
            topology.shards = test_shards(shards);
            (shards.catalog_splits.len() + 1, shards.orders.max(1))
        }
        None => (1, 1),
    };
    for (role, shards, replicas) in [
        (Role::Catalog, catalog_shards, options.catalogs),
        (Role::Order, order_shards, options.orders),
    ] {
        let names = topology.shard_names(role);
        for shard in 0..shards {
            for i in 0..replicas {
                let mut replica = node(format!("{role}-{}", shard * replicas + i), role);
                replica.shard = options.shards.as_ref().and(names.get(shard).cloned());
                topology.nodes.push(replica);
            }
        }
    }
    if let Some((every, keep)) = options.snapshots {
        topology.raft_snapshot_every = every;
        topology.raft_keep_logs = keep;
    }
    if options.stock.is_some() || options.extra_books > 0 {
        let mut books = pygmy_core::types::default_books();
        if let Some(stock) = options.stock {
            for book in &mut books {
                book.count = stock;
            }
        }
        let cost = books[0].cost;
        books.extend((0..options.extra_books).map(|i| archive_book(i, cost)));
        let text = toml::to_string(&BookFile { book: books }).unwrap_or_default();
        let path = dir.join("books.toml");
        if let Err(err) = std::fs::write(&path, text) {
            panic!("cannot write {}: {err}", path.display());
        }
        topology.catalog_file = Some(path);
    }
    topology
}

/// The `[[shard]]` tables of `shards`: `catalog-s<i>` and `order-s<i>`.
fn test_shards(shards: &TestShards) -> Vec<ShardConfig> {
    let catalogs = (0..=shards.catalog_splits.len()).map(|i| ShardConfig {
        name: format!("catalog-s{i}"),
        role: Role::Catalog,
        first_item: i
            .checked_sub(1)
            .and_then(|s| shards.catalog_splits.get(s))
            .map(|first| ItemId(*first)),
    });
    let orders = (0..shards.orders.max(1)).map(|i| ShardConfig {
        name: format!("order-s{i}"),
        role: Role::Order,
        first_item: None,
    });
    catalogs.chain(orders).collect()
}

/// Book `i` of the archive that makes a store large: about 200 bytes.
fn archive_book(i: usize, cost: pygmy_core::types::Cost) -> Book {
    Book {
        id: ItemId(1_000 + i as i64),
        title: format!(
            "Collected papers on replication, consensus and recovery, volume {i}: \
             proceedings of the workshop on keeping many copies of one book store \
             honest under crashes, freezes and partitions"
        ),
        topic: "archive".to_owned(),
        cost,
        count: 10,
    }
}

#[derive(serde::Serialize)]
struct BookFile {
    book: Vec<Book>,
}

impl TestCluster {
    /// Starts a cluster and waits until every node is ready. Panics if it
    /// cannot: this is for tests.
    pub async fn start(options: Options) -> TestCluster {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(err) => panic!("cannot make a temporary directory: {err}"),
        };
        let topology = topology(&options, dir.path());
        let cluster = Cluster::start(topology).await.expect("cluster starts");
        cluster
            .wait_ready(Duration::from_secs(10))
            .await
            .expect("cluster ready");
        TestCluster { cluster, dir }
    }

    /// `http://addr` of node `name`.
    pub fn url(&self, name: &str) -> String {
        self.cluster.url(name).expect("node exists")
    }

    /// The topology the cluster runs (with the ports it was given).
    pub fn topology(&self) -> &Topology {
        self.cluster.topology()
    }

    /// A client of the frontend.
    pub fn store(&self) -> Client {
        Client::new(&self.url("frontend")).expect("client")
    }

    /// Client options with the cluster's token.
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            token: self.cluster.topology().token.clone(),
            ..ClientOptions::default()
        }
    }

    /// A client of catalog replica `name`.
    pub fn catalog(&self, name: &str) -> CatalogClient {
        CatalogClient::new(&self.url(name), &self.options()).expect("client")
    }

    /// A client of order replica `name`.
    pub fn order(&self, name: &str) -> OrderClient {
        OrderClient::new(&self.url(name), &self.options()).expect("client")
    }

    /// The names of the nodes of `role`.
    pub fn names(&self, role: Role) -> Vec<String> {
        self.cluster
            .topology()
            .of_role(role)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Stock of `item` on every catalog replica, in order.
    pub async fn stocks(&self, item: ItemId) -> Vec<i64> {
        let mut stocks = Vec::new();
        for name in self.names(Role::Catalog) {
            stocks.push(
                self.catalog(&name)
                    .item(item)
                    .await
                    .expect("read stock")
                    .count,
            );
        }
        stocks
    }

    /// Waits until `check` holds, at most 10 s (replicas converge
    /// asynchronously after a failure).
    pub async fn eventually<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..500 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what} did not happen within 10 s");
    }

    /// Stops every node; panics if one failed.
    pub async fn shutdown(self) {
        self.cluster.shutdown().await.expect("clean shutdown");
    }
}

/// A cluster of real `pygmy-server --node` processes on loopback, for fault
/// tests: a node can be killed (SIGKILL), frozen (SIGSTOP), thawed and
/// restarted. Every process is killed when this drops.
pub struct ProcessCluster {
    binary: std::path::PathBuf,
    topology: Topology,
    path: std::path::PathBuf,
    children: std::collections::HashMap<String, std::process::Child>,
    /// The topology file of each node added after the start (the others
    /// run `path`'s).
    files: std::collections::HashMap<String, std::path::PathBuf>,
    /// The arguments each node is started with beyond its topology and
    /// name ([`ProcessCluster::spawn_with`]).
    args: std::collections::HashMap<String, Vec<String>>,
    /// Each node in a network namespace of its own, if asked for.
    network: Option<netns::Network>,
    /// Data, logs and the topology file.
    pub dir: tempfile::TempDir,
}

impl ProcessCluster {
    /// Writes the topology of `options` (with real ports) and starts every
    /// node of it as a process of `binary` on loopback; waits until all are
    /// healthy.
    pub async fn start(binary: &std::path::Path, options: Options) -> ProcessCluster {
        Self::launch(binary, options, false).await
    }

    /// As [`ProcessCluster::start`], but each node runs in a network
    /// namespace of its own, so that links can be [cut](Self::cut). Needs
    /// root and iproute2; panics without them.
    pub async fn start_in_namespaces(binary: &std::path::Path, options: Options) -> ProcessCluster {
        Self::launch(binary, options, true).await
    }

    async fn launch(
        binary: &std::path::Path,
        options: Options,
        namespaces: bool,
    ) -> ProcessCluster {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(err) => panic!("cannot make a temporary directory: {err}"),
        };
        let mut topology = topology(&options, dir.path());
        // With no token set, the one the nodes would generate, made here
        // (before the nodes move to namespaces beyond loopback): the
        // harness's clients need it too.
        if let Err(err) = topology.resolve_token(None, true) {
            panic!("cluster token: {err}");
        }
        let network = if namespaces {
            let names: Vec<String> = topology.nodes.iter().map(|n| n.name.clone()).collect();
            let network =
                netns::Network::create(&names).unwrap_or_else(|e| panic!("test network: {e}"));
            for node in &mut topology.nodes {
                let ip = network
                    .addr(&node.name)
                    .unwrap_or_else(|e| panic!("test network: {e}"));
                // Each namespace has ports of its own.
                node.addr = SocketAddr::from((ip, 8000));
            }
            Some(network)
        } else {
            // `topology` gave every node a port of its own already.
            None
        };
        let path = dir.path().join("cluster.toml");
        if let Err(err) = std::fs::write(&path, topology.to_toml()) {
            panic!("cannot write {}: {err}", path.display());
        }
        let mut cluster = ProcessCluster {
            binary: binary.to_path_buf(),
            topology,
            path,
            children: std::collections::HashMap::new(),
            files: std::collections::HashMap::new(),
            args: std::collections::HashMap::new(),
            network,
            dir,
        };
        cluster.spawn_all(Duration::from_secs(20)).await;
        cluster
    }

    /// The topology the processes run.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Client options with the cluster's token.
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            token: self.topology.token.clone(),
            ..ClientOptions::default()
        }
    }

    /// `http://addr` of node `name`.
    pub fn url(&self, name: &str) -> String {
        match self.topology.node(name) {
            Some(node) => format!("http://{}", node.addr),
            None => panic!("no node {name}"),
        }
    }

    /// The names of the nodes of `role`.
    pub fn names(&self, role: Role) -> Vec<String> {
        self.topology
            .of_role(role)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Starts node `name`'s process (over its existing data).
    pub fn spawn(&mut self, name: &str) {
        let log = |suffix: &str| {
            let path = self.dir.path().join(format!("{name}.{suffix}"));
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
        };
        let mut command = match &self.network {
            // `ip netns exec` execs the node: the child is the node.
            Some(network) => {
                let namespace = network
                    .namespace(name)
                    .unwrap_or_else(|e| panic!("test network: {e}"));
                let mut command = std::process::Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(&self.binary);
                command
            }
            None => std::process::Command::new(&self.binary),
        };
        let file = self.files.get(name).unwrap_or(&self.path);
        let child = command
            .arg("--config")
            .arg(file)
            .arg("--node")
            .arg(name)
            .args(self.args.get(name).into_iter().flatten())
            .current_dir(self.dir.path())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.children.insert(name.to_owned(), child);
    }

    /// Starts node `name` with `args` added from now on (each start after
    /// this one too), as a newer build of it or with another setting.
    pub fn spawn_with(&mut self, name: &str, args: &[&str]) {
        self.args.insert(
            name.to_owned(),
            args.iter().map(|a| (*a).to_owned()).collect(),
        );
        self.spawn(name);
    }

    /// Stops node `name` as an operator does, with SIGTERM, and waits for
    /// it to exit (at most 10 s, then SIGKILL: a node that does not stop
    /// when asked fails the test).
    pub async fn stop(&mut self, name: &str) {
        self.signal(name, "-TERM");
        let Some(mut child) = self.children.remove(name) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{name} did not stop within 10 s of SIGTERM");
                }
            }
        }
    }

    /// Runs `pygmy-server --config FILE --node name` with `args` once (a
    /// command that exits, as `--force-new-cluster`), on loopback, and
    /// answers its output.
    pub fn run_once(&self, name: &str, args: &[&str]) -> std::process::Output {
        let file = self.files.get(name).unwrap_or(&self.path);
        std::process::Command::new(&self.binary)
            .arg("--config")
            .arg(file)
            .arg("--node")
            .arg(name)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()))
    }

    /// Adds a replica `name` of `role` (a free port, a data directory of
    /// its own) and starts it with a topology file of its own that names
    /// it and every node before it, as an operator does before
    /// `pygmy-client members add`: the running nodes keep the file they
    /// started with. Not in a cluster in namespaces.
    pub fn add_replica(&mut self, role: Role, name: &str) {
        if self.network.is_some() {
            panic!("replicas are added only to a cluster on loopback");
        }
        let addr = any_port();
        self.topology.nodes.push(NodeConfig {
            name: name.to_owned(),
            role,
            addr,
            data_dir: Some(self.dir.path().join("data").join(name)),
            catalog: None,
            max_format: None,
            shard: None,
        });
        let path = self.dir.path().join(format!("{name}.toml"));
        if let Err(err) = std::fs::write(&path, self.topology.to_toml()) {
            panic!("cannot write {}: {err}", path.display());
        }
        self.files.insert(name.to_owned(), path);
        self.spawn(name);
    }

    /// Kills node `name` and drops it from the topology this harness
    /// heals and checks (a replica removed from its service).
    pub fn forget(&mut self, name: &str) {
        self.kill(name);
        self.topology.nodes.retain(|node| node.name != name);
    }

    /// Kills node `name` with SIGKILL, as a crash: nothing is flushed or
    /// answered.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.children.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts every node (over its existing data), and waits until all
    /// serve, at most `timeout` each.
    pub async fn spawn_all(&mut self, timeout: Duration) {
        let names: Vec<String> = self.topology.nodes.iter().map(|n| n.name.clone()).collect();
        for name in &names {
            self.spawn(name);
        }
        for name in &names {
            self.wait_ready(name, timeout).await;
        }
    }

    /// Kills every node at once (SIGKILL), as a power loss.
    pub fn kill_all(&mut self) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for name in names {
            self.kill(&name);
        }
    }

    /// Kills node `name` (SIGKILL) and deletes its data directory, as the
    /// loss of its disk.
    pub fn wipe(&mut self, name: &str) {
        self.kill(name);
        let Some(node) = self.topology.node(name) else {
            panic!("no node {name}");
        };
        let data = self.topology.data_dir(node);
        if let Err(err) = std::fs::remove_dir_all(&data) {
            if err.kind() != std::io::ErrorKind::NotFound {
                panic!("cannot delete {}: {err}", data.display());
            }
        }
    }

    /// The peak resident memory of node `name`'s process so far, in bytes
    /// (Linux's `VmHWM`); `None` if it is not running or not on Linux.
    pub fn peak_rss(&self, name: &str) -> Option<u64> {
        let child = self.children.get(name)?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Freezes node `name` (SIGSTOP): its sockets stay open, nothing answers.
    pub fn freeze(&self, name: &str) {
        self.signal(name, "-STOP");
    }

    /// Cuts the network link between nodes `a` and `b`, both ways (only in
    /// a cluster [started in namespaces](Self::start_in_namespaces)).
    pub fn cut(&self, a: &str, b: &str) {
        self.net()
            .cut(a, b)
            .unwrap_or_else(|e| panic!("cut {a} from {b}: {e}"));
    }

    /// Heals a cut made by [`ProcessCluster::cut`].
    pub fn heal(&self, a: &str, b: &str) {
        self.net()
            .heal(a, b)
            .unwrap_or_else(|e| panic!("heal {a} to {b}: {e}"));
    }

    fn net(&self) -> &netns::Network {
        match &self.network {
            Some(network) => network,
            None => panic!("links can be cut only in a cluster started in namespaces"),
        }
    }

    /// Thaws a frozen node (SIGCONT).
    pub fn thaw(&self, name: &str) {
        self.signal(name, "-CONT");
    }

    fn signal(&self, name: &str, signal: &str) {
        if let Some(child) = self.children.get(name) {
            let status = std::process::Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status();
            if !status.is_ok_and(|s| s.success()) {
                panic!("kill {signal} {name} failed");
            }
        }
    }

    /// Waits until node `name` answers `/ready` with 200.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) {
        let client = match crate::node::probe_client(&self.url(name), None) {
            Ok(client) => client,
            Err(err) => panic!("{err}"),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while client.ready().await.is_err() {
            if tokio::time::Instant::now() >= deadline {
                panic!("{name} is not ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A client of the frontend.
    pub fn store(&self) -> Client {
        Client::new(&self.url("frontend")).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test leaves its data and logs behind to be read.
            self.dir.disable_cleanup(true);
            eprintln!(
                "the cluster's data and logs are kept in {}",
                self.dir.path().display()
            );
        }
        let names: Vec<String> = self.children.keys().cloned().collect();
        for name in names {
            // A frozen process must be thawed to die promptly on some
            // systems; SIGKILL works on stopped processes on Linux anyway.
            self.kill(&name);
        }
    }
}
