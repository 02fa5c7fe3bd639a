//! A service founded again from what is left of it:
//!
//! - `pygmy-server --node NAME --force-new-cluster`: a service that lost
//!   its majority for good. The named replica, stopped, becomes the only
//!   voter of a new cluster with everything it holds
//!   ([`pygmy_core::replication::raft::sqlite::recover`]);
//! - `pygmy-server --node NAME --restore FILE`: a service that lost every
//!   replica. The named replica, on an empty data directory, becomes the
//!   only voter of a new cluster with what the backup FILE holds
//!   ([`pygmy_core::replication::raft::sqlite::backup`]).
//!
//! Started as usual afterwards, the replica serves alone, and replicas
//! started on empty data directories join it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pygmy_core::catalog::CatalogMachine;
use pygmy_core::order::OrderMachine;
use pygmy_core::replication::raft::sqlite::backup::{
    restore as restore_into, BackupError, Restored,
};
use pygmy_core::replication::raft::sqlite::{force_new_cluster as force, Forced, RecoverError};
use pygmy_core::replication::raft::types::ReplicaNode;
use pygmy_core::topology::{NodeConfig, Replication, Role, StoreKind, Topology};

use crate::node::store_file;

/// Why a replica cannot be made a cluster of its own.
#[derive(Debug, thiserror::Error)]
pub enum ForceError {
    /// The topology has no such node.
    #[error("no node named {0:?} in the topology")]
    UnknownNode(String),
    /// A frontend replicates nothing.
    #[error("{0} is a frontend: it holds no replicated store")]
    Frontend(String),
    /// `broadcast` has no cluster to recover.
    #[error("the topology replicates with broadcast: there is no raft cluster to recover")]
    NotRaft,
    /// In-memory stores keep nothing to recover from.
    #[error("the topology keeps its stores in memory: nothing survives a stop")]
    Memory,
    /// The replica runs: its file must not change under it.
    #[error("{name} is running (its address {addr} is taken): stop it first")]
    Running {
        /// The replica.
        name: String,
        /// Its address in the topology.
        addr: SocketAddr,
    },
    /// The replica's file cannot be made a cluster of its own.
    #[error("{name}: {source}")]
    Recover {
        /// The replica.
        name: String,
        /// Why.
        #[source]
        source: RecoverError,
    },
    /// The backup cannot be restored into the replica.
    #[error("{name}: {source}")]
    Restore {
        /// The replica.
        name: String,
        /// Why.
        #[source]
        source: BackupError,
    },
}

/// Founds a new cluster of replica `name`'s service from the backup file
/// at `backup`, in the replica's empty data directory: it becomes the only
/// voter. Blocking (it writes the replica's file).
pub fn restore(topology: &Topology, name: &str, backup: &Path) -> Result<Restored, ForceError> {
    let (node, path) = stopped_raft_replica(topology, name)?;
    let me = ReplicaNode {
        name: node.name.clone(),
        url: Some(topology.url(node)),
    };
    let restored = match node.role {
        Role::Catalog => restore_into::<CatalogMachine>(&path, "catalog", me, backup),
        Role::Order => restore_into::<OrderMachine>(&path, "order", me, backup),
        Role::Frontend => return Err(ForceError::Frontend(name.to_owned())),
    };
    restored.map_err(|source| ForceError::Restore {
        name: name.to_owned(),
        source,
    })
}

/// Makes replica `name` of `topology`, stopped, the only voter of a new
/// cluster. Blocking (it writes the replica's file).
pub fn force_new_cluster(topology: &Topology, name: &str) -> Result<Forced, ForceError> {
    let (node, path) = stopped_raft_replica(topology, name)?;
    let forced = match node.role {
        Role::Catalog => force::<CatalogMachine>(&path),
        Role::Order => force::<OrderMachine>(&path),
        Role::Frontend => return Err(ForceError::Frontend(name.to_owned())),
    };
    forced.map_err(|source| ForceError::Recover {
        name: name.to_owned(),
        source,
    })
}

/// Replica `name` of a raft topology with SQLite stores, and its file,
/// checked stopped.
fn stopped_raft_replica<'t>(
    topology: &'t Topology,
    name: &str,
) -> Result<(&'t NodeConfig, PathBuf), ForceError> {
    let node = topology
        .node(name)
        .ok_or_else(|| ForceError::UnknownNode(name.to_owned()))?;
    if topology.replication != Replication::Raft {
        return Err(ForceError::NotRaft);
    }
    if topology.store != StoreKind::Sqlite {
        return Err(ForceError::Memory);
    }
    let path = store_file(topology, node).ok_or_else(|| ForceError::Frontend(name.to_owned()))?;
    // A replica that runs holds its address (the best sign of it this
    // command has where it runs beside the replica).
    if let Err(err) = std::net::TcpListener::bind(node.addr) {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            return Err(ForceError::Running {
                name: name.to_owned(),
                addr: node.addr,
            });
        }
    }
    Ok((node, path))
}
