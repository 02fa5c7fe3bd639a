//! Conformance suites (feature `testing`): the contract of each store and
//! cache trait as checks any backend can run, the way openraft's
//! `testing::Suite` checks a raft storage. This crate runs them against
//! its own backends; a third-party backend runs them the same way.
//!
//! - [`catalog`]: a [`crate::catalog::CatalogStore`].
//! - [`order`]: an [`crate::order::OrderStore`].
//! - [`cache`]: a [`crate::cache::Cache`] that holds values.
//!
//! Each check panics with what went wrong: call them from a test.

pub mod cache;
pub mod catalog;
pub mod order;
