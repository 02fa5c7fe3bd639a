//! The harness of the integration tests: a real cluster on 127.0.0.1:0,
//! with its data in a temporary directory, driven through the SDK.
#![allow(dead_code)] // each test file uses a part of it

use std::net::SocketAddr;
use std::time::Duration;

use pygmy_client::{CatalogClient, Client, ClientOptions, OrderClient};
use pygmy_core::types::{Book, ItemId};
use pygmy_server::config::{NodeConfig, Role, StoreKind, Topology};
use pygmy_server::Cluster;

pub const TOKEN: &str = "test-cluster-token";

/// How to build the test cluster.
pub struct Options {
    pub catalogs: usize,
    pub orders: usize,
    pub token: Option<String>,
    /// Stock of every book (None: the seed's 100).
    pub stock: Option<i64>,
    pub store: StoreKind,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            catalogs: 2,
            orders: 2,
            token: Some(TOKEN.to_owned()),
            stock: None,
            store: StoreKind::Sqlite,
        }
    }
}

pub struct TestCluster {
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn topology(options: &Options, dir: &std::path::Path) -> Topology {
    let mut topology = Topology::default_local();
    topology.log_dir = dir.join("logs");
    topology.token = options.token.clone();
    topology.store = options.store;
    let node = |name: String, role| NodeConfig {
        data_dir: (role != Role::Frontend).then(|| dir.join("data").join(&name)),
        name,
        role,
        addr: any_port(),
        catalog: None,
    };
    topology.nodes = vec![node("frontend".to_owned(), Role::Frontend)];
    for i in 0..options.catalogs {
        topology
            .nodes
            .push(node(format!("catalog-{i}"), Role::Catalog));
    }
    for i in 0..options.orders {
        topology.nodes.push(node(format!("order-{i}"), Role::Order));
    }
    if let Some(stock) = options.stock {
        let books: Vec<Book> = pygmy_core::types::default_books()
            .into_iter()
            .map(|mut b| {
                b.count = stock;
                b
            })
            .collect();
        let text = toml::to_string(&BookFile { book: books }).expect("books serialize");
        let path = dir.join("books.toml");
        std::fs::write(&path, text).expect("write books");
        topology.catalog_file = Some(path);
    }
    topology
}

#[derive(serde::Serialize)]
struct BookFile {
    book: Vec<Book>,
}

impl TestCluster {
    pub async fn start(options: Options) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let topology = topology(&options, dir.path());
        let cluster = Cluster::start(topology).await.expect("cluster starts");
        cluster
            .wait_healthy(Duration::from_secs(10))
            .await
            .expect("cluster healthy");
        TestCluster { cluster, dir }
    }

    pub fn url(&self, name: &str) -> String {
        self.cluster.url(name).expect("node exists")
    }

    pub fn store(&self) -> Client {
        Client::new(&self.url("frontend")).expect("client")
    }

    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            token: self.cluster.topology().token.clone(),
            ..ClientOptions::default()
        }
    }

    pub fn catalog(&self, name: &str) -> CatalogClient {
        CatalogClient::new(&self.url(name), &self.options()).expect("client")
    }

    pub fn order(&self, name: &str) -> OrderClient {
        OrderClient::new(&self.url(name), &self.options()).expect("client")
    }

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

    pub async fn shutdown(self) {
        self.cluster.shutdown().await.expect("clean shutdown");
    }
}
