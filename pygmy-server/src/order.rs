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
use futures_util::future::join_all;
use http::StatusCode;
use pygmy_client::CatalogClient;
use pygmy_core::api::internal::{
    BuyAnswers, BuyRequest, BuyResult, BuysRequest, LedgerResponse, Sale, SaleRequest, SalesRequest,
};
use pygmy_core::api::public::{BuyResponse, OrderPage, OrderRef};
use pygmy_core::api::routes::OrderRoute;
use pygmy_core::balance::ReplicaSet;
use pygmy_core::journal::Op;
use pygmy_core::order::{OrderCommand, OrderMachine, OrderOutcome, OrderStore};
use pygmy_core::replication::Replicator;
use pygmy_core::types::{Book, IdempotencyKey, ItemId, Order, OrderId};

use crate::background::Background;
use crate::gather::{as_refusals, check_count, Gatherer};
use crate::http::{json, ApiError, ApiResult, Handler, Metrics, NodeInfo, Request};
use crate::replica::Replica;

/// An order replica. Cheap to clone (it is all shared handles), so that a
/// buy can finish in its own task.
#[derive(Clone)]
pub struct OrderNode {
    replica: Replica<OrderMachine>,
    store: Arc<dyn OrderStore>,
    /// The catalog replicas, this replica's preferred one first.
    catalogs: Arc<ReplicaSet<CatalogClient>>,
    /// The buys' sales, those that come together asked in one call.
    sales: Arc<Gatherer<SaleRequest, Book>>,
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
    /// Per catalog replica (by index), the last sale looked at.
    cursors: HashMap<usize, u64>,
    /// When each sale still without an order was first seen.
    first_seen: HashMap<IdempotencyKey, Instant>,
}

impl OrderNode {
    /// An order replica over `store`, replicated by `replicator`, selling
    /// through `catalogs`; and its background work (not started): the
    /// gathering of its sales, a health probe of the catalog replicas, and
    /// the reconciler.
    pub fn new(
        node: NodeInfo,
        store: Arc<dyn OrderStore>,
        replicator: Arc<dyn Replicator<OrderMachine>>,
        catalogs: ReplicaSet<CatalogClient>,
    ) -> (Self, Background) {
        let catalogs = Arc::new(catalogs);
        let (sales, gathering_sales) = gather_sales(Arc::clone(&catalogs));
        let order = OrderNode {
            replica: Replica::new(node, replicator),
            store,
            sales: Arc::new(sales),
            catalogs: Arc::clone(&catalogs),
            reconciled: Arc::new(AtomicU64::new(0)),
        };
        let mut background = Background::default();
        background.add(gathering_sales);
        background.add(catalogs.probe_forever());
        background.add(order.clone().reconcile_forever());
        (order, background)
    }

