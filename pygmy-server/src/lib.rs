//! Pygmy's server: the frontend, catalog and order nodes, served on raw
//! hyper 1 (hyper-util, tokio; no web framework).
//!
//! # Layout
//! Dependencies point one way: `cluster` -> `node` (wiring) -> the role
//! handlers -> `gather`, `pusher`, `replica`, `background` and `http` ->
//! `pygmy-core` and the client SDK.
//! - [`node`]: wiring: one function builds a node from the topology (store,
//!   replication, clients of the other nodes, handler), starts its
//!   background work and serves it.
//! - [`cluster`]: [`Cluster`] runs many nodes in one process.
//! - [`frontend`], [`catalog`], [`order`]: each role's handler, one
//!   `match` over its route enum (`pygmy_core::api::routes`). A role's
//!   constructor builds the handler and its [`background::Background`]
//!   work; it starts nothing.
//! - [`order::steps`]: the two steps of a buy (a sale, then an order);
//!   [`order::reconcile`]: the order of every sale that has none.
//! - [`replica`]: what the catalog and order handlers share (readiness,
//!   fresh reads, the peers' replication calls).
//! - [`gather`]: calls to a backend that come together made as one call of
//!   many (an order replica's sales, a frontend's buys and lookups), each
//!   item answered on its own; and the serving side of such a call.
//! - [`pusher`]: a catalog replica's invalidation pushes to one frontend,
//!   those that wait while one is under way sent together.
//! - [`background`]: a node's background tasks, started together and
//!   stopped together.
//! - [`http`]: the accept loop, the path of a request (route, token, body),
//!   the request, responses, and `ApiError`, the one mapping of every
//!   failure to its HTTP status (its envelope is written by
//!   `http::response`).
//! - [`transport`]: replication calls over HTTP.
//! - [`tls`]: a node's TLS (its certificate, the cluster's CA), for
//!   serving and for calling its peers; [`certs`]: `--make-certs`, a CA
//!   and a certificate for each node of a topology.
//! - [`logging`]: stdout and one log file per node.
//! - [`probe`]: `--probe`, a node's readiness asked with no runtime (a
//!   container's health check).
//! - [`recover`]: `--force-new-cluster`, a stopped replica made the only
//!   voter of a new cluster, when its service lost its majority for good.
//! - `testing` (feature `testing`): a real cluster on loopback, and
//!   network namespaces, for tests (this crate's and the client's).
//!
//! `src/main.rs` is only the command line.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod background;
pub mod catalog;
pub mod certs;
pub mod cluster;
pub mod frontend;
pub mod gather;
pub mod http;
pub mod logging;
pub mod node;
pub mod order;
pub mod probe;
pub mod pusher;
pub mod recover;
pub mod replica;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod transport;

pub use cluster::Cluster;
pub use node::{run_node, NodeError};
pub use pygmy_core::topology::Topology;
