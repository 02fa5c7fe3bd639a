//! Least loaded, by the power of two choices: draw two replicas at random
//! and take the one with fewer requests in flight. Nearly as good as
//! looking at every replica, and no herd on the one that looked idlest.

use std::sync::Mutex;
use tokio::time::Instant;

use super::{Balancer, Endpoints};

/// Picks the less loaded of two random healthy replicas first.
#[derive(Debug)]
pub struct LeastLoaded {
    rng: Mutex<fastrand::Rng>,
}

impl Default for LeastLoaded {
    fn default() -> Self {
        LeastLoaded {
            rng: Mutex::new(fastrand::Rng::new()),
        }
    }
}

impl LeastLoaded {
    /// With a fixed seed, for tests.
    pub fn with_seed(seed: u64) -> Self {
        LeastLoaded {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }
}

impl Balancer for LeastLoaded {
    fn plan(&self, replicas: &Endpoints) -> Vec<usize> {
        let n = replicas.len();
        if n == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        let all = replicas.all();
        let healthy: Vec<usize> = (0..n).filter(|&i| !all[i].is_ejected(now)).collect();
        let (first, second) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            match healthy.len() {
                0 => (rng.usize(..n), None),
                1 => (healthy[0], None),
                len => {
                    let a = rng.usize(..len);
                    let b = (a + 1 + rng.usize(..len - 1)) % len;
                    (healthy[a], Some(healthy[b]))
                }
            }
        };
        let pick = match second {
            Some(second) if all[second].in_flight() < all[first].in_flight() => {
                tracing::trace!(chosen = %all[second].name, other = %all[first].name, "least loaded");
                second
            }
            Some(second) => {
                tracing::trace!(chosen = %all[first].name, other = %all[second].name, "least loaded");
                first
            }
            None => first,
        };
        // The pick first, then the others (ejected ones last), by load.
        let mut rest: Vec<usize> = (0..n).filter(|&i| i != pick).collect();
        rest.sort_by_key(|&i| all[i].in_flight());
        replicas.plan(std::iter::once(pick).chain(rest))
    }
}
