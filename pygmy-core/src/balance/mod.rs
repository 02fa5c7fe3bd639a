//! Choosing which replica of a backend serves a request, and
//! [`ReplicaSet`], the replicas of a backend with their clients as one
//! caller sees them.
//!
//! An [`Endpoint`] is one replica as its callers see it: its address, its
//! requests in flight and its health (passive: consecutive failures eject
//! it for a cool-down, during which it is tried only after every other
//! replica; after it, it is back in the rotation, and a success clears its
//! failures). A [`Balancer`] turns a backend's [`Endpoints`] into the
//! order in which to try the replicas for one request: healthy ones first,
//! in the balancer's preference, then ejected ones as a last resort, so a
//! request is never refused while any replica might answer.

mod least_loaded;
mod preferred;
mod replica_set;
mod round_robin;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub use self::least_loaded::LeastLoaded;
pub use self::preferred::Preferred;
pub use self::replica_set::{AttemptError, CallError, Probe, Probed, ReplicaFailure, ReplicaSet};
pub use self::round_robin::RoundRobin;

/// How a replica set judges health: passively, by the answers of calls,
/// and actively, by probing each replica's `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures that eject a replica.
    pub failures_to_eject: u32,
    /// How long an ejected replica is tried only after all the others.
    pub cool_down: Duration,
    /// How often [`ReplicaSet::probe_forever`] asks every replica.
    pub probe_every: Duration,
    /// How long a probe waits: a replica that cannot answer its health in
    /// this time (a frozen process, say) gets no new requests until it
    /// can.
    pub probe_timeout: Duration,
}

impl Default for HealthPolicy {
    /// One failure ejects for 500 ms; a probe every 250 ms, answered
    /// within 300 ms: a frozen replica gets no new request a second after
    /// it froze.
    fn default() -> Self {
        HealthPolicy {
            failures_to_eject: 1,
            cool_down: Duration::from_millis(500),
            probe_every: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(300),
        }
    }
}

/// One replica as its callers see it: its address and what the balancer
/// knows of it.
#[derive(Debug)]
pub struct Endpoint {
    /// The node's name in the topology.
    pub name: String,
    /// Its base URL, e.g. `http://127.0.0.1:8011`.
    pub url: String,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

impl Endpoint {
    /// Requests sent to it and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether requests should go elsewhere first.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.lock_ejection().is_some_and(|until| now < until)
    }

    fn lock_ejection(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.ejected_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The replicas of one backend service.
#[derive(Debug)]
pub struct Endpoints {
    replicas: Vec<Endpoint>,
    policy: HealthPolicy,
}

/// Marks a request in flight on a replica until dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    replica: &'a Endpoint,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoints {
    /// A set of `(name, url)` replicas, in configured order.
    pub fn new(replicas: impl IntoIterator<Item = (String, String)>, policy: HealthPolicy) -> Self {
        Endpoints {
            replicas: replicas
                .into_iter()
                .map(|(name, url)| Endpoint {
                    name,
                    url: url.trim_end_matches('/').to_owned(),
                    in_flight: AtomicUsize::new(0),
                    failures: AtomicU32::new(0),
                    ejected_until: Mutex::new(None),
                })
                .collect(),
            policy,
        }
    }

    /// How their health is judged.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// The replicas, in configured order.
    pub fn all(&self) -> &[Endpoint] {
        &self.replicas
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// Counts a request on replica `index` until the guard drops.
    pub fn start(&self, index: usize) -> InFlight<'_> {
        let replica = &self.replicas[index];
        replica.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { replica }
    }

    /// The replica at `index` answered: it is healthy again.
    pub fn record_success(&self, index: usize) {
        let replica = &self.replicas[index];
        replica.failures.store(0, Ordering::Relaxed);
        *replica.lock_ejection() = None;
    }

    /// The replica at `index` could not be reached (or failed with a 5xx); after
    /// enough in a row it is ejected for the cool-down.
    pub fn record_failure(&self, index: usize) {
        let replica = &self.replicas[index];
        let failures = replica.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.policy.failures_to_eject {
            *replica.lock_ejection() = Some(Instant::now() + self.policy.cool_down);
        }
    }

    /// Ejects replica `index` until at least `until`, whatever its count of
    /// failures (an active probe's verdict, which lasts until the next one).
    pub fn eject_until(&self, index: usize, until: Instant) {
        let mut ejected = self.replicas[index].lock_ejection();
        if ejected.is_none_or(|current| current < until) {
            *ejected = Some(until);
        }
    }

    /// The order in which to try the replicas: `preferred` (a balancer's
    /// order over all indexes) with the ejected ones moved to the end.
    pub fn plan(&self, preferred: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let now = Instant::now();
        let (mut healthy, ejected): (Vec<usize>, Vec<usize>) = preferred
            .into_iter()
            .filter(|&i| i < self.replicas.len())
            .partition(|&i| !self.replicas[i].is_ejected(now));
        healthy.extend(ejected);
        healthy
    }
}

/// A policy for spreading requests over replicas. Synchronous and cheap: it
/// runs on every request.
///
/// ```
/// use pygmy_core::balance::{Balancer, HealthPolicy, Endpoints, RoundRobin};
///
/// let replicas = Endpoints::new(
///     ["a", "b", "c"].map(|n| (n.to_owned(), format!("http://{n}.invalid"))),
///     HealthPolicy::default(),
/// );
/// let balancer = RoundRobin::default();
/// assert_eq!(balancer.plan(&replicas), [0, 1, 2]);
/// assert_eq!(balancer.plan(&replicas), [1, 2, 0]);
/// replicas.record_failure(2); // ejected: tried last, never skipped
/// assert_eq!(balancer.plan(&replicas), [0, 1, 2]);
/// assert_eq!(balancer.plan(&replicas), [0, 1, 2]);
/// ```
pub trait Balancer: Send + Sync {
    /// The order in which to try `replicas` for one request, best first.
    /// Every replica appears once; ejected ones come last.
    fn plan(&self, replicas: &Endpoints) -> Vec<usize>;
}
