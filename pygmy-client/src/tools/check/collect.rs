//! Collecting the state of live replicas ([`collect`]), and the whole
//! check of one run around it ([`Checker`]: the state before, then the
//! verdict once the replicas converged).

use std::collections::BTreeMap;
use std::fmt;

use pygmy_core::topology::{Role, Topology};
use pygmy_core::types::ItemId;

use super::promises::{check, AckedBuy, ClusterState, Expected, Violation};
use crate::error::ClientError;
use crate::nodes::{CatalogClient, OrderClient};
use crate::tools::history::{self, Anomaly, Effect, Event};

/// Where the replicas of a store are: `(name, url)` of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaUrls {
    /// The catalog replicas.
    pub catalogs: Vec<(String, String)>,
    /// The order replicas.
    pub orders: Vec<(String, String)>,
    /// The shard of each replica of a sharded service, by name (absent:
    /// shard 0).
    pub shards: BTreeMap<String, usize>,
}

impl ReplicaUrls {
    /// The replicas of `pygmy-server`'s default local topology.
    pub fn default_local() -> ReplicaUrls {
        ReplicaUrls::of(&Topology::default_local())
    }

    /// The replicas a topology names.
    pub fn of(topology: &Topology) -> ReplicaUrls {
        let shards = topology
            .nodes
            .iter()
            .filter(|node| node.role != Role::Frontend)
            .map(|node| (node.name.clone(), topology.shard_index(node)))
            .filter(|(_, shard)| *shard > 0)
            .collect();
        ReplicaUrls {
            catalogs: topology.urls(Role::Catalog),
            orders: topology.urls(Role::Order),
            shards,
        }
    }

    /// Clients of every replica.
    pub fn clients(&self, options: &crate::ClientOptions) -> Result<ReplicaClients, ClientError> {
        let catalogs = self
            .catalogs
            .iter()
            .map(|(name, url)| Ok((name.clone(), CatalogClient::new(url, options)?)))
            .collect::<Result<Vec<_>, ClientError>>()?;
        let orders = self
            .orders
            .iter()
            .map(|(name, url)| Ok((name.clone(), OrderClient::new(url, options)?)))
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(ReplicaClients {
            catalogs,
            orders,
            shards: self.shards.clone(),
        })
    }
}

/// A client of every replica of a store, by name.
#[derive(Debug, Clone)]
pub struct ReplicaClients {
    /// The catalog replicas.
    pub catalogs: Vec<(String, CatalogClient)>,
    /// The order replicas.
    pub orders: Vec<(String, OrderClient)>,
    /// The shard of each replica of a sharded service, by name.
    pub shards: BTreeMap<String, usize>,
}

impl ReplicaClients {
    /// Reads every replica's state (see [`collect`]).
    pub async fn collect(&self) -> Result<ClusterState, ClientError> {
        let mut state = collect(&self.catalogs, &self.orders).await?;
        state.shards = self.shards.clone();
        Ok(state)
    }
}

/// Reads every replica's state: books from each catalog replica, orders
/// from each order replica, one after the other (so the state is exact only
/// when no writes run).
pub async fn collect(
    catalogs: &[(String, CatalogClient)],
    orders: &[(String, OrderClient)],
) -> Result<ClusterState, ClientError> {
    let mut state = ClusterState::default();
    for (name, client) in catalogs {
        state
            .catalogs
            .insert(name.clone(), client.items(None).await?);
    }
    for (name, client) in orders {
        state.orders.insert(name.clone(), client.ledger().await?);
    }
    Ok(state)
}

/// The check of one run against live replicas: takes their state before
/// the run, then judges the state after it.
#[derive(Debug, Clone)]
pub struct Checker {
    clients: ReplicaClients,
    expected: Expected,
    /// Each book's stock before the run, for the history check.
    stock: BTreeMap<ItemId, i64>,
}

/// How long [`Checker::verdict`] lets lagging replicas converge ("once
/// quiet": a follower may still be applying the last writes).
const CONVERGE_FOR: std::time::Duration = std::time::Duration::from_secs(10);

impl Checker {
    /// Reads every replica's state before the run, as its baseline.
    pub async fn before(
        urls: &ReplicaUrls,
        options: &crate::ClientOptions,
    ) -> Result<Checker, ClientError> {
        let clients = urls.clients(options)?;
        let before = clients.collect().await?;
        let expected = Expected::baseline(&before);
        // Every item's stock before: the baseline less the orders.
        let stock = before
            .catalogs
            .values()
            .flatten()
            .map(|b| (b.id, b.count))
            .collect();
        Ok(Checker {
            expected,
            clients,
            stock,
        })
    }

    /// The same check over the replicas at `urls` (a service's replicas
    /// may have been added or removed during the run), with the baseline
    /// taken before.
    pub fn over(
        self,
        urls: &ReplicaUrls,
        options: &crate::ClientOptions,
    ) -> Result<Checker, ClientError> {
        Ok(Checker {
            clients: urls.clients(options)?,
            ..self
        })
    }

    /// Judges the replicas' state after a run whose acknowledged buys were
    /// `acked`: no violation, or the ones still seen after letting them
    /// converge for up to 10 s; and the run's `history` (empty if it was
    /// not recorded): no lookup that no linearizable store could answer.
    pub async fn verdict(
        &self,
        acked: &[AckedBuy],
        history: &[Event],
    ) -> Result<Verdict, ClientError> {
        self.verdict_within(acked, history, CONVERGE_FOR).await
    }

    /// [`Checker::verdict`], letting the replicas converge for up to
    /// `converge` (a fault test's run may leave a sale for the reconciler,
    /// which waits out its grace period first).
    pub async fn verdict_within(
        &self,
        acked: &[AckedBuy],
        history: &[Event],
        converge: std::time::Duration,
    ) -> Result<Verdict, ClientError> {
        let anomalies = history::check(&self.stock, history);
        let deadline = tokio::time::Instant::now() + converge;
        loop {
            let state = self.clients.collect().await?;
            let violations = check(&self.expected, &state, acked);
            if violations.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(Verdict {
                    catalogs: self.clients.catalogs.len(),
                    orders: self.clients.orders.len(),
                    acked: acked.len(),
                    lookups: history
                        .iter()
                        .filter(|e| matches!(e.effect, Effect::Saw(_)))
                        .count(),
                    violations,
                    anomalies,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// What a [`Checker`] found; prints `check: ok (...)` or one line per
/// violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Catalog replicas read.
    pub catalogs: usize,
    /// Order replicas read.
    pub orders: usize,
    /// Acknowledged buys looked for.
    pub acked: usize,
    /// Lookups checked against the history.
    pub lookups: usize,
    /// Broken promises of the final state (none: it keeps them all).
    pub violations: Vec<Violation>,
    /// Lookups no linearizable store could have answered.
    pub anomalies: Vec<Anomaly>,
}

impl Verdict {
    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.anomalies.is_empty()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return writeln!(
                f,
                "check: ok ({} catalog and {} order replicas; {} acknowledged buys on every replica of their shard; stock + orders conserved; replicas of each shard identical; {} lookups fresh)",
                self.catalogs, self.orders, self.acked, self.lookups
            );
        }
        for v in &self.violations {
            writeln!(f, "check: VIOLATION {v}")?;
        }
        for a in &self.anomalies {
            writeln!(f, "check: VIOLATION {a}")?;
        }
        Ok(())
    }
}
