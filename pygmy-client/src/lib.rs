//! The Pygmy client: a typed SDK of the book store, the load generator and
//! the invariant checker, and the `pygmy-client` command line.
//!
//! # Layout
//! The SDK:
//! - [`Client`] (`store.rs`): a store's frontend: `lookup`, `search`, `buy`.
//! - [`nodes`]: typed clients of the catalog and order replicas and of the
//!   internal endpoints, which the server uses for node-to-node calls.
//! - [`http`]: the shared HTTP plumbing (one hyper connection pool; every URL
//!   comes from the route tables of `pygmy_core::api::routes`), and
//!   [`ClientError`] (`error.rs`): failures by kind, decoded in one place.
//! - [`tls`]: rustls configs (the cluster CA to trust, the certificate to
//!   show) for `https://` nodes, and the PEM files they come from.
//!
//! The tools (feature `tools`, on by default; the server builds without):
//! - [`tools::load`]: the load generator.
//! - [`tools::check`]: the checker of the store's promises.
//! - [`tools::plot`]: a run's figures as an SVG chart.
//!
//! `src/main.rs` is the CLI.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod http;
pub mod nodes;
mod store;
pub mod tls;
#[cfg(feature = "tools")]
pub mod tools;

pub use error::{ClientError, ERROR_KIND_HEADER};
pub use http::ClientOptions;
pub use nodes::{CatalogClient, InternalClient, OrderClient};
pub use store::Client;
