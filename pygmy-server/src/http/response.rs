//! Building responses: JSON bodies, a failure's envelope, and the answers
//! every node gives alike (`/health`, `/ready`, `/openapi.json`).

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use pygmy_client::ERROR_KIND_HEADER;
use pygmy_core::api::public::{ErrorResponse, HealthResponse};
use pygmy_core::error::chain;
use pygmy_core::topology::Role;
use serde::Serialize;

use super::error::ApiError;
use super::node::NodeInfo;

/// A response as hyper sends it.
pub type Response = http::Response<Body>;

/// A response's body: whole (every answer but one), or sent as it is made
/// (a backup, [`streamed`]).
pub type Body =
    Either<Full<Bytes>, StreamBody<BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>>;

/// A 200 response whose body is the chunks `chunks` yields, sent as they
/// come; an error ends it cut short (the client sees a broken body, never
/// a whole one).
pub fn streamed(
    content_type: &'static str,
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> Response {
    let frames = futures_util::stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?;
        Some((chunk.map(Frame::data), chunks))
    });
    let mut response = http::Response::new(Either::Right(StreamBody::new(frames.boxed())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response
}

/// The result of a handler.
pub type ApiResult = Result<Response, ApiError>;

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, Bytes::from(bytes)),
        Err(err) => ApiError::internal(err.to_string()).into(),
    }
}

/// A response of already serialized JSON.
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    let mut response = http::Response::new(Either::Left(Full::new(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl From<ApiError> for Response {
    /// The envelope of a failure, with its kind in `x-pygmy-error` (and the
    /// allowed methods in `Allow`, for a 405). A server error is logged with
    /// its whole chain of causes, which the client is not told.
    fn from(err: ApiError) -> Response {
        let status = err.status();
        if status.is_server_error() {
            tracing::warn!(error = %chain(&err), "request failed");
        }
        let mut response = json(status, &ErrorResponse::new(status.as_u16(), err.message()));
        let headers = response.headers_mut();
        headers.insert(
            ERROR_KIND_HEADER,
            HeaderValue::from_static(err.kind().as_str()),
        );
        if !err.allow().is_empty() {
            let allow: Vec<&str> = err.allow().iter().map(Method::as_str).collect();
            if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                headers.insert(http::header::ALLOW, value);
            }
        }
        response
    }
}

/// Serializes `body`, for caching.
pub fn to_bytes<T: Serialize>(body: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The OpenAPI 3.1 documents of the roles (`docs/openapi/`).
const OPENAPI_FRONTEND: &str = include_str!("../../../docs/openapi/frontend.json");
const OPENAPI_CATALOG: &str = include_str!("../../../docs/openapi/catalog.json");
const OPENAPI_ORDER: &str = include_str!("../../../docs/openapi/order.json");

/// The OpenAPI document of `role`.
pub fn openapi_document(role: Role) -> &'static str {
    match role {
        Role::Frontend => OPENAPI_FRONTEND,
        Role::Catalog => OPENAPI_CATALOG,
        Role::Order => OPENAPI_ORDER,
    }
}

/// `GET /openapi.json`: the OpenAPI document of the node's role.
pub fn openapi(role: Role) -> Response {
    json_bytes(
        StatusCode::OK,
        Bytes::from_static(openapi_document(role).as_bytes()),
    )
}

/// Whether a node can serve its role's requests now; if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// It can serve.
    Ready,
    /// It cannot serve yet: `state` names the case for programs
    /// (`catching_up`, `no_backend`), `reason` says it in words.
    NotReady {
        /// The `state` of the health body.
        state: &'static str,
        /// Why, for the operator.
        reason: String,
    },
}

impl Readiness {
    /// Whether it can serve.
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

/// The body `/health` and `/ready` answer.
fn health_body(node: &NodeInfo, readiness: Readiness, leader: Option<String>) -> HealthResponse {
    let (state, reason) = match readiness {
        Readiness::Ready => ("ok", None),
        Readiness::NotReady { state, reason } => (state, Some(reason)),
    };
    HealthResponse {
        node: node.name.clone(),
        role: node.role.to_string(),
        state: state.to_owned(),
        reason,
        leader,
    }
}

/// `GET /health`, liveness: 200 while the process serves HTTP, whatever
/// its readiness, which the body tells (an orchestrator restarts a node
/// that fails this, so a replica catching up must pass it).
pub fn health(node: &NodeInfo, readiness: Readiness, leader: Option<String>) -> Response {
    json(StatusCode::OK, &health_body(node, readiness, leader))
}

/// `GET /ready`, readiness: 200 once the node can serve its role's
/// requests, 503 with the reason until then (traffic goes elsewhere).
pub fn ready(node: &NodeInfo, readiness: Readiness, leader: Option<String>) -> Response {
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &health_body(node, readiness, leader))
}
