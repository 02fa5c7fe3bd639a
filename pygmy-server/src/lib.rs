//! Pygmy's server: the frontend, catalog and order nodes, served on raw
//! hyper 1 (hyper-util, tokio; no web framework).
//!
//! # Layout
//! Dependencies point one way: `cluster` -> `node` (wiring) -> the role
//! handlers -> `http` and `replica` -> `pygmy-core` and the client SDK.
//! - [`node`]: wiring: one function builds a node from the topology (store,
//!   replication, clients of the other nodes, handler) and serves it.
//! - [`cluster`]: [`Cluster`] runs many nodes in one process.
//! - [`frontend`], [`catalog`], [`order`]: each role's handler, one
//!   `match` over its route enum (`pygmy_core::api::routes`).
//! - [`replica`]: what the catalog and order handlers share (readiness,
//!   fresh reads, the peers' replication calls).
//! - [`http`]: the accept loop, the path of a request (route, token, body),
//!   the request, responses, and `ApiError`, the one mapping of every
//!   failure to its HTTP status and the JSON envelope.
//! - [`transport`]: replication calls over HTTP.
//! - [`pusher`]: a catalog replica's invalidation pushes to one frontend,
//!   those that wait while one is under way sent together.
//! - [`gather`]: calls to a backend that come together made as one (an
//!   order replica's sales, a frontend's buys), each answered on its own.
//! - [`logging`]: stdout and one log file per node.
//! - [`probe`]: `--probe`, a node's health asked with no runtime (a
//!   container's health check).
//! - `testing` (feature `testing`): a real cluster on loopback, and
//!   network namespaces, for tests (this crate's and the client's).
//!
//! `src/main.rs` is only the command line.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod catalog;
pub mod cluster;
pub mod frontend;
pub mod gather;
pub mod http;
pub mod logging;
pub mod node;
pub mod order;
pub mod probe;
pub mod pusher;
pub mod replica;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;

pub use cluster::Cluster;
pub use node::{run_node, NodeError};
pub use pygmy_core::topology::Topology;
