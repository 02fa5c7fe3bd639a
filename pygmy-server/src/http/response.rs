//! Building responses: JSON bodies, and the answers every node gives alike.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::Full;
use pygmy_core::api::HealthResponse;
use pygmy_core::topology::Role;
use serde::Serialize;

use super::error::ApiError;
use super::Identity;

/// A response as hyper sends it.
pub type Response = http::Response<Full<Bytes>>;

/// The result of a handler.
pub type ApiResult = Result<Response, ApiError>;

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, Bytes::from(bytes)),
        Err(err) => ApiError::internal(err.to_string()).into_response(),
    }
}

/// A response of already serialized JSON.
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    let mut response = http::Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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

/// `GET /health`: 200 once the node serves, 503 while it catches up; with
/// the leader a raft replica knows.
pub fn health(identity: &Identity, ready: bool, leader: Option<String>) -> Response {
    let body = HealthResponse {
        leader,
        node: identity.name.clone(),
        role: identity.role.to_string(),
        state: if ready { "ok" } else { "catching_up" }.to_owned(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &body)
}
