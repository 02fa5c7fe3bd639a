//! The order node: one replica of the order service.
//!
//! - this file: the handler (a buy, many buys, the pages of orders, the
//!   ledger, the peers' replication calls);
//! - [`steps`]: the two steps of a buy, a sale and then an order, each
//!   idempotent under the buy's key;
//! - [`reconcile`]: the order of every sale that has none.

pub mod reconcile;
pub mod steps;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::join_all;
use http::StatusCode;
use pygmy_core::api::internal::{BuyAnswers, BuyRequest, BuyResult, BuysRequest, LedgerResponse};
use pygmy_core::api::public::{BuyResponse, OrderPage, OrderRef};
use pygmy_core::api::routes::OrderRoute;
use pygmy_core::order::{OrderMachine, OrderStore};
use pygmy_core::replication::Replicator;
use pygmy_core::shard::{order_id_base, KeyShards};
use pygmy_core::types::{IdempotencyKey, ItemId, Order, OrderId};

use self::reconcile::Reconciler;
use self::steps::{BuySteps, SalesRoute};
use crate::background::Background;
use crate::gather::{as_refusals, check_count};
use crate::http::{json, ApiError, ApiResult, Handler, Metrics, NodeInfo, Readiness, Request};
use crate::replica::Replica;

/// An order replica. Cheap to clone (it is all shared handles), so that a
/// buy can finish in its own task.
#[derive(Clone)]
pub struct OrderNode {
    /// The replica, and the catalog it sells through.
    steps: BuySteps,
    store: Arc<dyn OrderStore>,
    /// Orders recorded by the reconciler, for `/metrics`.
    reconciled: Arc<AtomicU64>,
    /// Its order shard.
    place: OrderShardPlace,
}

/// Which order shard a replica is of, and how keys map to the shards.
#[derive(Debug, Clone, Copy)]
pub struct OrderShardPlace {
    /// Its shard's index, from 0, in file order.
    pub shard: usize,
    /// The order shards by key.
    pub keys: KeyShards,
}

impl OrderNode {
    /// A new key for a buy that came without one, of this replica's shard
    /// (a frontend always sends one; a caller of `GET /buy/<item>` may
    /// not).
    fn mint_key(&self) -> IdempotencyKey {
        loop {
            let key = IdempotencyKey::mint();
            if self.place.keys.shard_of(&key) == self.place.shard {
                return key;
            }
        }
    }
}

impl OrderNode {
    /// A replica of order shard `place` over `store`, replicated by
    /// `replicator`, selling through `catalog` (with its background work:
    /// each catalog shard's gathering of sales and health probe); and its
    /// own background work (not started): the reconciler, and the measure
    /// of its data dir.
    pub fn new(
        node: NodeInfo,
        store: Arc<dyn OrderStore>,
        replicator: Arc<dyn Replicator<OrderMachine>>,
        (catalog, mut background): (SalesRoute, Background),
        place: OrderShardPlace,
    ) -> (Self, Background) {
        let replica = Replica::new(node, replicator);
        let measuring = replica.measure_forever();
        let steps = BuySteps::new(replica, Arc::new(catalog), order_id_base(place.shard));
        let reconciled = Arc::new(AtomicU64::new(0));
        let reconciler = Reconciler::new(
            steps.clone(),
            Arc::clone(&store),
            Arc::clone(&reconciled),
            place,
        );
        background.add(reconciler.run_forever());
        background.add(measuring);
        let order = OrderNode {
            steps,
            store,
            reconciled,
            place,
        };
        (order, background)
    }

    /// Refuses a buy whose key belongs to another order shard (421): a
    /// key must always land in one raft group, or a retry could buy twice.
    fn ensure_mine(&self, key: &IdempotencyKey) -> Result<(), ApiError> {
        let shard = self.place.keys.shard_of(key);
        if shard == self.place.shard {
            return Ok(());
        }
        Err(ApiError::misdirected(format!(
            "the key {key} belongs to order shard {shard}, not to this replica's ({})",
            self.place.shard
        )))
    }

    /// `GET /buy/<item>`.
    async fn buy(&self, req: &Request, item: ItemId) -> ApiResult {
        self.steps.replica.ensure_ready()?;
        let key = req.idempotency_key()?.unwrap_or_else(|| self.mint_key());
        self.ensure_mine(&key)?;
        let mut made = self.buy_each(vec![BuyRequest { item, key }]).await?;
        let order = made
            .pop()
            .ok_or_else(|| ApiError::internal("a buy made no order"))??;
        Ok(json(StatusCode::OK, &BuyResponse::new(item, order)))
    }

    /// `POST /buys` (internal): many buys, each as `GET /buy/<item>` makes
    /// one, all at once (their sales go to the catalog together, then
    /// their orders to the log together), each answered with its own
    /// result. A replica that cannot serve refuses the whole call (503),
    /// so that the caller takes it to another one.
    async fn buy_many(&self, req: &Request) -> ApiResult {
        let BuysRequest { buys } = req.json()?;
        // Before readiness: a bad call is 400 even from a replica that
        // could not serve now (as `POST /sales` and `POST /lookups`).
        check_count(buys.len(), BuysRequest::MOST)?;
        for buy in &buys {
            self.ensure_mine(&buy.key)?;
        }
        self.steps.replica.ensure_ready()?;
        let made = as_refusals(self.buy_each(buys).await?);
        let bought = |id| BuyResult::Bought(OrderRef { id });
        let results = made
            .into_iter()
            .map(|made| made.map_or_else(BuyResult::Failed, bought))
            .collect();
        Ok(json(StatusCode::OK, &BuyAnswers::new(results)))
    }

