//! Runnable programs that use `pygmy-core` as a library; see the
//! `[[example]]`s of this package:
//!
//! - `embedded_store`: a catalog and an order service, each three SQLite
//!   replicas under raft over an in-process transport, a few buys, a check.
//! - `custom_backend`: a cache backend of your own, run through the
//!   exported conformance suite.
//! - `cache_and_balancer`: the cache and the balancers used on their own.
//!
//! `cargo run -p pygmy-examples --example embedded_store`
#![forbid(unsafe_code)]
