//! The order node: one replica of the order service.
//!
//! A buy is two idempotent steps under the buy's key: the catalog sells one
//! copy (its conditional sale is the single point of truth), then the order
//! is recorded through the replicator. A retry with the same key after any
//! failure completes the same order; it never sells a second copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use http::{Method, StatusCode};
use pygmy_client::CatalogClient;
use pygmy_core::api::{BuyResponse, OrdersResponse, Sale};
use pygmy_core::journal::Op;
use pygmy_core::order::{OrderCommand, OrderMachine, OrderOutcome, OrderStore};
use pygmy_core::replication::Replicator;
use pygmy_core::types::{IdempotencyKey, ItemId, Order};

use crate::api::{json, parse_item_id, ApiError, ApiResult, Request};
use crate::node::{method_not_allowed, replication_call, route_not_found, Identity};
use crate::server::{Handler, Metrics};

/// An order replica. Cheap to clone (it is all shared handles), so that a
/// buy can finish in its own task.
#[derive(Clone)]
pub struct OrderNode {
    identity: Identity,
    store: Arc<dyn OrderStore>,
    replicator: Arc<dyn Replicator<OrderMachine>>,
    /// The catalog replicas, the preferred one first.
    catalogs: Vec<CatalogClient>,
    /// Orders recorded by the reconciler, for `/metrics`.
    reconciled: Arc<AtomicU64>,
}

/// How long a sale may stay without its order before the reconciler
/// records it: a buy under way records its own order well within this.
pub const RECONCILE_GRACE: Duration = Duration::from_secs(5);

/// Where the reconciler left one sale.
enum SaleState {
    /// Its order is recorded.
    Done,
    /// No order yet, but within its grace period.
    Waiting,
    /// Its order could not be looked up or recorded.
    Failed,
}

/// Sales asked of a catalog replica at a time, and pages per round.
const RECONCILE_PAGE: u64 = 500;
const RECONCILE_PAGES: usize = 20;

/// What the reconciler remembers between rounds.
#[derive(Debug, Default)]
struct Reconciler {
    /// Per catalog replica, the last sale looked at.
    cursors: HashMap<usize, u64>,
    /// When each sale still without an order was first seen.
    first_seen: HashMap<IdempotencyKey, Instant>,
}

impl OrderNode {
    /// An order replica over `store`, replicated by `replicator`, selling
    /// through `catalogs` (preferred first).
    pub fn new(
        identity: Identity,
        store: Arc<dyn OrderStore>,
        replicator: Arc<dyn Replicator<OrderMachine>>,
        catalogs: Vec<CatalogClient>,
    ) -> Self {
        OrderNode {
            identity,
            store,
            replicator,
            catalogs,
            reconciled: Arc::new(AtomicU64::new(0)),
        }
    }

    fn ensure_ready(&self) -> Result<(), ApiError> {
        if self.replicator.is_ready() {
            Ok(())
        } else {
            Err(ApiError::Unavailable(format!(
                "{} is catching up with its peers",
                self.identity.name
            )))
        }
    }

    /// `GET /buy/<item>`.
    async fn buy(&self, req: &Request, item: ItemId) -> ApiResult {
        self.ensure_ready()?;
        let key = req.idempotency_key()?.unwrap_or_else(IdempotencyKey::mint);
        // The sale and the order are two steps: run them in a task of their
        // own, so that a client that goes away between them (or the
        // request's time limit) does not leave a sale without its order.
        let node = self.clone();
        let steps_key = key.clone();
        let order = tokio::spawn(async move { node.sell_and_record(item, &steps_key).await })
            .await
            .map_err(|e| ApiError::Internal(format!("the buy task failed: {e}")))??;
        if order.item_id != item {
            return Err(ApiError::Unprocessable(format!(
                "the idempotency key {key} was used to buy item {}",
                order.item_id
            )));
        }
        Ok(json(StatusCode::OK, &BuyResponse::new(item, order.id)))
    }