    /// `GET /buy/<item>`.
    async fn buy(&self, req: &Request, item: ItemId) -> ApiResult {
        self.replica.ensure_ready()?;
        let key = req.idempotency_key()?.unwrap_or_else(IdempotencyKey::mint);
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
        self.replica.ensure_ready()?;
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
    /// moment, once every sale is answered, so that they go into one raft
    /// entry (proposed as each sale came back, those of one call were
    /// often split over two entries, and the call waited for the later).
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
        self.sell(buy.item, &buy.key).await?;
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
            None => self.record(buy.item, &buy.key).await,
        }
    }

    /// Runs the reconciliation until the task is dropped: every second, the
    /// sales the catalog made that still have no order after
    /// [`RECONCILE_GRACE`] get their order recorded. A buy whose client gave
    /// up between the sale and the order, or whose every order replica
    /// failed then, so still ends with its order.
    async fn reconcile_forever(self) {
        let mut state = Reconciler::default();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if self.replica.is_ready() && self.reconciles() {
                self.reconcile(&mut state).await;
            }
        }
    }

    /// Whether this replica runs the reconciliation now: not while it
    /// knows another replica leads (the leader's rounds record any missing
    /// order; a follower's would repeat its lookups, and its records go to
    /// the leader anyway). With no leader known (during an election, or
    /// under a replicator without leaders) it does.
    fn reconciles(&self) -> bool {
        match self.replica.status().and_then(|status| status.leader) {
            Some(leader) => leader == self.replica.node().name,
            None => true,
        }
    }

    /// One round, from the first catalog replica that answers: every sale
    /// after the cursor is looked at (in pages), so that all the sales
    /// without an order start their grace period together. The cursor then
    /// stops before the first sale still waiting.
    async fn reconcile(&self, state: &mut Reconciler) {
        for index in self.catalogs.plan() {
            let cursor = state.cursors.get(&index).copied().unwrap_or(0);
            let mut after = cursor;
            // The first sale to look at again next round, if any.
            let mut hold: Option<u64> = None;
            let mut answered = false;
            for _ in 0..RECONCILE_PAGES {
                let listed = self
                    .catalogs
                    .attempt(index, |catalog| catalog.sales(after, RECONCILE_PAGE))
                    .await;
                let page = match listed {
                    Ok(page) => page,
                    Err(err) => {
                        tracing::debug!(%err, "a catalog replica did not list its sales");
                        break;
                    }
                };
                answered = true;
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
                    match self
                        .reconcile_sale(state, sale, ordered.contains(&sale.key))
                        .await
                    {
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

    /// Looks at one sale (`ordered`: whether its key had an order when the
    /// page was looked up): records its order if it has none after its
    /// grace period.
    async fn reconcile_sale(
        &self,
        state: &mut Reconciler,
        sale: &Sale,
        ordered: bool,
    ) -> SaleState {
        if ordered {
            state.first_seen.remove(&sale.key);
            return SaleState::Done;
        }
        let seen = *state
            .first_seen
            .entry(sale.key.clone())
            .or_insert_with(Instant::now);
        if seen.elapsed() < RECONCILE_GRACE {
            // Perhaps still under way: look again next round.
            return SaleState::Waiting;
        }
        // The sale again, under its key (it sells nothing more): the catalog
        // answers it as a change, so it pushes the book's invalidation to
        // the frontends, which the first attempt may never have done (its
        // propose had timed out when the sale committed).
        if let Err(err) = self.sell(sale.item, &sale.key).await {
            tracing::warn!(%err, "cannot replay a sale to reconcile; will retry");
            return SaleState::Failed;
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

    /// Has a catalog replica sell one copy under `key`, with the other
    /// sales that came with it, or alone if it could not be made with them.
    async fn sell(&self, item: ItemId, key: &IdempotencyKey) -> Result<(), ApiError> {
        let sale = SaleRequest {
            item,
            key: key.clone(),
        };
        let alone = || self.sell_alone(item, key);
        self.sales.ask(sale, alone).await.map(drop)
    }

    /// Has a catalog replica sell one copy under `key` in a call of its
    /// own: the leader (as the last probe found it), then the preferred
    /// one, then the others if it cannot serve (safe: the sale is keyed).
    async fn sell_alone(&self, item: ItemId, key: &IdempotencyKey) -> Result<Book, ApiError> {
        Ok(self
            .catalogs
            .call_leader_first(|catalog| catalog.sell(item, key))
            .await?)
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
        let OrderOutcome::Recorded { order } = self.replica.propose(op).await?;
        Ok(order)
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
        self.replica.ready_to_read().await?;
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
                self.replica.ready_to_read().await?;
                let orders = self.store.orders().await?;
                Ok(json(StatusCode::OK, &LedgerResponse::new(orders)))
            }
            // The seed's propagation endpoint: here, a shipment of ops.
            OrderRoute::Propagate => self.replica.replication_call("ship", &req).await,
            OrderRoute::Replication(rpc) => self.replica.replication_call(&rpc, &req).await,
            OrderRoute::Members(route) => self.replica.members_call(route, &req).await,
        }
    }

    fn node(&self) -> &NodeInfo {
        self.replica.node()
    }

    fn is_ready(&self) -> bool {
        self.replica.is_ready()
    }

    fn leader(&self) -> Option<String> {
        self.replica.status().and_then(|status| status.leader)
    }

    async fn metrics(&self, out: &mut Metrics) {
        self.replica.write_metrics(out).await;
        out.counter(
            "pygmy_order_reconciled_total",
            "Orders recorded for sales that had none.",
            self.reconciled.load(Ordering::Relaxed),
        );
    }
}

/// The sales of an order replica, those that come together asked of the
/// catalog in one call (`POST /sales`): to the leader first, then the
/// other replicas, as one sale's call goes; and the task that gathers
/// them.
fn gather_sales(
    catalogs: Arc<ReplicaSet<CatalogClient>>,
) -> (
    Gatherer<SaleRequest, Book>,
    impl std::future::Future<Output = ()> + Send,
) {
    Gatherer::new(SalesRequest::MOST, move |sales| {
        let catalogs = Arc::clone(&catalogs);
        async move {
            let request = SalesRequest { sales };
            catalogs
                .call_leader_first(|catalog| catalog.sell_many(&request))
                .await
        }
    })
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
