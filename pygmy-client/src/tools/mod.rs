//! The tools built on the SDK (feature `tools`, on by default): what the
//! `pygmy-client` command runs, and what the fault tests and benchmarks
//! use. The server does not link them.
//!
//! - [`load`]: the load generator (closed or fixed-rate open loop, HDR
//!   histograms), over its own lean HTTP engine (`engine.rs`).
//! - [`check`]: the checker of the store's promises over replica states.
//! - [`history`]: the checker of a run's lookups against its buys (a stale
//!   or impossible read is caught).
//! - [`members`]: an operator's view and changes of a service's
//!   membership.
//! - [`backup`]: a consistent copy of a running raft service, to a file.
//! - [`plot`]: a run's figures as an SVG chart.
//! - [`status`]: every node of a cluster at a glance.

pub mod backup;
pub mod check;
mod engine;
pub mod history;
pub mod load;
pub mod members;
pub mod plot;
pub mod status;
