//! Pygmy's core: the book store's domain and its pluggable backends, with no
//! HTTP server code.
//!
//! # Layout
//! - [`types`]: books, orders, ids, costs, idempotency keys; the seed's
//!   default catalog.
//! - [`api`]: the JSON envelope every node answers with, and
//!   [`api::routes`], every endpoint of every role as a typed route (shared
//!   with the server, which parses them, and the SDK, which formats them).
//! - [`error`]: [`ErrorKind`], the one list of failure kinds, and the error
//!   types of the stores and of replication.
//! - [`journal`]: a service as a state machine of commands with an op log;
//!   the base of both stores and of replication.
//! - [`catalog`]: `CatalogStore` (books and stock), in memory and SQLite.
//! - [`order`]: `OrderStore` (orders), in memory and SQLite.
//! - [`cache`]: `Cache` of serialized read responses (LRU, or none), and
//!   the cache lease of both sides ([`cache::lease`]).
//! - [`balance`]: `Balancer` (round robin, least loaded, preferred) and
//!   `ReplicaSet`: a backend's replicas with their clients, health and
//!   per-attempt time limit, as one caller sees them.
//! - [`burst`]: taking what waits in a queue as one burst (the raft
//!   batcher's entries, the server's gathered calls and pushes).
//! - [`replication`]: `Replicator`, which applies ops on every replica:
//!   `raft` (openraft, over any log and state-machine storage; SQLite
//!   ships) and `broadcast` (the seed's protocol, improved).
//! - [`shard`]: which shard of a service an item or a buy's key belongs
//!   to (the catalog by ranges of ids, the orders by a hash of the key).
//! - `topology` (feature `topology`): the topology file that names every
//!   node of a cluster, read by the server and by the client's tools.
//! - `testing` (feature `testing`): the conformance suites, for your own
//!   `CatalogStore`, `OrderStore` or `Cache`.
//!
//! Features: `sqlite` (the SQLite stores, on by default; the client SDK
//! turns it off), `raft` (on by default), `topology`, `testing`.
//!
//! ```
//! use pygmy_core::cache::{lookup_key, Cache, LruCache};
//! use pygmy_core::ItemId;
//! use std::num::NonZeroUsize;
//! use std::time::Duration;
//!
//! let cache = LruCache::new(NonZeroUsize::new(64).unwrap(), Duration::from_secs(30));
//! let key = lookup_key(ItemId(1));
//! let generation = cache.generation();
//! assert!(cache.fill(&key, "{}".into(), generation));
//! assert!(cache.get(&key).is_some());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod balance;
pub mod burst;
pub mod cache;
pub mod catalog;
pub mod error;
pub mod journal;
pub mod order;
pub mod replication;
pub mod shard;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "topology")]
pub mod topology;
pub mod types;

pub use error::{ErrorKind, ReplicationError, StoreError, TransportError};
pub use types::{Book, Cost, IdempotencyKey, ItemId, Order, OrderId};
