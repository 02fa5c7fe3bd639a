//! `pygmy-server --node NAME --force-new-cluster`: the recovery of a
//! service that lost its majority for good. The named replica, stopped,
//! becomes the only voter of a new cluster with everything it holds
//! ([`pygmy_core::replication::raft::sqlite::recover`]); started as usual
//! afterwards, it serves alone, and replicas started on empty data
//! directories join it.

use std::net::SocketAddr;

use pygmy_core::catalog::CatalogMachine;
use pygmy_core::order::OrderMachine;
use pygmy_core::replication::raft::sqlite::{force_new_cluster as force, Forced, RecoverError};
use pygmy_core::topology::{Replication, Role, StoreKind, Topology};

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
}

/// Makes replica `name` of `topology`, stopped, the only voter of a new
/// cluster. Blocking (it writes the replica's file).
pub fn force_new_cluster(topology: &Topology, name: &str) -> Result<Forced, ForceError> {
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
