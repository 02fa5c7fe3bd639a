//! The errors of the stores and of replication, and [`ErrorKind`]: the one
//! list of the kinds of failure a Pygmy node answers with.
//!
//! The kinds are named here once. The server maps each kind to its HTTP
//! status (in one place, `pygmy_server::http`); the client decodes the kind
//! a node names in its `x-pygmy-error` header back into its own error (in
//! one place, `pygmy_client::ClientError`). This crate knows no HTTP status.

use std::fmt;

/// What kind of failure a request met: shared by every node (which names it
/// in the `x-pygmy-error` response header) and every client (which reads it
/// back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A missing or malformed parameter or body.
    BadRequest,
    /// An internal endpoint called without the cluster token.
    Unauthorized,
    /// No such item, order or endpoint.
    NotFound,
    /// A buy of a sold-out item (the seed answers it as "not found").
    OutOfStock,
    /// A known endpoint called with another method.
    MethodNotAllowed,
    /// A body over the size limit.
    PayloadTooLarge,
    /// The request was not received in time.
    RequestTimeout,
    /// Well formed, but impossible (a negative cost, stock below zero, an
    /// idempotency key reused for another item).
    Unprocessable,
    /// Refused for the state the service is in now (a membership change
    /// that would leave fewer than a majority of its voters answering); it
    /// may be possible once that changes, or forced.
    Conflict,
    /// Sent to a shard that does not hold it (a buy whose key belongs to
    /// another order shard, a write of an item of another catalog shard):
    /// the caller's shard map is not the store's.
    Misdirected,
    /// No replica can serve now (down, catching up, no leader); another
    /// replica, or a later retry, may.
    Unavailable,
    /// A bug, or a failing disk.
    Internal,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::BadRequest,
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::OutOfStock,
        ErrorKind::MethodNotAllowed,
        ErrorKind::PayloadTooLarge,
        ErrorKind::RequestTimeout,
        ErrorKind::Unprocessable,
        ErrorKind::Conflict,
        ErrorKind::Misdirected,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    /// The kind's name on the wire (`x-pygmy-error: out_of_stock`).
    ///
    /// ```
    /// use pygmy_core::ErrorKind;
    /// assert_eq!(ErrorKind::OutOfStock.as_str(), "out_of_stock");
    /// assert_eq!(ErrorKind::parse("out_of_stock"), Some(ErrorKind::OutOfStock));
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotFound => "not_found",
            ErrorKind::OutOfStock => "out_of_stock",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::Unprocessable => "unprocessable",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Misdirected => "misdirected",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind named `name`, if it is one.
    pub fn parse(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// Whether another replica (or a retry) might succeed where this failed.
    pub fn is_replica_failure(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Internal)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store failed to read or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the statement.
    #[cfg(feature = "sqlite")]
    #[error("database error")]
    Database(#[from] rusqlite::Error),
    /// A write the store refuses by its own rules (not the database's).
    #[error("refused by the store: {0}")]
    Refused(String),
    /// A stored record is inconsistent: a bug or a corrupt file.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A stored record could not be decoded: a bug or a corrupt file.
    #[error("undecodable record")]
    Decode(#[from] serde_json::Error),
    /// A state machine's own storage (a raft log, a snapshot) failed.
    #[error("storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The blocking task that ran the statement died.
    #[error("storage task failed")]
    Task(#[from] tokio::task::JoinError),
    /// The store could not be opened (path, permissions, schema).
    #[error("cannot open the store at {path}")]
    Open {
        /// The file or directory.
        path: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Replication could not complete an operation.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No replica could take the write (all unreachable, or catching up).
    #[error("no replica can take the write: {0}")]
    Unavailable(String),
    /// A peer sent something this node cannot decode.
    #[error("bad message from a peer")]
    BadMessage(#[source] serde_json::Error),
    /// A peer's message decodes, but makes no sense.
    #[error("invalid message from a peer: {0}")]
    Invalid(String),
    /// The peer RPC is not one this backend knows.
    #[error("unknown replication call {0:?}")]
    UnknownRpc(String),
    /// The replica's configuration is inconsistent.
    #[error("replication misconfigured: {0}")]
    Config(String),
    /// A request understood, which cannot be carried out (a membership
    /// change that is not possible); `kind` says how the caller should take
    /// it.
    #[error("{message}")]
    Refused {
        /// The kind of refusal.
        kind: ErrorKind,
        /// Why.
        message: String,
    },
}

impl ReplicationError {
    /// [`ReplicationError::Unavailable`], saying why.
    pub fn unavailable(why: impl std::fmt::Display) -> Self {
        ReplicationError::Unavailable(why.to_string())
    }

    /// [`ReplicationError::Refused`]: a request understood that cannot be
    /// carried out, as a failure of `kind`.
    pub fn refused(kind: ErrorKind, message: impl Into<String>) -> Self {
        ReplicationError::Refused {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure this is, for the caller (a client, or a peer).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReplicationError::Unavailable(_) => ErrorKind::Unavailable,
            ReplicationError::BadMessage(_) | ReplicationError::Invalid(_) => ErrorKind::BadRequest,
            ReplicationError::UnknownRpc(_) => ErrorKind::NotFound,
            ReplicationError::Store(_) | ReplicationError::Config(_) => ErrorKind::Internal,
            ReplicationError::Refused { kind, .. } => *kind,
        }
    }
}

/// A call to a peer failed before it produced an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached (refused, timed out, reset): the call
    /// may or may not have been applied there.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer's name.
        peer: String,
        /// What the connection said.
        reason: String,
    },
    /// The peer answered with an error.
    #[error("peer {peer} answered {kind}: {message}")]
    Refused {
        /// The peer's name.
        peer: String,
        /// What kind of failure it named.
        kind: ErrorKind,
        /// Its message, for the log.
        message: String,
    },
    /// The request could not be encoded, or the answer decoded.
    #[error("peer {peer}: {reason}")]
    Codec {
        /// The peer's name.
        peer: String,
        /// What was wrong.
        reason: String,
    },
}

impl TransportError {
    /// Whether another replica should be tried: the peer did not answer, or
    /// answered that it cannot serve now.
    pub fn passes_over(&self) -> bool {
        match self {
            TransportError::Unreachable { .. } => true,
            TransportError::Refused { kind, .. } => *kind == ErrorKind::Unavailable,
            TransportError::Codec { .. } => false,
        }
    }
}

/// An error's message with every source after it, on one line
/// (`a: b: c`), for logs and for answers that carry only text.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}
