//! [`ReplicaSet`]: the replicas of one backend service as one caller sees
//! them. Each replica comes with its client, its health (passive ejection
//! and an active probe) and its requests in flight; a [`Balancer`] picks
//! the order to try them in; every attempt has its own time limit. The
//! frontend reaches both backends through one, an order replica reaches
//! the catalog through one, and the reconciler walks its replicas.
//!
//! The probe also learns which replica leads (each names the leader it
//! knows): writes go to it first ([`ReplicaSet::call_leader_first`]), so
//! they skip a follower's forward to the leader. The hint is only an
//! order of trying: a stale one costs a forward or a failover, never a
//! wrong answer.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use futures_util::future::{join_all, select, Either};
use tokio::sync::Notify;

use super::{Balancer, Endpoints, HealthPolicy};

/// What a health probe found of a replica that answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probed {
    /// Whether it serves (not while it catches up).
    pub serves: bool,
    /// The leader it knows, by name, if it is replicated by a leader.
    pub leader: Option<String>,
}

impl Probed {
    /// A replica that serves and knows no leader.
    pub fn serves() -> Probed {
        Probed {
            serves: true,
            leader: None,
        }
    }
}

/// A client that can tell whether its replica serves (`GET /ready`).
#[async_trait]
pub trait Probe: Send + Sync {
    /// What the replica answers of its readiness (`serves: false` if it
    /// answers it cannot serve, or cannot be reached).
    async fn probe(&self) -> Probed;
}

/// No leader known.
const NO_LEADER: usize = usize::MAX;

/// An error that tells whether another replica might do better.
pub trait ReplicaFailure {
    /// True if the replica could not serve (unreachable, down, catching
    /// up, failed on its side); false if it answered, and any replica
    /// would answer alike (not found, out of stock, a bad request).
    fn is_replica_failure(&self) -> bool;
}

/// One attempt on one replica failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError<E> {
    /// The replica's call failed.
    #[error(transparent)]
    Failed(E),
    /// The replica did not answer within the attempt's limit.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The health probe found the replica silent while the attempt waited
    /// on it: the attempt was given up (it may still be applied there,
    /// as after a timeout).
    #[error("found silent by the health probe while waiting on it")]
    Ejected,
}

/// A call on a replica set failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// A replica answered with a failure any replica would give.
    #[error(transparent)]
    Answered(E),
    /// No replica could serve; the last failure, if any replica was tried.
    #[error("no replica could serve{}", .last.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NoReplica {
        /// What the last replica tried failed with.
        last: Option<AttemptError<E>>,
    },
}

/// The replicas of one backend service, each with its client.
pub struct ReplicaSet<C> {
    endpoints: Endpoints,
    clients: Vec<C>,
    /// Per replica: woken when a probe finds it silent, so that the
    /// attempts waiting on it move on at once instead of at their time
    /// limit.
    downs: Vec<Notify>,
    balancer: Box<dyn Balancer>,
    attempt_timeout: Duration,
    failovers: AtomicU64,
    /// The replica the last probe found leading ([`NO_LEADER`]: none).
    leader: AtomicUsize,
    /// Per replica: whether the last probe found it serving (false until
    /// a probe has answered).
    ready: Vec<AtomicBool>,
}

impl<C> ReplicaSet<C> {
    /// A set of `(name, url, client)` replicas, tried in the order
    /// `balancer` picks, each attempt limited to `attempt_timeout`.
    pub fn new(
        replicas: impl IntoIterator<Item = (String, String, C)>,
        balancer: Box<dyn Balancer>,
        policy: HealthPolicy,
        attempt_timeout: Duration,
    ) -> Self {
        let (named, clients): (Vec<_>, Vec<_>) = replicas
            .into_iter()
            .map(|(name, url, client)| ((name, url), client))
            .unzip();
        ReplicaSet {
            endpoints: Endpoints::new(named, policy),
            downs: clients.iter().map(|_| Notify::new()).collect(),
            ready: clients.iter().map(|_| AtomicBool::new(false)).collect(),
            clients,
            balancer,
            attempt_timeout,
            failovers: AtomicU64::new(0),
            leader: AtomicUsize::new(NO_LEADER),
        }
    }

