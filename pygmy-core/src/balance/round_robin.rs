//! Round robin, the seed's balancer: each request starts at the next replica.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, Endpoints};

/// Each request starts one replica further than the last.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn plan(&self, replicas: &Endpoints) -> Vec<usize> {
        let n = replicas.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        replicas.plan((0..n).map(|i| (start + i) % n))
    }
}
