//! Pygmy on the wire: everything the role handlers share, and nothing of
//! any one role.
//!
//! - [`mod@serve`]: the accept loop, the [`Handler`] trait each role
//!   implements, and the path of a request (route parsed, token checked,
//!   body read under the route's limit).
//! - [`request`]: the [`Request`] a handler sees.
//! - [`response`]: JSON responses, `/health` and `/ready` ([`Readiness`]).
//! - [`error`]: [`ApiError`], the one mapping of a failure to its status
//!   and envelope.
//! - [`metrics`]: the Prometheus text of `/metrics`.
//! - [`node`]: [`NodeInfo`], what a node's handlers know of it.
//!
//! The routes themselves are declared once for server and client, in
//! [`pygmy_core::api::routes`].

pub mod error;
pub mod metrics;
pub mod node;
pub mod request;
pub mod response;
pub mod serve;

pub use error::ApiError;
pub use metrics::Metrics;
pub use node::NodeInfo;
pub use request::Request;
pub use response::{json, json_bytes, to_bytes, ApiResult, Readiness, Response};
pub use serve::{serve, Handler, Limits};
