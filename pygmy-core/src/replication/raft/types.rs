//! The openraft type configuration of a service.

use std::cmp::Ordering;
use std::fmt;
use std::io::Cursor;
use std::marker::PhantomData;

use openraft::{BasicNode, RaftTypeConfig, TokioRuntime};

use crate::journal::{Machine, Op};

/// A replica's raft id: its position among the service's replicas, from 1.
pub type NodeId = u64;

/// openraft's types for service `M`: log entries carry `Op<M::Command>`,
/// and each applied entry answers `Option<M::Outcome>` (`None` for
/// openraft's own blank and membership entries). A node's address is its
/// name in the topology.
pub struct RaftTypes<M>(PhantomData<fn() -> M>);

impl<M: Machine> RaftTypeConfig for RaftTypes<M> {
    type D = Op<M::Command>;
    type R = Option<M::Outcome>;
    type NodeId = NodeId;
    type Node = BasicNode;
    type Entry = openraft::Entry<Self>;
    type SnapshotData = Cursor<Vec<u8>>;
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
