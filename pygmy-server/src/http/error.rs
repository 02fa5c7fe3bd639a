//! [`ApiError`]: every failure of a request, and the one place where each
//! kind of failure ([`ErrorKind`], from `pygmy-core`) becomes an HTTP
//! status ([`status_of`]). The envelope it is answered with is written by
//! [`super::response`].

use http::{Method, StatusCode};
use pygmy_client::ClientError;
use pygmy_core::api::routes::RouteError;
use pygmy_core::balance::CallError;
use pygmy_core::error::chain;
use pygmy_core::types::ItemId;
use pygmy_core::{ErrorKind, ReplicationError, StoreError};

/// The HTTP status of each kind of failure: the one mapping.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::NotFound | ErrorKind::OutOfStock => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Misdirected => StatusCode::MISDIRECTED_REQUEST,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A request failed: its kind, a message for the client, and what caused
/// it (kept for the log, never sent).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
    /// For a 405: the methods the path takes (the `Allow` header).
    allow: Vec<Method>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    /// A failure of `kind`, told to the client as `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            allow: Vec::new(),
            source: None,
        }
    }

    /// The same, caused by `source`.
    pub fn caused_by(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ApiError {
            source: Some(Box::new(source)),
            ..ApiError::new(kind, message)
        }
    }

    /// A missing or malformed parameter or body (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::BadRequest, message)
    }

    /// An internal endpoint called without the cluster token (401).
    pub fn unauthorized() -> Self {
        ApiError::new(
            ErrorKind::Unauthorized,
            "this endpoint needs the cluster token",
        )
    }

    /// An internal endpoint called over TLS without a client certificate
    /// of the cluster's CA (401).
    pub fn unauthorized_without_certificate() -> Self {
        ApiError::new(
            ErrorKind::Unauthorized,
            "this endpoint needs a client certificate of the cluster's CA, and the cluster token",
        )
    }

    /// No such thing (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::NotFound, message)
    }

    /// No book with this id (404).
    pub fn no_such_item(item: ItemId) -> Self {
        ApiError::not_found(format!("No item with id {item} in the catalog"))
    }

    /// The seed's answer to a buy of a sold-out item (404).
    pub fn out_of_stock(item: ItemId) -> Self {
        ApiError::new(
            ErrorKind::OutOfStock,
            format!("The item with id {item} is no longer present in the catalog server"),
        )
    }

    /// A body over `limit` bytes (413).
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    }

    /// The client was too slow to send its request (408).
    pub fn request_timeout() -> Self {
        ApiError::new(
            ErrorKind::RequestTimeout,
            "the request was not received in time",
        )
    }

    /// Well formed but impossible (422).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Unprocessable, message)
    }

    /// Sent to a shard that does not hold it (421).
    pub fn misdirected(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Misdirected, message)
    }

    /// No replica could serve (503).
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Unavailable, message)
    }

    /// A bug or a failing disk (500).
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Internal, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        status_of(self.kind)
    }

    /// For a 405: the methods the path takes (the `Allow` header).
    pub fn allow(&self) -> &[Method] {
        &self.allow
    }
}

impl From<RouteError> for ApiError {
    fn from(err: RouteError) -> Self {
        match err {
            RouteError::NotFound { .. } => ApiError::not_found(err.to_string()),
            RouteError::MethodNotAllowed {
                ref method,
                ref allow,
                ..
            } => ApiError {
                allow: allow.clone(),
                ..ApiError::new(
                    ErrorKind::MethodNotAllowed,
                    format!("method {method} is not allowed here"),
                )
            },
            RouteError::BadParam(bad) => ApiError::bad_request(bad.message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::caused_by(
            ErrorKind::Internal,
            format!("internal error: {}", chain(&err)),
            err,
        )
    }
}

impl From<ReplicationError> for ApiError {
    fn from(err: ReplicationError) -> Self {
        ApiError::caused_by(err.kind(), chain(&err), err)
    }
}

impl From<ClientError> for ApiError {
    /// A backend's answer, passed on to our caller as the same kind; a
    /// backend that refused our token is our misconfiguration (500), and
    /// one that could not be reached is "no replica could serve" (503).
    fn from(err: ClientError) -> Self {
        let kind = match err.kind() {
            ErrorKind::Unauthorized => ErrorKind::Internal,
            kind => kind,
        };
        let message = match err.answered() {
            Some(message) if kind == err.kind() => message.to_owned(),
            _ => err.to_string(),
        };
        ApiError::caused_by(kind, message, err)
    }
}

impl From<CallError<ClientError>> for ApiError {
    /// A call on a backend's replicas: the answer of the replica that
    /// answered, or "no replica could serve" (503).
    fn from(err: CallError<ClientError>) -> Self {
        match err {
            CallError::Answered(err) => err.into(),
            err @ CallError::NoReplica { .. } => {
                ApiError::caused_by(ErrorKind::Unavailable, err.to_string(), err)
            }
        }
    }
}
