//! `raft`'s RPCs, as `POST /replication/<rpc>`: openraft's three, each
//! addressed ([`Addressed`]) to one member of one cluster; Pygmy's two
//! (a follower forwards a write, or asks for a read index); the three
//! that found a cluster or let a replica join one ([`Hello`], [`Adopt`],
//! [`Join`]); and an operator's membership request forwarded to the leader
//! ([`MEMBERS`]). Bodies are JSON, except a snapshot chunk's data, which
//! travels as raw bytes after its JSON header (see [`SnapshotChunk`]).
//!
//! A request that a replica passes on toward the leader ([`Passed`]: a
//! join, an operator's membership request) counts the replicas it went
//! through, and is passed on at most [`MAX_HOPS`] times: replicas whose
//! views of the leader disagree for a moment (a removed leader and a
//! member that has not seen its removal, say) cannot pass it round and
//! round. A forwarded write ([`PROPOSE`]) is written by the leader or
//! refused, never passed on again.

use serde::{Deserialize, Serialize};

use super::identity::Identity;
use super::types::NodeId;
use crate::error::ReplicationError;

/// A follower forwards a write (`Op`) to the leader; answers its outcome,
/// or 503 from a replica that does not lead (the follower retries with
/// the next leader).
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
/// A replica asks the leader to make it a voter ([`Passed`] [`Join`]);
/// answers a [`Joining`].
pub const JOIN: &str = "raft-join";
/// An operator's request, forwarded to the leader: the membership, after a
/// change if one is given ([`Passed`]
/// `Option<`[`crate::replication::MemberChange`]`>`); answers
/// [`crate::replication::Members`].
pub const MEMBERS: &str = "raft-members";

/// The entry formats a replica reads, and the one its service writes as
/// far as it applied (answers [`super::format::Formats`]): the leader asks
/// every member before it raises the format.
pub const FORMATS: &str = "raft-formats";

/// The most times a request is passed on toward the leader: by a replica
/// that is not a member to a member, and by a member that does not lead
/// to the leader.
pub const MAX_HOPS: u32 = 2;

/// A request on its way to the leader, and how many replicas passed it on
/// before this one (0: it comes from the replica that asks).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Passed<T> {
    /// The request.
    pub request: T,
    /// The times it was passed on so far.
    pub hops: u32,
}

impl<T> Passed<T> {
    /// `request`, as its first sender sends it.
    pub fn first(request: T) -> Self {
        Passed { request, hops: 0 }
    }

    /// The same request, passed on once more; `None` if it has been passed
    /// on [`MAX_HOPS`] times already.
    pub fn again(&self) -> Option<Passed<&T>> {
        (self.hops < MAX_HOPS).then_some(Passed {
            request: &self.request,
            hops: self.hops + 1,
        })
    }

    /// [`Passed::again`], or the refusal of a request passed on too often:
    /// the replicas disagree for a moment on who leads, and the asker asks
    /// again (503).
    pub fn again_or_refuse(&self) -> Result<Passed<&T>, ReplicationError> {
        self.again().ok_or_else(|| {
            ReplicationError::unavailable(format!(
                "passed on {MAX_HOPS} times without reaching the leader \
                 (the replicas disagree on who leads): ask again"
            ))
        })
    }
}

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
    fn a_request_is_passed_on_at_most_max_hops_times() {
        let mut passed = Passed::first(7_u8);
        for hops in 1..=MAX_HOPS {
            let again = passed.again().expect("passed on");
            assert_eq!((*again.request, again.hops), (7, hops));
            passed = Passed {
                request: *again.request,
                hops: again.hops,
            };
        }
        assert!(passed.again().is_none());
    }

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
