//! Reconciliation: the order of every sale that has none.
//!
//! The reconciler of each order shard reads the sales of every catalog
//! shard, and records the orders of the sales whose key is its shard's.
//!
//! A buy whose caller gave up between its sale and its order, or whose
//! every order replica failed then, leaves a sale without an order. Every
//! second, the order replica that leads (or every replica, while none is
//! known to) reads the sales a catalog replica made after its cursor
//! (`GET /sales`, pages of 500, at most 20 a round; the orders
//! of a page looked up at once) and records the order of any sale that
//! still has none after [`GRACE`], under the op id `order:<key>` a buy
//! uses, after replaying the sale under its key (nothing more is sold; the
//! catalog pushes the book's invalidation, which a sale that committed
//! after its propose timed out never did). A round reads every sale after
//! the cursor, so that all the sales without an order start their grace
//! period together; the cursor then stops before the first sale still
//! waiting. A follower skips its rounds: its records would go to the
//! leader anyway.
//!
//! Under `raft`, the cursor is also kept with the sales, in the catalog's
//! replicated state (`POST /sales/reconciled` after a round that moved it;
//! `GET /sales` answers it): a new order leader resumes from it instead of
//! reading every sale again, and the catalog keeps the records of every
//! sale after it, whatever their age, so that a sale whose order is
//! missing is never forgotten. The catalog keeps one such cursor per order
//! shard (each reconciler passes the sales of the other shards' keys), and
//! the records after the least of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pygmy_core::api::internal::Sale;
use pygmy_core::order::OrderStore;
use pygmy_core::types::IdempotencyKey;

use pygmy_client::CatalogClient;
use pygmy_core::balance::ReplicaSet;

use super::steps::BuySteps;
use super::OrderShardPlace;

/// How long a sale may stay without its order before the reconciler
/// records it: a buy under way records its own order well within this.
pub const GRACE: Duration = Duration::from_secs(5);

/// Sales asked of a catalog replica at a time.
const PAGE: u64 = 500;

/// Pages read per round, at most.
const PAGES: usize = 20;

/// How often a round starts.
const EVERY: Duration = Duration::from_secs(1);

/// Where a round left one sale.
enum SaleState {
    /// Its order is recorded.
    Done,
    /// No order yet, but within its grace period.
    Waiting,
    /// Its order could not be looked up or recorded.
    Failed,
}

/// An order replica's reconciler, and what it remembers between rounds.
pub struct Reconciler {
    steps: BuySteps,
    store: Arc<dyn OrderStore>,
    /// Orders it recorded, for `/metrics`.
    reconciled: Arc<AtomicU64>,
    /// Per catalog shard and replica (by index), the last sale looked at.
    cursors: HashMap<(usize, usize), u64>,
    /// When each sale still without an order was first seen.
    first_seen: HashMap<IdempotencyKey, Instant>,
    /// Per catalog shard, this order shard's progress kept with its
    /// sales, as the catalog shard last said (none: it keeps none, under
    /// `broadcast`).
    kept: HashMap<usize, u64>,
    /// Its order shard: the sales of other shards' keys are theirs.
    place: OrderShardPlace,
}

impl Reconciler {
    /// A reconciler that sells and records through `steps`, looks orders
    /// up in `store`, and counts what it recorded in `reconciled`.
    pub fn new(
        steps: BuySteps,
        store: Arc<dyn OrderStore>,
        reconciled: Arc<AtomicU64>,
        place: OrderShardPlace,
    ) -> Self {
        Reconciler {
            steps,
            store,
            reconciled,
            cursors: HashMap::new(),
            first_seen: HashMap::new(),
            kept: HashMap::new(),
            place,
        }
    }

    /// This order shard's number and the count of order shards, as the
    /// catalog keeps their progress.
    fn shard(&self) -> (u32, u32) {
        let number = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        (number(self.place.shard), number(self.place.keys.len()))
    }

    /// Runs a round every second until the task is dropped.
    pub async fn run_forever(mut self) {
        loop {
            tokio::time::sleep(EVERY).await;
            if self.steps.replica.is_ready() && self.reconciles() {
                self.round().await;
            }
        }
    }

    /// Whether this replica runs the reconciliation now: not while it
    /// knows another replica leads (the leader's rounds record any missing
    /// order; a follower's would repeat its lookups, and its records go to
    /// the leader anyway). With no leader known (during an election, or
    /// under a replicator without leaders) it does.
    fn reconciles(&self) -> bool {
        let replica = &self.steps.replica;
        match replica.status().and_then(|status| status.leader) {
            Some(leader) => leader == replica.node().name,
            None => true,
        }
    }

    /// One round over every catalog shard.
    async fn round(&mut self) {
        for shard in 0..self.steps.catalog.shards().len() {
            self.round_on(shard).await;
        }
    }