    /// Buys one copy of each `buys`' item under its key, each answered on
    /// its own: the order recorded under the key already, or a sale and
    /// then a new order.
    ///
    /// The sales and the orders are two steps: they run in a task of their
    /// own, so that a client that goes away between them (or the request's
    /// time limit) does not leave a sale without its order. Each step is
    /// taken by all the buys at once: every order is proposed in the same
    /// moment, once every sale is answered, so that the orders of one call
    /// go into one raft entry.
    async fn buy_each(
        &self,
        buys: Vec<BuyRequest>,
    ) -> Result<Vec<Result<OrderId, ApiError>>, ApiError> {
        let node = self.clone();
        tokio::spawn(async move {
            let sold = join_all(buys.iter().map(|buy| node.order_or_sale(buy))).await;
            let recorded = buys
                .iter()
                .zip(sold)
                .map(|(buy, sold)| node.order(buy, sold));
            let orders = join_all(recorded).await;
            buys.iter()
                .zip(orders)
                .map(|(buy, order)| order.and_then(|order| bought(buy, &order)))
                .collect()
        })
        .await
        .map_err(|e| ApiError::internal(format!("the buy task failed: {e}")))
    }

    /// The first step of a buy: the order recorded under its key already,
    /// or else its sale (`None` once sold).
    async fn order_or_sale(&self, buy: &BuyRequest) -> Result<Option<Order>, ApiError> {
        if let Some(order) = self.store.order_by_key(&buy.key).await? {
            return Ok(Some(order));
        }
        self.steps.sell(buy.item, &buy.key).await?;
        Ok(None)
    }

    /// The second step of a buy: its order, recorded now if it was sold in
    /// the first.
    async fn order(
        &self,
        buy: &BuyRequest,
        sold: Result<Option<Order>, ApiError>,
    ) -> Result<Order, ApiError> {
        match sold? {
            Some(order) => Ok(order),
            None => self.steps.record(buy.item, &buy.key).await,
        }
    }
}

impl OrderNode {
    /// `GET /orders?after=&limit=`: a page of orders, fresh, without keys.
    async fn page(&self, req: &Request) -> ApiResult {
        let after = req.number("after")?.unwrap_or(0);
        let limit = req.number("limit")?.unwrap_or(OrderPage::DEFAULT_LIMIT);
        if !(1..=OrderPage::MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit must be from 1 to {}",
                OrderPage::MAX_LIMIT
            )));
        }
        // Both fit: `number` takes at most 2^63 - 1, and limit at most 1,000.
        let (after, limit) = (
            OrderId(i64::try_from(after).unwrap_or(i64::MAX)),
            usize::try_from(limit).unwrap_or(1),
        );
        self.steps.replica.ready_to_read().await?;
        let orders = self.store.orders_after(after, limit).await?;
        Ok(json(StatusCode::OK, &OrderPage::new(orders, limit)))
    }
}

#[async_trait]
impl Handler for OrderNode {
    type Route = OrderRoute;

    async fn handle(&self, route: OrderRoute, req: Request) -> ApiResult {
        match route {
            OrderRoute::Buy(item) => self.buy(&req, item).await,
            OrderRoute::BuyMany => self.buy_many(&req).await,
            OrderRoute::Orders => self.page(&req).await,
            OrderRoute::Ledger => {
                self.steps.replica.ready_to_read().await?;
                let orders = self.store.orders().await?;
                Ok(json(StatusCode::OK, &LedgerResponse::new(orders)))
            }
            // The seed's propagation endpoint: here, a shipment of ops.
            OrderRoute::Propagate => self.steps.replica.replication_call("ship", &req).await,
            OrderRoute::Replication(rpc) => self.steps.replica.replication_call(&rpc, &req).await,
            OrderRoute::Members(route) => self.steps.replica.members_call(route, &req).await,
            OrderRoute::Backup => self.steps.replica.backup("order").await,
        }
    }

    fn node(&self) -> &NodeInfo {
        self.steps.replica.node()
    }

    fn readiness(&self) -> Readiness {
        self.steps.replica.readiness()
    }

    fn leader(&self) -> Option<String> {
        self.steps.replica.status().and_then(|status| status.leader)
    }

    async fn stop(&self) {
        self.steps.replica.stop().await;
    }

    async fn metrics(&self, out: &mut Metrics) {
        self.steps.replica.write_metrics(out).await;
        out.counter(
            "pygmy_order_reconciled_total",
            "Orders recorded for sales that had none.",
            self.reconciled.load(Ordering::Relaxed),
        );
    }
}

/// The id of `order`, the one `buy`'s key names, if it is of `buy`'s item:
/// a key already used to buy another item is refused.
fn bought(buy: &BuyRequest, order: &Order) -> Result<OrderId, ApiError> {
    if order.item_id != buy.item {
        return Err(ApiError::unprocessable(format!(
            "the idempotency key {} was used to buy item {}",
            buy.key, order.item_id
        )));
    }
    Ok(order.id)
}