    /// The replicas' health and load.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Whether the last probe found at least one replica serving: the
    /// backend can be reached now (a frontend's readiness). False until a
    /// probe has answered.
    pub fn any_ready(&self) -> bool {
        self.ready.iter().any(|ready| ready.load(Ordering::Relaxed))
    }

    /// The name of replica `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.endpoints.all()[index].name
    }

    /// Every replica's name and client, in configured order.
    pub fn clients(&self) -> impl Iterator<Item = (&str, &C)> {
        self.endpoints
            .all()
            .iter()
            .map(|replica| replica.name.as_str())
            .zip(&self.clients)
    }

    /// How many calls moved on to another replica since start.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// The order to try the replicas in for one call, best first.
    pub fn plan(&self) -> Vec<usize> {
        self.balancer.plan(&self.endpoints)
    }

    /// The replica the last probe found leading, if any.
    pub fn leader(&self) -> Option<usize> {
        let leader = self.leader.load(Ordering::Relaxed);
        (leader < self.clients.len()).then_some(leader)
    }

    /// [`ReplicaSet::plan`] with the leader first, unless it is ejected.
    pub fn plan_leader_first(&self) -> Vec<usize> {
        let mut plan = self.plan();
        if let Some(leader) = self.leader() {
            if !self.endpoints.all()[leader].is_ejected(Instant::now()) {
                if let Some(at) = plan.iter().position(|&i| i == leader) {
                    plan[..=at].rotate_right(1);
                }
            }
        }
        plan
    }

    /// One attempt of `call` on replica `index`, within the attempt's time
    /// limit, given up at once if a health probe finds the replica silent
    /// meanwhile; its outcome counts toward the replica's health.
    pub async fn attempt<'a, T, E, F, Fut>(
        &'a self,
        index: usize,
        call: F,
    ) -> Result<T, AttemptError<E>>
    where
        F: FnOnce(&'a C) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: ReplicaFailure,
    {
        let result = {
            let _in_flight = self.endpoints.start(index);
            // Registered before the call starts: a probe's verdict that
            // comes while it waits is not missed.
            let down = std::pin::pin!(self.downs[index].notified());
            let answer = std::pin::pin!(tokio::time::timeout(
                self.attempt_timeout,
                call(&self.clients[index])
            ));
            match select(answer, down).await {
                Either::Left((answer, _)) => {
                    answer.map_err(|_| AttemptError::TimedOut(self.attempt_timeout))
                }
                Either::Right(((), _)) => Err(AttemptError::Ejected),
            }
        };
        match result {
            Ok(Ok(value)) => {
                self.endpoints.record_success(index);
                Ok(value)
            }
            Ok(Err(err)) => {
                if err.is_replica_failure() {
                    self.endpoints.record_failure(index);
                } else {
                    self.endpoints.record_success(index);
                }
                Err(AttemptError::Failed(err))
            }
            Err(gave_up) => {
                self.endpoints.record_failure(index);
                Err(gave_up)
            }
        }
    }

    /// Calls `call` on the replicas in the balancer's order until one
    /// serves: a replica failure or a timeout moves on to the next. Only
    /// for calls that are safe to repeat: reads, and writes under an
    /// idempotency key.
    pub async fn call<'a, T, E, F, Fut>(&'a self, call: F) -> Result<T, CallError<E>>
    where
        F: Fn(&'a C) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: ReplicaFailure + std::fmt::Display,
    {
        self.call_in(self.plan(), call).await
    }

    /// [`ReplicaSet::call`], trying the leader first: for writes, which a
    /// follower would forward to it.
    pub async fn call_leader_first<'a, T, E, F, Fut>(&'a self, call: F) -> Result<T, CallError<E>>
    where
        F: Fn(&'a C) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: ReplicaFailure + std::fmt::Display,
    {
        self.call_in(self.plan_leader_first(), call).await
    }

    async fn call_in<'a, T, E, F, Fut>(
        &'a self,
        plan: Vec<usize>,
        call: F,
    ) -> Result<T, CallError<E>>
    where
        F: Fn(&'a C) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: ReplicaFailure + std::fmt::Display,
    {
        let mut last = None;
        for (attempt, index) in plan.into_iter().enumerate() {
            if attempt > 0 {
                self.failovers.fetch_add(1, Ordering::Relaxed);
            }
            match self.attempt(index, &call).await {
                Ok(value) => return Ok(value),
                Err(AttemptError::Failed(err)) if !err.is_replica_failure() => {
                    return Err(CallError::Answered(err))
                }
                Err(err) => {
                    tracing::warn!(replica = %self.name(index), %err, "replica failed; trying the next");
                    last = Some(err);
                }
            }
        }
        Err(CallError::NoReplica { last })
    }
}

