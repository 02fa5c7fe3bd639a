//! `raft`'s RPCs, as `POST /replication/<rpc>`: openraft's three, and
//! Pygmy's two (a follower forwards a write, or asks for a read index).
//! The bodies are openraft's own types, as JSON.

/// A follower forwards a write (`Op`) to the leader; answers its outcome.
pub const PROPOSE: &str = "propose";
/// openraft's `AppendEntries`.
pub const APPEND: &str = "raft-append";
/// openraft's `Vote`.
pub const VOTE: &str = "raft-vote";
/// openraft's `InstallSnapshot` (one chunk).
pub const SNAPSHOT: &str = "raft-snapshot";
/// A follower asks the leader for a read index (`Option<LogId>`).
pub const READ_INDEX: &str = "read-index";
