//! The Pygmy client: a typed SDK of the book store, the load generator and
//! the invariant checker, and the `pygmy-client` command line.
//!
//! # Layout
//! - [`Client`] (`store.rs`): a store's frontend: `lookup`, `search`, `buy`.
//! - [`nodes`]: typed clients of the catalog and order replicas and of the
//!   internal endpoints, which the server uses for node-to-node calls.
//! - [`http`]: the shared HTTP plumbing (pooled reqwest client, envelope
//!   decoding), and [`ClientError`] (`error.rs`): failures by kind.
//! - [`load`]: the load generator (closed or fixed-rate open loop, HDR
//!   histograms).
//! - [`check`]: the checker of the store's promises over replica states.
//! - [`plot`]: a run's figures as an SVG chart.
//! - `src/main.rs`: the CLI.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod check;
mod engine;
mod error;
pub mod http;
pub mod load;
pub mod nodes;
pub mod plot;
mod store;

pub use error::{ClientError, ERROR_KIND_HEADER};
pub use http::ClientOptions;
pub use nodes::{CatalogClient, InternalClient, OrderClient};
pub use store::Client;
