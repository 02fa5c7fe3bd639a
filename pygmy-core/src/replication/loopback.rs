//! An in-process [`Transport`] between replicators, for tests: calls go
//! straight to the peer's [`Replicator::handle`], a replica can be cut off
//! from the others (both ways), one kind of call to one replica can be
//! dropped (as a network that loses one stream), and the calls each
//! replica made are counted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};

use async_trait::async_trait;

use super::{Replicator, Transport};
use crate::error::TransportError;
use crate::journal::Machine;

/// Routes calls to replicators registered by name.
pub struct Loopback<M: Machine> {
    peers: RwLock<HashMap<String, Weak<dyn Replicator<M>>>>,
    cut: Mutex<HashSet<String>>,
    /// `(rpc, callee)`: those calls fail as if the callee were unreachable.
    dropped: Mutex<HashSet<(String, String)>>,
    /// `(caller, rpc)`: how many such calls were made.
    calls: Mutex<HashMap<(String, String), u64>>,
}

impl<M: Machine> Default for Loopback<M> {
    fn default() -> Self {
        Loopback {
            peers: RwLock::new(HashMap::new()),
            cut: Mutex::new(HashSet::new()),
            dropped: Mutex::new(HashSet::new()),
            calls: Mutex::new(HashMap::new()),
        }
    }
}

impl<M: Machine> Loopback<M> {
    /// An empty network.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Makes `replicator` reachable as `name`.
    pub fn register(&self, name: &str, replicator: &Arc<dyn Replicator<M>>) {
        self.peers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), Arc::downgrade(replicator));
    }

    /// The transport for the replica `caller`: its calls fail while it or
    /// the callee is cut off, as across a real partition.
    pub fn endpoint(self: &Arc<Self>, caller: &str) -> Arc<Endpoint<M>> {
        Arc::new(Endpoint {
            net: Arc::clone(self),
            caller: caller.to_owned(),
        })
    }

    fn is_cut(&self, name: &str) -> bool {
        self.cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// Drops every `rpc` call to `callee` (`true`), or lets them through
    /// again: the callee keeps answering every other call.
    pub fn set_dropped(&self, rpc: &str, callee: &str, dropped: bool) {
        let mut set = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        let call = (rpc.to_owned(), callee.to_owned());
        if dropped {
            set.insert(call);
        } else {
            set.remove(&call);
        }
    }

    fn is_dropped(&self, rpc: &str, callee: &str) -> bool {
        self.dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(rpc.to_owned(), callee.to_owned()))
    }

    /// How many `rpc` calls `caller` has made, answered or not: a test waits
    /// for a replica to have tried something, rather than for a time.
    pub fn calls(&self, caller: &str, rpc: &str) -> u64 {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(caller.to_owned(), rpc.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Cuts `name` off from every other replica (`true`), or heals it.
    pub fn set_cut(&self, name: &str, cut: bool) {
        let mut set = self.cut.lock().unwrap_or_else(|p| p.into_inner());
        if cut {
            set.insert(name.to_owned());
        } else {
            set.remove(name);
        }
    }
}

/// One replica's side of a [`Loopback`] network.
pub struct Endpoint<M: Machine> {
    net: Arc<Loopback<M>>,
    caller: String,
}

#[async_trait]
impl<M: Machine> Transport for Endpoint<M> {
    async fn call(&self, peer: &str, rpc: &str, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            peer: peer.to_owned(),
            reason: reason.to_owned(),
        };
        *self
            .net
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((self.caller.clone(), rpc.to_owned()))
            .or_insert(0) += 1;
        if self.net.is_cut(peer) || self.net.is_cut(&self.caller) {
            return Err(unreachable("cut off"));
        }
        if self.net.is_dropped(rpc, peer) {
            return Err(unreachable("dropped"));
        }
        let target = self
            .net
            .peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .and_then(Weak::upgrade)
            .ok_or_else(|| unreachable("not running"))?;
        target
            .handle(rpc, &body)
            .await
            .map_err(|err| TransportError::Refused {
                peer: peer.to_owned(),
                kind: err.kind(),
                message: err.to_string(),
            })
    }
}