    /// Runs the reconciliation until the task is dropped: every second, the
    /// sales the catalog made that still have no order after
    /// [`RECONCILE_GRACE`] get their order recorded. A buy whose client gave
    /// up between the sale and the order, or whose every order replica
    /// failed then, so still ends with its order.
    pub async fn reconcile_forever(self) {
        let mut state = Reconciler::default();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if self.replicator.is_ready() {
                self.reconcile(&mut state).await;
            }
        }
    }

    /// One round, from the first catalog replica that answers: every sale
    /// after the cursor is looked at (in pages), so that all the sales
    /// without an order start their grace period together. The cursor then
    /// stops before the first sale still waiting.
    async fn reconcile(&self, state: &mut Reconciler) {
        for (index, catalog) in self.catalogs.iter().enumerate() {
            let cursor = state.cursors.get(&index).copied().unwrap_or(0);
            let mut after = cursor;
            // The first sale to look at again next round, if any.
            let mut hold: Option<u64> = None;
            let mut answered = false;
            for _ in 0..RECONCILE_PAGES {
                let page = match catalog.sales(after, RECONCILE_PAGE).await {
                    Ok(page) => page,
                    Err(err) => {
                        tracing::debug!(%err, "a catalog replica did not list its sales");
                        break;
                    }
                };
                answered = true;
                let mut failed = false;
                for sale in &page.sales {
                    match self.reconcile_sale(state, sale).await {
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
                let reached = hold.map_or(after, |seq| seq.saturating_sub(1));
                state.cursors.insert(index, reached.max(cursor));
                return;
            }
        }
    }

    /// Looks at one sale: records its order if it has none after its
    /// grace period.
    async fn reconcile_sale(&self, state: &mut Reconciler, sale: &Sale) -> SaleState {
        match self.store.order_by_key(&sale.key).await {
            Ok(Some(_)) => {
                state.first_seen.remove(&sale.key);
                return SaleState::Done;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%err, "cannot read the orders to reconcile");
                return SaleState::Failed;
            }
        }
        let seen = *state
            .first_seen
            .entry(sale.key.clone())
            .or_insert_with(Instant::now);
        if seen.elapsed() < RECONCILE_GRACE {
            // Perhaps still under way: look again next round.
            return SaleState::Waiting;
        }
        match self.record(sale.item, &sale.key).await {
            Ok(order) => {
                state.first_seen.remove(&sale.key);
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

    /// The order of `key`: the one recorded already, or a sale and then a
    /// new order.
    async fn sell_and_record(&self, item: ItemId, key: &IdempotencyKey) -> Result<Order, ApiError> {
        if let Some(order) = self.store.order_by_key(key).await? {
            return Ok(order);
        }
        self.sell(item, key).await?;
        self.record(item, key).await
    }

    /// Has a catalog replica sell one copy under `key`: the preferred one,
    /// then the others if it cannot be reached (safe: the sale is keyed).
    async fn sell(&self, item: ItemId, key: &IdempotencyKey) -> Result<(), ApiError> {
        let mut last = None;
        for catalog in &self.catalogs {
            match catalog.sell(item, key).await {
                Ok(_) => return Ok(()),
                Err(err) if err.is_replica_failure() => {
                    tracing::debug!(%err, "catalog replica failed a sale; trying the next");
                    last = Some(err);
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(ApiError::Unavailable(match last {
            Some(err) => format!("no catalog replica could sell: {err}"),
            None => "no catalog replica is configured".to_owned(),
        }))
    }

    async fn record(&self, item: ItemId, key: &IdempotencyKey) -> Result<Order, ApiError> {
        let op = Op {
            id: OrderCommand::op_id(key),
            cmd: OrderCommand::Record {
                key: key.clone(),
                item,
                created: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            },
        };
        let OrderOutcome::Recorded { order } = self.replicator.propose(op).await?;
        Ok(order)
    }
}

#[async_trait]
impl Handler for OrderNode {
    async fn handle(&self, req: Request) -> ApiResult {
        let method = req.method.clone();
        match (&method, req.path().as_slice()) {
            (&Method::GET, ["buy", item]) => self.buy(&req, parse_item_id(item)?).await,
            (&Method::GET, ["orders"]) => {
                self.ensure_ready()?;
                self.replicator.linearize().await?;
                let orders = self.store.orders().await?;
                Ok(json(StatusCode::OK, &OrdersResponse::new(orders)))
            }
            (&Method::PUT, ["update"]) => {
                // The seed's propagation endpoint: here, a shipment of ops.
                replication_call(&self.identity, &*self.replicator, "ship", &req).await
            }
            (&Method::POST, ["replication", rpc]) => {
                replication_call(&self.identity, &*self.replicator, rpc, &req).await
            }
            (_, ["buy", _] | ["orders"] | ["update"] | ["replication", _] | ["health"]) => {
                Err(method_not_allowed(&method))
            }
            _ => Err(route_not_found(&req)),
        }
    }

    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn is_ready(&self) -> bool {
        self.replicator.is_ready()
    }

    fn metrics(&self, out: &mut Metrics) {
        out.counter(
            "pygmy_order_reconciled_total",
            "Orders recorded for sales that had none.",
            self.reconciled.load(Ordering::Relaxed),
        );
    }
}
