//! `raft`'s RPCs, as `POST /replication/<rpc>`: openraft's three, each
//! addressed ([`Addressed`]) to one member of one cluster; Pygmy's two
//! (a follower forwards a write, or asks for a read index); the three
//! that found a cluster or let a replica join one ([`Hello`], [`Adopt`],
//! [`Join`]); and an operator's membership request forwarded to the leader
//! ([`MEMBERS`]). Bodies are JSON, except a snapshot chunk's data, which
//! travels as raw bytes after its JSON header (see [`SnapshotChunk`]).

use serde::{Deserialize, Serialize};

use super::identity::Identity;
use super::types::NodeId;

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
/// Who are you? Answers a [`Hello`].
pub const HELLO: &str = "raft-hello";
/// The founder asks a replica to take its founding identity ([`Adopt`]).
pub const ADOPT: &str = "raft-adopt";
/// A replica asks the leader to make it a voter ([`Join`]); answers a
/// [`Joining`].
pub const JOIN: &str = "raft-join";
/// An operator's request, forwarded to the leader: the membership, after a
/// change if one is given (`Option<`[`crate::replication::MemberChange`]`>`);
/// answers [`crate::replication::Members`].
pub const MEMBERS: &str = "raft-members";

/// An openraft call, for one member (`to`) of one cluster.
#[derive(Debug, Serialize, Deserialize)]
pub struct Addressed<T> {
    /// The cluster's id.
    pub cluster: String,
    /// The raft id of the member called.
    pub to: NodeId,
    /// openraft's request.
    pub request: T,
}

/// What a replica says of itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// Its identity, if it has one (it belongs to a cluster).
    pub identity: Option<Identity>,
    /// Whether its cluster was founded (it knows a membership): a cluster
    /// being founded is not one to join.
    pub founded: bool,
    /// The name of the leader it knows, if any.
    pub leader: Option<String>,
}

/// Take this identity, unless you have one already; answers the
/// [`Identity`] the replica has now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Adopt {
    /// The identity offered.
    pub identity: Identity,
}

/// Make replica `name`, now raft id `id`, a voter of `cluster`, in place of
/// any other id it had.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Join {
    /// The cluster's id.
    pub cluster: String,
    /// The replica's name.
    pub name: String,
    /// Its raft id.
    pub id: NodeId,
}

/// Where a [`Join`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Joining {
    /// A learner, still behind the leader: ask again.
    CatchingUp,
    /// A voter.
    Voter,
}

/// The JSON header of a snapshot chunk; the chunk's bytes follow it in the
/// body: `<header length, 4 bytes big-endian><header><data>`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotChunk<V, M> {
    /// The cluster's id.
    pub cluster: String,
    /// The raft id of the member called.
    pub to: NodeId,
    /// The leader's vote.
    pub vote: V,
    /// The snapshot's meta.
    pub meta: M,
    /// Where the chunk's data starts in the snapshot.
    pub offset: u64,
    /// Whether this is the last chunk.
    pub done: bool,
}

/// Frames a snapshot chunk: its header, then its raw data.
pub fn frame_chunk<T: Serialize>(header: &T, data: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let header = serde_json::to_vec(header)?;
    let len = u32::try_from(header.len()).unwrap_or(u32::MAX);
    let mut body = Vec::with_capacity(4 + header.len() + data.len());
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(&header);
    body.extend_from_slice(data);
    Ok(body)
}

/// Splits a framed snapshot chunk into its header and its data; `None` if
/// the frame is cut short.
pub fn unframe_chunk(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = body.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_frames_and_unframes() {
        let body = frame_chunk(&("h", 1), &[0, 1, 2, 255]).expect("frames");
        let (header, data) = unframe_chunk(&body).expect("unframes");
        assert_eq!(header, br#"["h",1]"#);
        assert_eq!(data, &[0, 1, 2, 255]);
        assert_eq!(unframe_chunk(&body[..5]), None);
        assert_eq!(unframe_chunk(&[0, 0]), None);
    }
}
