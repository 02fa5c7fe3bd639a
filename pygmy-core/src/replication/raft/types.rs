//! The openraft type configuration of a service.

use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;

use openraft::{RaftTypeConfig, TokioRuntime};
use serde::{Deserialize, Serialize};

use super::format::{Format, GROUPED, ONE_OP};
use crate::journal::{Machine, Op};

/// A replica's raft id: a founding member's position among the topology's
/// replicas, from 1; a replica that joined later draws one from 2^32 up
/// (see [`super::identity`]).
pub type NodeId = u64;

/// The most ops one [`Proposal`] may hold.
pub const MAX_OPS_PER_ENTRY: usize = 1024;

/// The ops of one raft entry, proposed together: they share the entry's
/// append (one fsync on each replica), its replication round and its apply
/// transaction, and are applied in order. Stamped with the wall clock of
/// the leader that appended them, by which every replica keeps op records
/// for the same window (see
/// [`crate::journal::sqlite::SqliteJournal::apply_with_meta`]).
///
/// On the wire and on disk, in the entry's [format](mod@super::format):
/// [`GROUPED`]: `{"ops": [op, ...], "at_ms": ms}`, with `"raise": n` in
/// an entry that raises the service's format to `n`; [`ONE_OP`]: one
/// [`Stamped`] op, as builds before group commit wrote every entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    from = "ProposalOnDisk<C>",
    bound(deserialize = "C: serde::de::DeserializeOwned")
)]
pub struct Proposal<C> {
    /// The ops, in the order they are applied.
    pub ops: Vec<Op<C>>,
    /// Milliseconds since the Unix epoch on the leader; none in entries
    /// written before stamps were kept.
    pub at_ms: Option<u64>,
    /// The format this entry raises its service to, if it does.
    pub raise: Option<Format>,
    /// The format it is written in: [`ONE_OP`] holds exactly one op and no
    /// raise (a proposal that does not fits is written [`GROUPED`]).
    pub format: Format,
}

/// The two forms an entry's payload takes on disk.
#[derive(Deserialize)]
#[serde(untagged)]
enum ProposalOnDisk<C> {
    Grouped {
        ops: Vec<Op<C>>,
        #[serde(default)]
        at_ms: Option<u64>,
        #[serde(default)]
        raise: Option<Format>,
    },
    One(Stamped<C>),
}

impl<C> From<ProposalOnDisk<C>> for Proposal<C> {
    fn from(read: ProposalOnDisk<C>) -> Self {
        match read {
            ProposalOnDisk::Grouped { ops, at_ms, raise } => Proposal {
                ops,
                at_ms,
                raise,
                format: GROUPED,
            },
            ProposalOnDisk::One(Stamped { op, at_ms }) => Proposal {
                ops: vec![op],
                at_ms,
                raise: None,
                format: ONE_OP,
            },
        }
    }
}

/// A [`Proposal`] written [`GROUPED`], borrowed.
#[derive(Serialize)]
struct GroupedRef<'a, C> {
    ops: &'a [Op<C>],
    #[serde(skip_serializing_if = "Option::is_none")]
    at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raise: Option<Format>,
}

/// A [`Proposal`] written [`ONE_OP`], borrowed.
#[derive(Serialize)]
struct StampedRef<'a, C> {
    #[serde(flatten)]
    op: &'a Op<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at_ms: Option<u64>,
}

impl<C: Serialize> Serialize for Proposal<C> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        match (self.format, self.ops.as_slice(), self.raise) {
            (ONE_OP, [op], None) => StampedRef {
                op,
                at_ms: self.at_ms,
            }
            .serialize(out),
            _ => GroupedRef {
                ops: &self.ops,
                at_ms: self.at_ms,
                raise: self.raise,
            }
            .serialize(out),
        }
    }
}

/// Milliseconds since the Unix epoch on this machine.
fn now_ms() -> Option<u64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

impl<C> Proposal<C> {
    /// `ops`, stamped with this machine's clock, written [`GROUPED`].
    pub fn now(ops: Vec<Op<C>>) -> Self {
        Proposal::written(GROUPED, ops)
    }

    /// `ops`, stamped with this machine's clock, written in `format` (one
    /// op, for [`ONE_OP`]).
    pub fn written(format: Format, ops: Vec<Op<C>>) -> Self {
        Proposal {
            ops,
            at_ms: now_ms(),
            raise: None,
            format,
        }
    }

    /// An entry that raises the service's format to `format` (and, as a
    /// tick, stamps its clock), written in that format.
    pub fn raise(format: Format) -> Self {
        Proposal {
            ops: Vec::new(),
            at_ms: now_ms(),
            raise: Some(format),
            format: format.max(GROUPED),
        }
    }
}

impl<C> From<Op<C>> for Proposal<C> {
    /// One op without a stamp (its record is kept until a stamped op after
    /// it is older than the window), written [`ONE_OP`].
    fn from(op: Op<C>) -> Self {
        Proposal {
            ops: vec![op],
            at_ms: None,
            raise: None,
            format: ONE_OP,
        }
    }
}

/// An entry's payload as the raft log held it before ops were grouped
/// into [`Proposal`]s: one op, and the leader's clock. Still read from
/// logs written then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped<C> {
    /// The op.
    #[serde(flatten)]
    pub op: Op<C>,
    /// Milliseconds since the Unix epoch on the leader, if kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

/// A member as the raft membership names it: its name in the topology and,
/// for a replica added at run time, the URL its peers reach it at (a
/// replica of the topology every node started with needs none: its peers
/// know its address from there).
///
/// On the wire and on disk it is openraft's `BasicNode` (`{"addr": name}`)
/// with an optional `url`, so a membership written before URLs were kept
/// reads as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNode {
    /// The replica's name.
    #[serde(rename = "addr")]
    pub name: String,
    /// Where to reach it, if its peers' topology may not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl ReplicaNode {
    /// A replica of the topology, reached by its name.
    pub fn named(name: &str) -> Self {
        ReplicaNode {
            name: name.to_owned(),
            url: None,
        }
    }
}

/// openraft's types for service `M`: log entries carry grouped ops
/// ([`Proposal`]`<M::Command>`), and each applied entry answers the
/// outcome of each of its ops, in order (none for openraft's own blank and
/// membership entries). A member is a
/// [`ReplicaNode`]; a snapshot is a file (see [`super::sqlite::snapshot`]).
pub struct RaftTypes<M>(PhantomData<fn() -> M>);

impl<M: Machine> RaftTypeConfig for RaftTypes<M> {
    type D = Proposal<M::Command>;
    type R = Vec<M::Outcome>;
    type NodeId = NodeId;
    type Node = ReplicaNode;
    type Entry = openraft::Entry<Self>;
    type SnapshotData = tokio::fs::File;
    type AsyncRuntime = TokioRuntime;
    type Responder = openraft::impls::OneshotResponder<Self>;
}

// openraft asks for these on the (empty) config type; a derive would
// wrongly ask them of `M` too.
impl<M> fmt::Debug for RaftTypes<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RaftTypes")
    }
}
impl<M> Clone for RaftTypes<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for RaftTypes<M> {}
impl<M> Default for RaftTypes<M> {
    fn default() -> Self {
        RaftTypes(PhantomData)
    }
}
impl<M> PartialEq for RaftTypes<M> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<M> Eq for RaftTypes<M> {}
impl<M> PartialOrd for RaftTypes<M> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for RaftTypes<M> {
    fn cmp(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}