impl<C: Probe> ReplicaSet<C> {
    /// Probes every replica at once, then every
    /// [`HealthPolicy::probe_every`], until the task is dropped
    /// ([`ReplicaSet::probe`]). The passive ejection covers what happens
    /// between probes.
    pub async fn probe_forever(self: std::sync::Arc<Self>) {
        loop {
            self.probe().await;
            tokio::time::sleep(self.endpoints.policy().probe_every).await;
        }
    }

    /// Asks every replica whether it is ready at once, each within the
    /// policy's `probe_timeout`: a replica that fails or is late is ejected
    /// (tried only after the others) until the next probe, `probe_every`
    /// later, has had its own `probe_timeout` to decide; one that answers
    /// is back at once. The leader is the replica most answers name;
    /// [`ReplicaSet::any_ready`] tells whether any answered that it serves.
    pub async fn probe(&self) {
        let HealthPolicy {
            probe_every: every,
            probe_timeout: timeout,
            ..
        } = *self.endpoints.policy();
        let probes = self
            .clients
            .iter()
            .map(|client| tokio::time::timeout(timeout, client.probe()));
        let answers = join_all(probes).await;
        let probed: Vec<Option<&Probed>> = answers.iter().map(|a| a.as_ref().ok()).collect();
        let leader = self.leader_named(&probed).unwrap_or(NO_LEADER);
        self.leader.store(leader, Ordering::Relaxed);
        for (index, answer) in answers.iter().enumerate() {
            let serves = matches!(answer, Ok(Probed { serves: true, .. }));
            self.ready[index].store(serves, Ordering::Relaxed);
            if serves {
                self.endpoints.record_success(index);
            } else {
                if !self.endpoints.all()[index].is_ejected(Instant::now()) {
                    tracing::warn!(replica = %self.name(index), "health probe failed; ejecting");
                }
                self.endpoints.record_failure(index);
                // Until the next verdict: the next probe starts `every`
                // after this one ends and takes up to `timeout` (and as
                // much again of margin). A cool-down shorter than that
                // would let requests reach a frozen replica between two
                // probes, and wait on it for a whole attempt.
                let verdict = Instant::now() + every + 2 * timeout;
                self.endpoints.eject_until(index, verdict);
                if answer.is_err() {
                    // Silent (frozen, or cut off): the attempts waiting on
                    // it would wait in vain. One that answers it cannot
                    // serve now (during an election, say) may well finish
                    // the attempts it has: they go on.
                    self.downs[index].notify_waiters();
                }
            }
        }
    }

    /// The replica the answers name leader most often (a leader cut off
    /// from the others may still name itself; the others name the new
    /// one).
    fn leader_named(&self, answers: &[Option<&Probed>]) -> Option<usize> {
        let named = |index: usize| answers[index].and_then(|probed| probed.leader.as_deref());
        let index_of = |name: &str| (0..self.clients.len()).find(|&i| self.name(i) == name);
        let mut votes = vec![0usize; self.clients.len()];
        for leader in (0..answers.len()).filter_map(named).filter_map(index_of) {
            votes[leader] += 1;
        }
        let (best, count) = votes.iter().enumerate().max_by_key(|&(_, count)| *count)?;
        (*count > 0).then_some(best)
    }
}
