//! Pygmy's core: the book store's domain and its pluggable backends, with no
//! HTTP server code.
//!
//! # Layout
//! - [`types`]: books, orders, ids, costs, idempotency keys; the seed's
//!   default catalog.
//! - [`api`]: the JSON envelope every node answers with (shared with the
//!   client SDK).
//! - [`journal`]: a service as a state machine of commands with an op log;
//!   the base of both stores and of replication.
//! - [`catalog`]: `CatalogStore` (books and stock), in memory and SQLite.
//! - [`order`]: `OrderStore` (orders), in memory and SQLite.
//! - [`cache`]: `Cache` of serialized read responses: LRU, or none.
//! - [`balance`]: `Balancer` over a backend's replicas: round robin, with
//!   passive health.
//! - [`replication`]: `Replicator`, which applies ops on every replica:
//!   `broadcast` (the seed's protocol, improved).
//! - [`error`]: the error types.
//!
//! The `sqlite` feature (on by default) brings the SQLite stores; the client
//! SDK turns it off.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod balance;
pub mod cache;
pub mod catalog;
pub mod error;
pub mod journal;
pub mod order;
pub mod replication;
pub mod types;

pub use error::{ReplicationError, StoreError, TransportError};
pub use types::{Book, Cost, IdempotencyKey, ItemId, Order, OrderId};
