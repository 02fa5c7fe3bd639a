//! Pygmy on the wire: everything the role handlers share, and nothing of
//! any one role.
//!
//! - [`mod@serve`]: the accept loop, the [`Handler`] trait each role
//!   implements, and the path of a request (route parsed, token checked,
//!   body read under the route's limit).
//! - [`request`]: the [`Request`] a handler sees.
//! - [`response`]: JSON responses, and `/health`.
//! - [`error`]: [`ApiError`], the one mapping of a failure to its status
//!   and envelope.
//! - [`metrics`]: the Prometheus text of `/metrics`.
//!
//! The routes themselves are declared once for server and client, in
//! [`pygmy_core::api::routes`].

pub mod error;
pub mod metrics;
pub mod request;
pub mod response;
pub mod serve;

use pygmy_core::topology::Role;

pub use error::ApiError;
pub use metrics::Metrics;
pub use request::Request;
pub use response::{json, json_bytes, to_bytes, ApiResult, Response};
pub use serve::{serve, Handler, Limits};

/// Who a node is: what its handlers need to know of themselves.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Its name in the topology.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The cluster token its internal endpoints demand.
    pub token: Option<String>,
    /// Where a backend replica keeps its data (for its size in
    /// `/metrics`); none for a frontend.
    pub data_dir: Option<std::path::PathBuf>,
}
