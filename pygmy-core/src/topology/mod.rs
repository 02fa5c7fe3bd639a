//! The topology file: every node of a Pygmy cluster, and how they behave.
//! Read by the server (which runs it) and by the client's tools (which
//! find the replicas in it), so it lives here (with the `topology`
//! feature).
//!
//! One TOML file names each node (role, name, address, data dir) and the
//! cluster-wide settings; `docs/topology.md` documents every key, and
//! `examples/` has examples. [`Topology::default_local`] is the embedded
//! default that `pygmy-server` runs with no file.
//!
//! - this file: the schema, its defaults and its checks;
//! - [`token`]: the cluster token and the token file;
//! - `books.rs`: the books a catalog starts with (`catalog_file`).

mod books;
pub mod token;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::shard::{ItemRanges, KeyShards, MAX_ORDER_SHARDS};
use crate::types::ItemId;

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Serves `search`, `lookup` and `buy` to users, with a cache.
    Frontend,
    /// A replica of the catalog (books and stock).
    Catalog,
    /// A replica of the order service.
    Order,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Frontend => "frontend",
            Role::Catalog => "catalog",
            Role::Order => "order",
        })
    }
}

/// How a backend service replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replication {
    /// The seed's protocol, improved (see `pygmy_core::replication::broadcast`).
    Broadcast,
    /// Consensus on openraft (see `pygmy_core::replication::raft`): needs
    /// the SQLite store; a majority of each service's replicas must be up
    /// for writes. The default.
    #[default]
    Raft,
}

/// Where a backend keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// A SQLite file under the node's `data_dir`.
    #[default]
    Sqlite,
    /// In memory: lost at exit (tests, demos).
    Memory,
}

/// How the frontend spreads requests over replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    /// Each request starts at the next replica (the seed's).
    #[default]
    RoundRobin,
    /// The less loaded (fewer requests in flight) of two random replicas.
    LeastLoaded,
}

/// The frontend's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Keys kept at most; 0 turns the cache off.
    #[serde(default = "CacheConfig::default_capacity")]
    pub capacity: usize,
    /// Longest life of a cached value, in milliseconds (a backstop: changes
    /// invalidate at once).
    #[serde(default = "CacheConfig::default_ttl_ms")]
    pub ttl_ms: u64,
}

impl CacheConfig {
    fn default_capacity() -> usize {
        4096
    }
    fn default_ttl_ms() -> u64 {
        30_000
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: Self::default_capacity(),
            ttl_ms: Self::default_ttl_ms(),
        }
    }
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name: in logs, file names and replication.
    pub name: String,
    /// What it does.
    pub role: Role,
    /// Where it listens (and where the others reach it).
    pub addr: SocketAddr,
    /// Where a backend keeps its database (default `data/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// For an order replica: its preferred catalog replica (default: the
    /// catalog replica in the same position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// For a `raft` replica: the newest entry format it reads, and so lets
    /// its service write (default: the newest its build reads). Set to
    /// keep a way back to an older build during an upgrade
    /// (docs/operations.md, "Rolling upgrades"); `pygmy-server
    /// --max-format` sets it for the node it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_format: Option<u32>,
    /// For a backend node of a sharded service: the `[[shard]]` it is a
    /// replica of (its raft group). None when the service has one shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

/// One shard of a backend service (`[[shard]]`; docs/scaling.md, "Shards:
/// the design"): a raft group of its own, holding a range of item ids (a
/// catalog shard) or the buys whose key hashes to it (an order shard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Unique among the shards: the nodes name it with `shard`.
    pub name: String,
    /// The service it is a part of: `catalog` or `order`.
    pub role: Role,
    /// For a catalog shard after the first: the first item id it holds
    /// (it holds the ids up to the next shard's `first_item` less one;
    /// the first shard every id below the second's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_item: Option<ItemId>,
}

