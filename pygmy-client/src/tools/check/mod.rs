//! The invariant checker: the promises of a Pygmy store, verified over the
//! states collected from every replica after a run.
//!
//! - `promises.rs`: [`check`], a plain function over a [`ClusterState`]
//!   (no oversell, conservation, no lost acknowledgement, exactly once,
//!   convergence), so that the load generator's `--check`, the tests and
//!   the fault tests all use the same one;
//! - `collect.rs`: [`collect`] reads a state from live replicas; a
//!   [`Checker`] does the whole sequence around a run (the state before,
//!   then the verdict once the replicas converged).

mod collect;
mod promises;

pub use self::collect::{collect, Checker, ReplicaClients, ReplicaUrls, Verdict};
pub use self::promises::{check, AckedBuy, ClusterState, Expected, Violation};
