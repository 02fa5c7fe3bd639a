//! The Pygmy client: a typed SDK of the book store, and the `pygmy-client`
//! command line.
//!
//! # Layout
//! - [`Client`] (`store.rs`): a store's frontend: `lookup`, `search`, `buy`.
//! - [`nodes`]: typed clients of the catalog and order replicas and of the
//!   internal endpoints, which the server uses for node-to-node calls.
//! - [`http`]: the shared HTTP plumbing (pooled reqwest client, envelope
//!   decoding), and [`ClientError`] (`error.rs`): failures by kind.
//! - `src/main.rs`: the CLI.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod http;
pub mod nodes;
mod store;

pub use error::{ClientError, ERROR_KIND_HEADER};
pub use http::ClientOptions;
pub use nodes::{CatalogClient, InternalClient, OrderClient};
pub use store::Client;