/// Where a cluster's certificates are (`[tls]`; docs/operations.md,
/// "TLS"). With it every node serves HTTPS and calls its peers over it,
/// and peers prove themselves by a certificate of the cluster's CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA's certificate (PEM): every node's and operator's
    /// certificate must be signed by it.
    pub ca: PathBuf,
    /// The directory of each node's certificate and key (PEM),
    /// `<name>.pem` and `<name>.key`, and the operator's, `client.pem`
    /// and `client.key` (`pygmy-server --make-certs` writes them all).
    pub cert_dir: PathBuf,
}

/// The certificate and key files of one holder (a node, or the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate.
    pub ca: PathBuf,
    /// The holder's certificate.
    pub cert: PathBuf,
    /// The holder's private key.
    pub key: PathBuf,
}

/// The name of the operator's certificate in `cert_dir` (what
/// `pygmy-client` presents to the nodes' internal endpoints).
pub const CLIENT_CERT_NAME: &str = "client";

/// A whole cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Where each node writes `<name>.log`.
    #[serde(default = "Topology::default_log_dir")]
    pub log_dir: PathBuf,
    /// The cluster token internal endpoints demand. When neither this nor
    /// `PYGMY_TOKEN` sets one, the nodes use the one kept in `token_file`,
    /// generated at first start if every node listens on loopback (see
    /// [`Topology::resolve_token`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Where a generated cluster token is kept (default
    /// `data/cluster.token`, beside the default data dirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A TOML file of books to start the catalog with (default: the seed's
    /// seven). Relative to the topology file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_file: Option<PathBuf>,
    /// Replication of both backend services.
    #[serde(default)]
    pub replication: Replication,
    /// Storage of both backend services.
    #[serde(default)]
    pub store: StoreKind,
    /// The frontend's balancer.
    #[serde(default)]
    pub balancer: BalancerKind,
    /// The frontend's cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Largest request body, in bytes.
    #[serde(default = "Topology::default_max_body")]
    pub max_body_bytes: usize,
    /// Longest time to receive a request, in milliseconds.
    #[serde(default = "Topology::default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Most connections a node keeps open at once (more wait in the
    /// kernel's backlog). 4,096 by default.
    #[serde(default = "Topology::default_max_connections")]
    pub max_connections: usize,
    /// Connections a node keeps apart, past `max_connections`, for
    /// requests with the cluster token (peers, operators): one that takes
    /// such a slot must send its headers within a second, and each of its
    /// requests must carry the token (others are answered 503 and the
    /// connection closed). 256 by default; 0 for none.
    #[serde(default = "Topology::default_peer_connections")]
    pub peer_connections: usize,
    /// Most bytes of request bodies a node holds at once, over all its
    /// connections (a request that finds no room within half of
    /// `read_timeout_ms` is answered 503). 64 MiB by default; never less
    /// than the largest body.
    #[serde(default = "Topology::default_max_body_in_flight_bytes")]
    pub max_body_in_flight_bytes: usize,
    /// How long, in seconds, a `raft` replica keeps the record of each op
    /// (what makes a retry with the same key or op id harmless); older
    /// records are deleted, so the database grows with the books and
    /// orders, not with the history. At least 60; a day by default.
    #[serde(default = "Topology::default_op_retention_s")]
    pub op_retention_s: u64,
    /// A `raft` replica builds a snapshot after this many log entries
    /// since its last one (and drops the log behind it, but the last
    /// `raft_keep_logs`). At least 100; 5,000 by default.
    #[serde(default = "Topology::default_raft_snapshot_every")]
    pub raft_snapshot_every: u64,
    /// Log entries a `raft` replica keeps behind its snapshot: a replica
    /// further behind catches up by snapshot. 1,000 by default.
    #[serde(default = "Topology::default_raft_keep_logs")]
    pub raft_keep_logs: u64,
    /// TLS between every pair of nodes, and for every client: none (plain
    /// HTTP) unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The shards of the backend services, in file order: none for a
    /// service of one shard.
    #[serde(rename = "shard", default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardConfig>,
    /// The nodes.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeConfig>,
    /// The directory of the file this was read from: a relative
    /// `catalog_file`, and the relative paths of `tls`, are relative to
    /// it.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// A topology file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid topology.
    #[error("invalid topology {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The topology is inconsistent.
    #[error("invalid topology: {0}")]
    Invalid(String),
    /// No node of that name.
    #[error("no node named {0:?} in the topology")]
    UnknownNode(String),
    /// Nodes listen beyond loopback, and no cluster token is set.
    #[error(
        "{0} listens on a non-loopback address and the cluster has no token: \
         set `token` in the topology or PYGMY_TOKEN in the environment \
         (every node must have the same one)"
    )]
    NoToken(String),
    /// The token file could not be read or written.
    #[error("the cluster token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Topology {
    fn default_log_dir() -> PathBuf {
        PathBuf::from("logs")
    }
    fn default_max_body() -> usize {
        64 * 1024
    }
    fn default_read_timeout_ms() -> u64 {
        10_000
    }
    fn default_max_connections() -> usize {
        4096
    }
    fn default_peer_connections() -> usize {
        256
    }
    fn default_max_body_in_flight_bytes() -> usize {
        64 * 1024 * 1024
    }
    fn default_raft_snapshot_every() -> u64 {
        5_000
    }

    fn default_raft_keep_logs() -> u64 {
        1_000
    }

    fn default_op_retention_s() -> u64 {
        24 * 60 * 60
    }

    /// The smallest `op_retention_s` accepted: a retried buy arrives within
    /// seconds, the reconciler within a few more.
    pub const MIN_OP_RETENTION_S: u64 = 60;

    /// The embedded default: on loopback, one frontend on 8010 and three
    /// `raft` replicas each of catalog and order from 8011 up (three
    /// survive the loss of one). The seed's own layout, two `broadcast`
    /// replicas each, is `examples/seed-2x2.toml`.
    pub fn default_local() -> Topology {
        let node = |name: &str, role, port: u16| NodeConfig {
            name: name.to_owned(),
            role,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            data_dir: (role != Role::Frontend).then(|| PathBuf::from("data").join(name)),
            catalog: None,
            max_format: None,
            shard: None,
        };
        Topology {
            log_dir: Self::default_log_dir(),
            token: None,
            token_file: None,
            catalog_file: None,
            replication: Replication::default(),
            store: StoreKind::default(),
            balancer: BalancerKind::default(),
            cache: CacheConfig::default(),
            max_body_bytes: Self::default_max_body(),
            read_timeout_ms: Self::default_read_timeout_ms(),
            max_connections: Self::default_max_connections(),
            peer_connections: Self::default_peer_connections(),
            max_body_in_flight_bytes: Self::default_max_body_in_flight_bytes(),
            op_retention_s: Self::default_op_retention_s(),
            raft_snapshot_every: Self::default_raft_snapshot_every(),
            raft_keep_logs: Self::default_raft_keep_logs(),
            base_dir: None,
            tls: None,
            shards: Vec::new(),
            nodes: vec![
                node("frontend", Role::Frontend, 8010),
                node("catalog-a", Role::Catalog, 8011),
                node("order-a", Role::Order, 8012),
                node("catalog-b", Role::Catalog, 8013),
                node("order-b", Role::Order, 8014),
                node("catalog-c", Role::Catalog, 8015),
                node("order-c", Role::Order, 8016),
            ],
        }
    }

    /// Reads and checks a topology file. A relative `catalog_file` will be
    /// read from the file's directory.
    pub fn load(path: &Path) -> Result<Topology, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut topology = Topology::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })?;
        topology.base_dir = path.parent().map(Path::to_path_buf);
        Ok(topology)
    }

    /// Parses and checks a topology from TOML text.
    pub fn parse(text: &str) -> Result<Topology, ConfigError> {
        let topology: Topology = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".to_owned(),
            message: e.to_string(),
        })?;
        topology.validate()?;
        Ok(topology)
    }

    /// The topology as a TOML file a user can edit.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for node in &self.nodes {
            if !crate::replication::members::valid_node_name(&node.name) {
                return Err(ConfigError::Invalid(format!(
                    "node name {:?}: use letters, digits, - and _ (at most 64)",
                    node.name
                )));
            }
            if !names.insert(node.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "two nodes are named {:?}",
                    node.name
                )));
            }
            if node.addr.port() != 0 && !addrs.insert(node.addr) {
                return Err(ConfigError::Invalid(format!(
                    "two nodes listen on {}",
                    node.addr
                )));
            }
            if let Some(catalog) = &node.catalog {
                if node.role != Role::Order {
                    return Err(ConfigError::Invalid(format!(
                        "{}: only order nodes name a catalog",
                        node.name
                    )));
                }
                if self.node(catalog).map(|c| c.role) != Some(Role::Catalog) {
                    return Err(ConfigError::Invalid(format!(
                        "{}: {catalog:?} is not a catalog node",
                        node.name
                    )));
                }
            }
        }
        let mut data_dirs = HashSet::new();
        for node in self.nodes.iter().filter(|n| n.role != Role::Frontend) {
            if !data_dirs.insert((node.role, self.data_dir(node))) {
                return Err(ConfigError::Invalid(format!(
                    "{}: another {} node has the data dir {}",
                    node.name,
                    node.role,
                    self.data_dir(node).display()
                )));
            }
        }
        for role in [Role::Frontend, Role::Catalog, Role::Order] {
            if self.of_role(role).next().is_none() {
                return Err(ConfigError::Invalid(format!("there is no {role} node")));
            }
        }
        if self.replication == Replication::Raft && self.store != StoreKind::Sqlite {
            return Err(ConfigError::Invalid(
                "raft keeps its log in SQLite: set store = \"sqlite\"".to_owned(),
            ));
        }
        if self.raft_snapshot_every < 100 {
            return Err(ConfigError::Invalid(format!(
                "raft_snapshot_every is {}: at least 100 entries between snapshots",
                self.raft_snapshot_every
            )));
        }
        if self.op_retention_s < Self::MIN_OP_RETENTION_S {
            return Err(ConfigError::Invalid(format!(
                "op_retention_s is {}: keep op records at least {} s",
                self.op_retention_s,
                Self::MIN_OP_RETENTION_S
            )));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max_connections is 0: no one could connect".to_owned(),
            ));
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ConfigError::Invalid("the token is empty".to_owned()));
        }
        self.validate_shards()
    }

    /// The shard map: unique valid names, catalog split points that rise,
    /// every node of a sharded service in one of its shards, and every
    /// shard with an odd number of replicas.
    fn validate_shards(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let mut names = HashSet::new();
        for shard in &self.shards {
            if !crate::replication::members::valid_node_name(&shard.name) {
                return invalid(format!(
                    "shard name {:?}: use letters, digits, - and _ (at most 64)",
                    shard.name
                ));
            }
            if !names.insert(shard.name.as_str()) {
                return invalid(format!("two shards are named {:?}", shard.name));
            }
            if shard.role == Role::Frontend {
                return invalid(format!(
                    "shard {}: only the catalog and the order service have shards",
                    shard.name
                ));
            }
        }
        let catalogs: Vec<&ShardConfig> = self.declared_shards(Role::Catalog).collect();
        for (i, shard) in catalogs.iter().enumerate() {
            match (i, shard.first_item) {
                (0, Some(_)) => {
                    return invalid(format!(
                        "shard {}: the first catalog shard holds every id below the \
                         second's; it takes no first_item",
                        shard.name
                    ))
                }
                (1.., None) => {
                    return invalid(format!(
                        "shard {}: a catalog shard after the first needs its first_item",
                        shard.name
                    ))
                }
                _ => {}
            }
        }
        if let Some(shard) = self
            .declared_shards(Role::Order)
            .find(|s| s.first_item.is_some())
        {
            return invalid(format!(
                "shard {}: order shards hold keys by their hash, not items: no first_item",
                shard.name
            ));
        }
        if self.declared_shards(Role::Order).count() > MAX_ORDER_SHARDS {
            return invalid(format!("at most {MAX_ORDER_SHARDS} order shards"));
        }
        let splits = catalogs.iter().filter_map(|s| s.first_item).collect();
        if let Err(err) = ItemRanges::new(splits) {
            return invalid(err.to_string());
        }
        for node in &self.nodes {
            let declared = self.declared_shards(node.role).next().is_some();
            match (&node.shard, declared) {
                (None, true) => {
                    return invalid(format!(
                        "{}: the {} service has shards; name this node's shard",
                        node.name, node.role
                    ))
                }
                (Some(_), false) => {
                    return invalid(format!(
                        "{}: the {} service has no [[shard]]; drop shard",
                        node.name, node.role
                    ))
                }
                (Some(name), true) => {
                    if !self.declared_shards(node.role).any(|s| s.name == *name) {
                        return invalid(format!(
                            "{}: {name:?} is not a shard of the {} service",
                            node.name, node.role
                        ));
                    }
                }
                (None, false) => {}
            }
        }
        for shard in &self.shards {
            let replicas = self
                .nodes
                .iter()
                .filter(|n| n.shard.as_deref() == Some(shard.name.as_str()))
                .count();
            if replicas % 2 == 0 {
                return invalid(format!(
                    "shard {} has {replicas} replicas: give it an odd number (a \
                     majority then survives the loss of the rest)",
                    shard.name
                ));
            }
        }
        if let Some(node) = self.of_role(Role::Order).find(|n| n.catalog.is_some()) {
            if self.declared_shards(Role::Catalog).next().is_some() {
                return invalid(format!(
                    "{}: with catalog shards, order nodes pair with a replica of each \
                     shard by position; drop catalog",
                    node.name
                ));
            }
        }
        Ok(())
    }

    /// The `[[shard]]` tables of `role`, in file order.
    fn declared_shards(&self, role: Role) -> impl Iterator<Item = &ShardConfig> {
        self.shards.iter().filter(move |s| s.role == role)
    }

    /// The names of `role`'s shards, in file order: the role's own name
    /// for a service of one shard.
    pub fn shard_names(&self, role: Role) -> Vec<String> {
        let declared: Vec<String> = self.declared_shards(role).map(|s| s.name.clone()).collect();
        if declared.is_empty() {
            vec![role.to_string()]
        } else {
            declared
        }
    }

    /// The shard (its index among its service's, in file order) that
    /// `node` is a replica of: 0 in a service of one shard.
    pub fn shard_index(&self, node: &NodeConfig) -> usize {
        node.shard
            .as_ref()
            .and_then(|name| {
                self.declared_shards(node.role)
                    .position(|s| s.name == *name)
            })
            .unwrap_or(0)
    }

    /// The index of `role`'s shard named `name`; with no name, its only
    /// shard. A service of several shards needs the name (an operator's
    /// `--shard`), and an unknown one is refused with the names there are.
    pub fn find_shard(&self, role: Role, name: Option<&str>) -> Result<usize, ConfigError> {
        let names = self.shard_names(role);
        match name {
            None if names.len() == 1 => Ok(0),
            None => Err(ConfigError::Invalid(format!(
                "the {role} service has shards ({}): name one",
                names.join(", ")
            ))),
            Some(name) => names.iter().position(|n| n == name).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "the {role} service has no shard {name:?} (it has {})",
                    names.join(", ")
                ))
            }),
        }
    }

    /// The name of the shard `node` is a replica of.
    pub fn shard_name(&self, node: &NodeConfig) -> String {
        node.shard.clone().unwrap_or_else(|| node.role.to_string())
    }

    /// The nodes of shard `shard` of `role`, in file order.
    pub fn shard_nodes(&self, role: Role, shard: usize) -> impl Iterator<Item = &NodeConfig> {
        self.of_role(role)
            .filter(move |n| self.shard_index(n) == shard)
    }

    /// The `(name, url)` of each node of shard `shard` of `role`, in file
    /// order.
    pub fn shard_urls(&self, role: Role, shard: usize) -> Vec<(String, String)> {
        self.shard_nodes(role, shard)
            .map(|n| (n.name.clone(), self.url(n)))
            .collect()
    }

    /// The catalog's shards by item.
    pub fn item_ranges(&self) -> ItemRanges {
        let splits = self
            .declared_shards(Role::Catalog)
            .filter_map(|s| s.first_item)
            .collect();
        // Checked at load: the split points rise.
        ItemRanges::new(splits).unwrap_or_else(|_| ItemRanges::one())
    }

    /// The order service's shards by key.
    pub fn key_shards(&self) -> KeyShards {
        KeyShards::new(self.shard_names(Role::Order).len())
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The nodes of `role`, in file order.
    pub fn of_role(&self, role: Role) -> impl Iterator<Item = &NodeConfig> {
        self.nodes.iter().filter(move |n| n.role == role)
    }

    /// The `(name, url)` of each node of `role`, in file order.
    pub fn urls(&self, role: Role) -> Vec<(String, String)> {
        self.of_role(role)
            .map(|n| (n.name.clone(), self.url(n)))
            .collect()
    }

    /// `http://addr` of `node`, or `https://addr` when the cluster has TLS.
    pub fn url(&self, node: &NodeConfig) -> String {
        format!("{}://{}", self.scheme(), node.addr)
    }

    /// `https` when the cluster has TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The TLS files of `holder` (a node's name, or [`CLIENT_CERT_NAME`]),
    /// relative paths taken from the topology file's directory; none
    /// without TLS.
    pub fn tls_files(&self, holder: &str) -> Option<TlsFiles> {
        let tls = self.tls.as_ref()?;
        let dir = self.resolve(&tls.cert_dir);
        Some(TlsFiles {
            ca: self.resolve(&tls.ca),
            cert: dir.join(format!("{holder}.pem")),
            key: dir.join(format!("{holder}.key")),
        })
    }

    /// `path`, relative to the topology file's directory if it is relative
    /// and the topology was read from a file.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// The catalog replica order replica `node` prefers in catalog shard
    /// `shard`: its `catalog` (a service of one shard), or the catalog in
    /// the same position among the shard's catalogs as it among orders.
    pub fn preferred_catalog(&self, node: &NodeConfig, shard: usize) -> Option<String> {
        if let Some(catalog) = &node.catalog {
            return Some(catalog.clone());
        }
        let position = self
            .of_role(Role::Order)
            .position(|n| n.name == node.name)?;
        let catalogs: Vec<_> = self.shard_nodes(Role::Catalog, shard).collect();
        catalogs
            .get(position % catalogs.len().max(1))
            .map(|c| c.name.clone())
    }

    /// The data directory of `node`.
    pub fn data_dir(&self, node: &NodeConfig) -> PathBuf {
        node.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data").join(&node.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_prints_and_parses_back() {
        let default = Topology::default_local();
        let text = default.to_toml();
        assert_eq!(Topology::parse(&text).expect("parses"), default);
        let frontend = default.of_role(Role::Frontend).next().expect("frontend");
        assert_eq!(frontend.addr.port(), 8010);
    }

    #[test]
    fn order_replicas_pair_with_catalogs_by_position() {
        let topology = Topology::default_local();
        let order_b = topology.node("order-b").expect("order-b");
        assert_eq!(
            topology.preferred_catalog(order_b, 0).as_deref(),
            Some("catalog-b")
        );
    }

    #[test]
    fn inconsistent_topologies_are_refused() {
        let mut twice = Topology::default_local();
        twice.nodes[2].name = "catalog-a".to_owned();
        assert!(Topology::parse(&twice.to_toml()).is_err());
        let mut no_order = Topology::default_local();
        no_order.nodes.retain(|n| n.role != Role::Order);
        assert!(Topology::parse(&no_order.to_toml()).is_err());
        assert!(Topology::parse("log_dir = 3").is_err());
        let mut shared_dir = Topology::default_local();
        shared_dir.nodes[3].data_dir = shared_dir.nodes[1].data_dir.clone();
        assert!(Topology::parse(&shared_dir.to_toml()).is_err());
        let typo = Topology::default_local()
            .to_toml()
            .replace("role = \"catalog\"", "role = \"catalogue\"");
        assert!(Topology::parse(&typo).is_err());
    }

    fn sharded() -> Topology {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/sharded.toml"
        ))
        .expect("examples/sharded.toml");
        Topology::parse(&text).expect("the sharded example parses")
    }

    #[test]
    fn a_sharded_topology_maps_items_keys_and_replicas_to_shards() {
        let topology = sharded();
        assert_eq!(
            topology.shard_names(Role::Catalog),
            ["books-low", "books-high"]
        );
        assert_eq!(topology.shard_names(Role::Order), ["orders-0", "orders-1"]);
        let ranges = topology.item_ranges();
        assert_eq!(ranges.shard_of(ItemId(4)), 0);
        assert_eq!(ranges.shard_of(ItemId(5)), 1);
        assert_eq!(topology.key_shards().len(), 2);
        assert_eq!(
            topology.find_shard(Role::Catalog, Some("books-high")).ok(),
            Some(1)
        );
        assert!(topology.find_shard(Role::Catalog, None).is_err());
        assert!(topology
            .find_shard(Role::Order, Some("books-high"))
            .is_err());
        assert_eq!(
            Topology::default_local().find_shard(Role::Order, None).ok(),
            Some(0)
        );
        let high: Vec<&str> = topology
            .shard_nodes(Role::Catalog, 1)
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(high, ["catalog-high-a", "catalog-high-b", "catalog-high-c"]);
        let order = topology.node("order-1-b").expect("order-1-b");
        assert_eq!(topology.shard_index(order), 1);
        assert_eq!(
            topology.preferred_catalog(order, 1).as_deref(),
            Some("catalog-high-b")
        );
        assert_eq!(
            Topology::parse(&topology.to_toml()).expect("prints back"),
            topology
        );
        // A service of one shard: named after its role, every node in it.
        let default = Topology::default_local();
        assert_eq!(default.shard_names(Role::Catalog), ["catalog"]);
        assert_eq!(default.shard_nodes(Role::Order, 0).count(), 3);
    }

    /// Each mistake in a shard map is refused at load, with its reason.
    #[test]
    fn a_bad_shard_map_is_refused() {
        let refused = |edit: &dyn Fn(&mut Topology), why: &str| {
            let mut topology = sharded();
            edit(&mut topology);
            match Topology::parse(&topology.to_toml()) {
                Err(ConfigError::Invalid(message)) => {
                    assert!(message.contains(why), "{message:?} does not say {why:?}")
                }
                other => panic!("expected a refusal saying {why:?}, got {other:?}"),
            }
        };
        refused(
            &|t| t.shards[0].first_item = Some(ItemId(1)),
            "takes no first_item",
        );
        refused(&|t| t.shards[1].first_item = None, "needs its first_item");
        refused(&|t| t.shards[2].first_item = Some(ItemId(3)), "not items");
        refused(&|t| t.shards[3].name = "orders-0".to_owned(), "two shards");
        refused(&|t| t.shards[0].role = Role::Frontend, "only the catalog");
        refused(
            &|t| t.nodes.retain(|n| n.name != "catalog-low-c"),
            "odd number",
        );
        refused(&|t| t.nodes[1].shard = None, "name this node's shard");
        refused(
            &|t| t.nodes[1].shard = Some("orders-0".to_owned()),
            "not a shard of",
        );
        refused(
            &|t| {
                t.shards.push(ShardConfig {
                    name: "books-mid".to_owned(),
                    role: Role::Catalog,
                    first_item: Some(ItemId(3)),
                })
            },
            "must rise",
        );
        refused(
            &|t| t.nodes[7].catalog = Some("catalog-low-a".to_owned()),
            "drop catalog",
        );
        let mut unsharded = Topology::default_local();
        unsharded.nodes[1].shard = Some("books".to_owned());
        assert!(Topology::parse(&unsharded.to_toml()).is_err());
    }
}
