//! A node's background work: the loops it runs beside its requests
//! (gatherers, invalidation pushers, health probes, cache-lease renewals,
//! the reconciler). A node's constructor builds them into a
//! [`Background`] without starting any; [`crate::node::run_node`] starts
//! them all into one set when the node starts serving, and stops them
//! together when it stops.

use std::future::Future;

use futures_util::future::BoxFuture;
use tokio::task::JoinSet;
use tracing::Instrument;

/// Background tasks built with a node, not started yet.
#[derive(Default)]
#[must_use = "background tasks do nothing until started"]
pub struct Background {
    tasks: Vec<BoxFuture<'static, ()>>,
}

impl Background {
    /// Adds `task`, to run until the node stops.
    pub fn add(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(Box::pin(task));
    }

    /// How many tasks there are.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Starts every task, each in the current span, into one set: they run
    /// until the set is shut down or dropped, which stops them all.
    pub fn start(self) -> JoinSet<()> {
        let mut set = JoinSet::new();
        for task in self.tasks {
            set.spawn(task.in_current_span());
        }
        set
    }
}
