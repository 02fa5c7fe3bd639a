//! [`NodeInfo`]: who a node is, as its handlers and the server see it.

use pygmy_core::topology::Role;

/// Who a node is: what its handlers need to know of themselves.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Its name in the topology.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The cluster token its internal endpoints demand.
    pub token: Option<String>,
    /// Where a backend replica keeps its data (for its size in
    /// `/metrics`); none for a frontend.
    pub data_dir: Option<std::path::PathBuf>,
    /// A `raft` replica's SQLite file, which `GET /backup` reads; none
    /// for a frontend, and for `broadcast` or in-memory replicas.
    pub raft_store: Option<std::path::PathBuf>,
}
