//! The errors of the stores and of replication.

/// A store failed to read or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the statement.
    #[error("database error: {0}")]
    Database(String),
    /// A stored record could not be decoded: a bug or a corrupt file.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The blocking task that ran the statement died.
    #[error("storage task failed: {0}")]
    Task(String),
    /// The store could not be opened (path, permissions, schema).
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        /// The file or directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Database(err.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Corrupt(err.to_string())
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(err: tokio::task::JoinError) -> Self {
        StoreError::Task(err.to_string())
    }
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
    #[error("bad message from a peer: {0}")]
    BadMessage(String),
    /// The peer RPC is not one this backend knows.
    #[error("unknown replication call {0:?}")]
    UnknownRpc(String),
    /// The replica's configuration is inconsistent.
    #[error("replication misconfigured: {0}")]
    Config(String),
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
    /// The peer answered with an error status.
    #[error("peer {peer} answered {status}: {body}")]
    Status {
        /// The peer's name.
        peer: String,
        /// Its HTTP status.
        status: u16,
        /// Its body, for the log.
        body: String,
    },
}

impl ReplicationError {
    /// The HTTP status this error answers with, on a peer call or a client
    /// request: the one mapping both the server and the tests use.
    pub fn http_status(&self) -> u16 {
        match self {
            ReplicationError::Unavailable(_) => 503,
            ReplicationError::BadMessage(_) => 400,
            ReplicationError::UnknownRpc(_) => 404,
            ReplicationError::Store(_) | ReplicationError::Config(_) => 500,
        }
    }
}
