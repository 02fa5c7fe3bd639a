//! A fixed preference: one replica first, then the others in order (an
//! order replica calls "its" catalog replica first, as the seed's did).

use super::{Balancer, Endpoints};

/// The replica at `first` first, then the others in configured order; ejected
/// replicas still go last.
#[derive(Debug, Clone, Copy, Default)]
pub struct Preferred {
    first: usize,
}

impl Preferred {
    /// Prefers replica `first`.
    pub fn new(first: usize) -> Self {
        Preferred { first }
    }
}

impl Balancer for Preferred {
    fn plan(&self, replicas: &Endpoints) -> Vec<usize> {
        let others = (0..replicas.len()).filter(|&i| i != self.first);
        replicas.plan(std::iter::once(self.first).chain(others))
    }
}
