//! The SDK's error: what went wrong with a call, told apart by kind.
//!
//! A node names the kind of every failure in the `x-pygmy-error` header,
//! from the one list in `pygmy-core` ([`ErrorKind`]); [`ClientError::answer`]
//! is the one place that header is decoded.

use pygmy_core::api::internal::Refusal;
use pygmy_core::api::public::ErrorResponse;
use pygmy_core::balance::ReplicaFailure;
use pygmy_core::ErrorKind;

/// The response header in which a node names the kind of a failure, for
/// callers that must tell apart what the seed's envelope does not (an
/// unknown item and a sold-out one are both 404).
pub const ERROR_KIND_HEADER: &str = "x-pygmy-error";

/// A call to a Pygmy node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No such item (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The item is sold out (404, as the seed answers).
    #[error("out of stock: {0}")]
    OutOfStock(String),
    /// The request was malformed (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request was well formed but impossible (422).
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    /// The cluster token was missing or wrong (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// No replica could serve (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Any other failure the node answered with.
    #[error("{kind}: {message}")]
    Failed {
        /// Its kind.
        kind: ErrorKind,
        /// The envelope's message, or the body.
        message: String,
    },
    /// The node could not be reached, or the connection failed mid-call.
    #[error("cannot reach {url}: {reason}")]
    Transport {
        /// Where the call went.
        url: String,
        /// What failed.
        reason: String,
        /// Whether the connection was never made (nothing was sent): a
        /// non-idempotent call may then be retried elsewhere.
        connect: bool,
    },
    /// The answer was not the JSON expected.
    #[error("undecodable answer from {url}: {reason}")]
    Decode {
        /// Where the call went.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The base URL given is not a valid http URL.
    #[error("invalid URL {0:?}: expected http://host:port (or https://)")]
    InvalidUrl(String),
    /// The call could not be made as asked (a header value that HTTP cannot
    /// carry, a body that does not encode): nothing was sent.
    #[error("the call cannot be made: {0}")]
    InvalidCall(String),
}

impl ClientError {
    /// Decodes a node's error answer: its `status`, the kind it named in
    /// [`ERROR_KIND_HEADER`] (or, from a server that names none, the kind
    /// the status stands for) and the envelope's message in `body`.
    pub fn answer(status: u16, kind: Option<&str>, body: &[u8]) -> ClientError {
        let message = serde_json::from_slice::<ErrorResponse>(body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(500).collect());
        let kind = kind
            .and_then(ErrorKind::parse)
            .unwrap_or_else(|| kind_of_status(status));
        ClientError::of_kind(kind, message)
    }

    /// The error for a failure of `kind`.
    pub fn of_kind(kind: ErrorKind, message: String) -> ClientError {
        match kind {
            ErrorKind::NotFound => ClientError::NotFound(message),
            ErrorKind::OutOfStock => ClientError::OutOfStock(message),
            ErrorKind::BadRequest => ClientError::BadRequest(message),
            ErrorKind::Unprocessable => ClientError::Unprocessable(message),
            ErrorKind::Unauthorized => ClientError::Unauthorized(message),
            ErrorKind::Unavailable => ClientError::Unavailable(message),
            kind => ClientError::Failed { kind, message },
        }
    }

    /// The kind of failure: what the node answered, or for a call that had
    /// no answer, what it amounts to for the caller (an unreachable node:
    /// unavailable).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::NotFound(_) => ErrorKind::NotFound,
            ClientError::OutOfStock(_) => ErrorKind::OutOfStock,
            ClientError::BadRequest(_)
            | ClientError::InvalidUrl(_)
            | ClientError::InvalidCall(_) => ErrorKind::BadRequest,
            ClientError::Unprocessable(_) => ErrorKind::Unprocessable,
            ClientError::Unauthorized(_) => ErrorKind::Unauthorized,
            ClientError::Unavailable(_) | ClientError::Transport { .. } => ErrorKind::Unavailable,
            ClientError::Failed { kind, .. } => *kind,
            ClientError::Decode { .. } => ErrorKind::Internal,
        }
    }

    /// The message of the node's answer, if the node answered.
    pub fn answered(&self) -> Option<&str> {
        match self {
            ClientError::NotFound(m)
            | ClientError::OutOfStock(m)
            | ClientError::BadRequest(m)
            | ClientError::Unprocessable(m)
            | ClientError::Unauthorized(m)
            | ClientError::Unavailable(m)
            | ClientError::Failed { message: m, .. } => Some(m),
            ClientError::Transport { .. }
            | ClientError::Decode { .. }
            | ClientError::InvalidUrl(_)
            | ClientError::InvalidCall(_) => None,
        }
    }

    /// A short label of the failure, for reports: the kind the node
    /// answered, or what kept the call from an answer.
    pub fn label(&self) -> &'static str {
        match self {
            ClientError::Transport { .. } => "transport",
            ClientError::Decode { .. } => "decode",
            ClientError::InvalidUrl(_) => "invalid_url",
            ClientError::InvalidCall(_) => "invalid_call",
            answered => answered.kind().as_str(),
        }
    }

    /// Whether another replica might answer: the node was unreachable, or
    /// answered that it cannot serve, or failed on its side.
    pub fn is_replica_failure(&self) -> bool {
        ReplicaFailure::is_replica_failure(self)
    }
}

impl From<Refusal> for ClientError {
    /// An item of a call of many that was not made, as a call of its own
    /// would have failed: the kind it names (an unknown one: internal).
    fn from(refusal: Refusal) -> Self {
        let kind = ErrorKind::parse(&refusal.kind).unwrap_or(ErrorKind::Internal);
        ClientError::of_kind(kind, refusal.message)
    }
}

impl ReplicaFailure for ClientError {
    fn is_replica_failure(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Decode { .. }
            | ClientError::InvalidUrl(_)
            | ClientError::InvalidCall(_) => false,
            answered => answered.kind().is_replica_failure(),
        }
    }
}

/// The kind a bare HTTP status stands for, for an answer that names none
/// (a proxy's, say).
fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        400 => ErrorKind::BadRequest,
        401 | 403 => ErrorKind::Unauthorized,
        404 => ErrorKind::NotFound,
        405 => ErrorKind::MethodNotAllowed,
        408 => ErrorKind::RequestTimeout,
        409 => ErrorKind::Conflict,
        421 => ErrorKind::Misdirected,
        413 => ErrorKind::PayloadTooLarge,
        422 => ErrorKind::Unprocessable,
        502..=504 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}
