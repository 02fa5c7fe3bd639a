//! The SDK's error: what went wrong with a call, told apart by kind.

use pygmy_core::api::ErrorResponse;

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
    /// Any other error status.
    #[error("server error {status}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
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
    #[error("invalid URL {0:?}: expected http://host:port")]
    InvalidUrl(String),
}

impl ClientError {
    /// Builds the error for an error `status` with this body and kind header.
    pub fn from_status(status: u16, kind: Option<&str>, body: &[u8]) -> ClientError {
        let message = serde_json::from_slice::<ErrorResponse>(body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(500).collect());
        match (status, kind) {
            (404, Some("out_of_stock")) => ClientError::OutOfStock(message),
            (404, _) => ClientError::NotFound(message),
            (400, _) => ClientError::BadRequest(message),
            (401, _) => ClientError::Unauthorized(message),
            (422, _) => ClientError::Unprocessable(message),
            (503, _) => ClientError::Unavailable(message),
            (status, _) => ClientError::Server { status, message },
        }
    }

    /// Whether another replica might answer: the node was unreachable, or
    /// answered that it cannot serve, or failed on its side.
    pub fn is_replica_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Transport { .. } | ClientError::Unavailable(_)
        ) || matches!(self, ClientError::Server { status, .. } if *status >= 500)
    }

    /// The HTTP status this error stands for (a transport failure is 503:
    /// from the caller's side, no replica served).
    pub fn status(&self) -> u16 {
        match self {
            ClientError::NotFound(_) | ClientError::OutOfStock(_) => 404,
            ClientError::BadRequest(_) | ClientError::InvalidUrl(_) => 400,
            ClientError::Unauthorized(_) => 401,
            ClientError::Unprocessable(_) => 422,
            ClientError::Unavailable(_) | ClientError::Transport { .. } => 503,
            ClientError::Decode { .. } => 502,
            ClientError::Server { status, .. } => *status,
        }
    }
}
