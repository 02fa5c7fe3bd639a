//! Pygmy's server: the frontend, catalog and order nodes, served on raw
//! hyper 1 (hyper-util, tokio; no web framework).
//!
//! # Layout
//! - [`config`]: the topology file (every node, and cluster settings).
//! - [`node`]: building a node from the topology and running it;
//!   [`node::Cluster`] runs many in one process.
//! - [`frontend`], [`catalog`], [`order`]: each role's handler (routing by
//!   `match` on method and path).
//! - [`server`]: the accept loop, graceful shutdown, request limits.
//! - [`api`]: the parsed request, and `ApiError`, the one mapping of every
//!   failure to an HTTP status and the JSON envelope.
//! - [`transport`]: replication calls over HTTP.
//! - [`logging`]: stdout and one log file per node.
//! - [`testing`]: a real cluster on loopback for tests (this crate's and
//!   the client's).
//!
//! `src/main.rs` is only the command line.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod catalog;
pub mod config;
pub mod frontend;
pub mod logging;
pub mod node;
pub mod order;
pub mod server;
pub mod testing;
pub mod transport;

pub use config::Topology;
pub use node::{run_node, Cluster, NodeError};