    /// One round on catalog shard `shard`, from the first of its replicas
    /// that answers: every sale after the cursor is looked at (in pages),
    /// so that all the sales without an order start their grace period
    /// together. The cursor then stops before the first sale still
    /// waiting.
    async fn round_on(&mut self, shard: usize) {
        let Some(catalogs) = self
            .steps
            .catalog
            .shards()
            .get(shard)
            .map(|s| Arc::clone(&s.replicas))
        else {
            return;
        };
        for index in catalogs.plan() {
            // Where the last round here stopped, or the progress kept with
            // the sales if it is further (a new leader's first round).
            let cursor = self
                .cursors
                .get(&(shard, index))
                .copied()
                .unwrap_or(0)
                .max(self.kept.get(&shard).copied().unwrap_or(0));
            let mut after = cursor;
            // The first sale to look at again next round, if any.
            let mut hold: Option<u64> = None;
            let mut answered = false;
            for _ in 0..PAGES {
                let listed = catalogs
                    .attempt(index, |catalog| {
                        catalog.sales_for(self.shard().0, after, PAGE)
                    })
                    .await;
                let page = match listed {
                    Ok(page) => page,
                    Err(err) => {
                        tracing::debug!(%err, "a catalog replica did not list its sales");
                        break;
                    }
                };
                answered = true;
                if let Some(kept) = page.reconciled {
                    let known = self.kept.entry(shard).or_insert(kept);
                    *known = (*known).max(kept);
                    if kept > after && hold.is_none() {
                        // Every sale up to it has its order: from there.
                        after = kept;
                        continue;
                    }
                }
                let keys: Vec<IdempotencyKey> =
                    page.sales.iter().map(|sale| sale.key.clone()).collect();
                let ordered = match self.store.keys_with_orders(&keys).await {
                    Ok(ordered) => ordered,
                    Err(err) => {
                        tracing::warn!(%err, "cannot read the orders to reconcile");
                        // The page waits for the next round.
                        if let Some(first) = page.sales.first() {
                            hold.get_or_insert(first.seq);
                        }
                        break;
                    }
                };
                let mut failed = false;
                for sale in &page.sales {
                    match self.look_at(sale, ordered.contains(&sale.key)).await {
                        SaleState::Done => {}
                        SaleState::Waiting => {
                            hold.get_or_insert(sale.seq);
                        }
                        SaleState::Failed => {
                            // The order service is not taking writes:
                            // the rest waits for the next round.
                            hold.get_or_insert(sale.seq);
                            failed = true;
                            break;
                        }
                    }
                }
                if failed || page.last_seq <= after {
                    break;
                }
                after = page.last_seq;
            }
            if answered {
                let reached = hold.map_or(after, |seq| seq.saturating_sub(1)).max(cursor);
                self.cursors.insert((shard, index), reached);
                self.keep(shard, &catalogs, reached).await;
                return;
            }
        }
    }

    /// Keeps the progress `reached` with the sales (`POST
    /// /sales/reconciled`, on the leader first), where the catalog keeps
    /// it and it moved on: the next order leader resumes from it, and the
    /// catalog keeps the records of every sale after it.
    async fn keep(&mut self, shard: usize, catalogs: &ReplicaSet<CatalogClient>, reached: u64) {
        let Some(&kept) = self.kept.get(&shard) else {
            return;
        };
        if reached <= kept {
            return;
        }
        match catalogs
            .call_leader_first(|catalog| {
                let (shard, shards) = self.shard();
                catalog.reconciled_for(shard, shards, reached)
            })
            .await
        {
            Ok(kept) => {
                self.kept.insert(shard, kept);
            }
            Err(err) => tracing::debug!(%err, "the reconciler's progress was not kept"),
        }
    }

    /// Looks at one sale (`ordered`: whether its key had an order when the
    /// page was looked up): records its order if it has none after its
    /// grace period.
    async fn look_at(&mut self, sale: &Sale, ordered: bool) -> SaleState {
        // Another order shard's key: its reconciler records the order.
        if ordered || self.place.keys.shard_of(&sale.key) != self.place.shard {
            self.first_seen.remove(&sale.key);
            return SaleState::Done;
        }
        let seen = *self
            .first_seen
            .entry(sale.key.clone())
            .or_insert_with(Instant::now);
        if seen.elapsed() < GRACE {
            // Perhaps still under way: look again next round.
            return SaleState::Waiting;
        }
        // The sale again, under its key (it sells nothing more): the catalog
        // answers it as a change, so it pushes the book's invalidation to
        // the frontends, which the first attempt may never have done (its
        // propose had timed out when the sale committed).
        if let Err(err) = self.steps.sell(sale.item, &sale.key).await {
            tracing::warn!(%err, "cannot replay a sale to reconcile; will retry");
            return SaleState::Failed;
        }
        match self.steps.record(sale.item, &sale.key).await {
            Ok(order) => {
                self.first_seen.remove(&sale.key);
                self.reconciled.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %sale.key, item = %sale.item, order = %order.id,
                    "recorded the order of a sale that had none");
                SaleState::Done
            }
            Err(err) => {
                tracing::warn!(%err, "cannot record a reconciled order; will retry");
                SaleState::Failed
            }
        }
    }
}
