//! Requests and responses on the wire: the parsed request handlers see, and
//! [`ApiError`], which maps every failure to its HTTP status and the seed's
//! JSON envelope in exactly one place.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use pygmy_client::{ClientError, ERROR_KIND_HEADER};
use pygmy_core::api::ErrorResponse;
use pygmy_core::types::{IdempotencyKey, ItemId};
use pygmy_core::{ReplicationError, StoreError};
use serde::Serialize;

/// A response as hyper sends it.
pub type Response = http::Response<Full<Bytes>>;

/// A request whose body has been read (within the size and time limits).
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path, split on `/`, without empty segments (`/item/1` is
    /// `["item", "1"]`). Segments stay percent-encoded.
    pub segments: Vec<String>,
    /// The query pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Request {
    /// Builds a request from its parts (the path and query of the URI).
    pub fn new(
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Self {
        Request {
            method,
            segments: path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            query: query
                .map(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default(),
            headers,
            body,
        }
    }

    /// The path segments as `&str`s, for `match`.
    pub fn path(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The required parameter `name`, not empty.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.param(name) {
            Some(value) if !value.trim().is_empty() => Ok(value),
            _ => Err(ApiError::BadRequest(format!(
                "the query parameter {name:?} is required"
            ))),
        }
    }

    /// The idempotency key the request carries, if any (400 if invalid).
    pub fn idempotency_key(&self) -> Result<Option<IdempotencyKey>, ApiError> {
        let Some(raw) = self.headers.get(pygmy_client::http::IDEMPOTENCY_HEADER) else {
            return Ok(None);
        };
        let raw = raw.to_str().map_err(|_| {
            ApiError::BadRequest("the Idempotency-Key header is not text".to_owned())
        })?;
        IdempotencyKey::parse(raw)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }

    /// Checks the cluster token, if the cluster has one.
    pub fn authorize(&self, token: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = token else {
            return Ok(());
        };
        let given = self
            .headers
            .get(pygmy_client::http::TOKEN_HEADER)
            .map(HeaderValue::as_bytes);
        if given.is_some_and(|given| constant_time_eq(given, expected.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses an item id (`id=3`, `/item/3`): 400 unless it is an integer.
pub fn parse_item_id(raw: &str) -> Result<ItemId, ApiError> {
    raw.trim()
        .parse::<i64>()
        .map(ItemId)
        .map_err(|_| ApiError::BadRequest(format!("the id must be an integer, not {raw:?}")))
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A missing or malformed parameter or body.
    #[error("{0}")]
    BadRequest(String),
    /// An internal endpoint called without the cluster token.
    #[error("this endpoint needs the cluster token")]
    Unauthorized,
    /// No such item (or route).
    #[error("{0}")]
    NotFound(String),
    /// A buy of an item that is sold out: the seed's 404 (see
    /// [`ApiError::out_of_stock`] for its message).
    #[error("{0}")]
    OutOfStock(String),
    /// A known path with another method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(Method),
    /// A body over the size limit.
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The client was too slow to send its request.
    #[error("the request was not received in time")]
    RequestTimeout,
    /// Well formed but impossible.
    #[error("{0}")]
    Unprocessable(String),
    /// No replica could serve.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a failing disk.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// No book with this id.
    pub fn no_such_item(item: ItemId) -> ApiError {
        ApiError::NotFound(format!("No item with id {item} in the catalog"))
    }

    /// The seed's answer to a buy of a sold-out item.
    pub fn out_of_stock(item: ItemId) -> ApiError {
        ApiError::OutOfStock(format!(
            "The item with id {item} is no longer present in the catalog server"
        ))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) | ApiError::OutOfStock(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The kind named in the `x-pygmy-error` header.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::OutOfStock(_) => "out_of_stock",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The envelope response.
    pub fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let body = ErrorResponse::new(status.as_u16(), self.to_string());
        let mut response = json(status, &body);
        response
            .headers_mut()
            .insert(ERROR_KIND_HEADER, HeaderValue::from_static(self.kind()));
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Internal(err.to_string())
    }
}

impl From<ReplicationError> for ApiError {
    fn from(err: ReplicationError) -> Self {
        match err.http_status() {
            400 => ApiError::BadRequest(err.to_string()),
            404 => ApiError::NotFound(err.to_string()),
            503 => ApiError::Unavailable(err.to_string()),
            _ => ApiError::Internal(err.to_string()),
        }
    }
}

impl From<ClientError> for ApiError {
    /// A backend's answer, passed on to our caller as the same kind.
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::NotFound(m) => ApiError::NotFound(m),
            ClientError::OutOfStock(m) => ApiError::OutOfStock(m),
            ClientError::BadRequest(m) => ApiError::BadRequest(m),
            ClientError::Unprocessable(m) => ApiError::Unprocessable(m),
            ClientError::Unauthorized(m) => {
                ApiError::Internal(format!("a backend refused our cluster token: {m}"))
            }
            other if other.is_replica_failure() => ApiError::Unavailable(other.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, Bytes::from(bytes)),
        Err(err) => ApiError::Internal(err.to_string()).into_response(),
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
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The result of a handler.
pub type ApiResult = Result<Response, ApiError>;
