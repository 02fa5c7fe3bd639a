//! The catalog node: books and stock, one replica of the catalog service.
//!
//! Reads come from the local store (refused while the replica catches up);
//! changes go through the replicator, and after each one the node pushes an
//! invalidation of the book and its topic to every frontend before it
//! answers, so no frontend serves the old value from its cache afterwards.
//! A push that fails is waited out: the change is answered once that
//! frontend's cache lease from this replica has run out (see
//! [`pygmy_core::cache::lease`]). A change and its push run in a task of
//! their own, to their end even when the caller stops waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::StatusCode;
use pygmy_client::InternalClient;
use pygmy_core::api::internal::{
    Invalidation, LeaseGrant, LookupAnswers, LookupResult, LookupsRequest, ReconciledRequest,
    ReconciledResponse, Sale, SaleAnswers, SaleResult, SalesRequest, SalesResponse, Stamp,
};
use pygmy_core::api::public::{ItemsResponse, UpdateResponse};
use pygmy_core::api::routes::CatalogRoute;
use pygmy_core::api::{Empty, Envelope};
use pygmy_core::cache::lease::{LeaseIssuer, Push};
use pygmy_core::catalog::{
    CatalogCommand, CatalogMachine, CatalogOutcome, CatalogStore, MAX_COUNT, SALE_PREFIX,
};
use pygmy_core::journal::{Op, OpId};
use pygmy_core::replication::Replicator;
use pygmy_core::shard::{ItemRanges, MAX_ORDER_SHARDS};
use pygmy_core::types::{Book, Cost, IdempotencyKey, ItemId};
use serde_json::Value;
use tracing::Instrument;

use crate::background::Background;
use crate::gather::{check_count, serve_each};
use crate::http::{json, ApiError, ApiResult, Handler, Metrics, NodeInfo, Readiness, Request};
use crate::pusher::Pusher;
use crate::replica::Replica;

/// One frontend, as this replica pushes to it.
struct FrontendLink {
    name: String,
    pusher: Pusher,
    lease: Mutex<LeaseIssuer>,
}

impl FrontendLink {
    fn issuer(&self) -> std::sync::MutexGuard<'_, LeaseIssuer> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// A catalog replica.
pub struct CatalogNode {
    replica: Replica<CatalogMachine>,
    store: Arc<dyn CatalogStore>,
    /// The frontends this replica pushes invalidations to, shared with the
    /// tasks its changes run in.
    pushes: Arc<Pushes>,
    /// Reads served (`GET /item...`), for `/metrics`.
    reads: AtomicU64,
    /// The catalog's shards, and which one this replica is of.
    ranges: ItemRanges,
    shard: usize,
}

/// A catalog replica's invalidation pushes: to each frontend, numbered
/// within this incarnation.
struct Pushes {
    /// This replica's name.
    source: String,
    frontends: Vec<Arc<FrontendLink>>,
    /// New at each start: the frontends count this replica's pushes anew.
    incarnation: String,
    /// Changes answered after waiting out a frontend's lease.
    lease_waits: AtomicU64,
    /// The log index of the membership this replica last served a change
    /// under (see [`Pushes::members_seen`]).
    members_index: Mutex<Option<u64>>,
}

impl CatalogNode {
    /// A replica of catalog shard `shard` (of `ranges`) over `store`,
    /// replicated by `replicator`, pushing invalidations to `frontends`
    /// (by name); and its background work (not started): a pusher per
    /// frontend, and the measure of its data dir.
    pub fn new(
        node: NodeInfo,
        store: Arc<dyn CatalogStore>,
        replicator: Arc<dyn Replicator<CatalogMachine>>,
        frontends: Vec<(String, InternalClient)>,
        (ranges, shard): (ItemRanges, usize),
    ) -> (Self, Background) {
        let mut background = Background::default();
        let frontends = frontends
            .into_iter()
            .map(|(name, client)| {
                let (pusher, pushing) = Pusher::new(client);
                background.add(pushing);
                Arc::new(FrontendLink {
                    name,
                    pusher,
                    lease: Mutex::new(LeaseIssuer::new(now())),
                })
            })
            .collect();
        let pushes = Arc::new(Pushes {
            source: node.name.clone(),
            frontends,
            incarnation: uuid::Uuid::new_v4().to_string(),
            lease_waits: AtomicU64::new(0),
            members_index: Mutex::new(None),
        });
        let replica = Replica::new(node, replicator);
        background.add(replica.measure_forever());
        let catalog = CatalogNode {
            replica,
            store,
            pushes,
            reads: AtomicU64::new(0),
            ranges,
            shard,
        };
        (catalog, background)
    }

    /// `GET /lease?frontend=<name>` (internal): a grant of that frontend's
    /// cache lease.
    fn lease(&self, req: &Request) -> ApiResult {
        let name = req.required("frontend")?;
        let link = self
            .pushes
            .frontends
            .iter()
            .find(|link| link.name == name)
            .ok_or_else(|| ApiError::not_found(format!("no frontend {name} in the topology")))?;
        Ok(json(
            StatusCode::OK,
            &LeaseGrant {
                incarnation: self.pushes.incarnation.clone(),
                issued: link.issuer().grant(now()),
                members: self.replica.known_members(),
                message: Empty {},
                envelope: Envelope::OK,
            },
        ))
    }

    async fn book(&self, id: ItemId) -> Result<Book, ApiError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.store
            .book(id)
            .await?
            .ok_or_else(|| ApiError::no_such_item(id))
    }

    /// `GET /item`, `GET /item?id=`, `GET /item?topic=` (both: the book if
    /// it is of the topic).
    async fn query(&self, req: &Request) -> ApiResult {
        self.replica.ready_to_read().await?;
        if req.param("id").is_none() {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        let topic = req.param("topic").map(str::to_owned);
        let books = match req.param("id") {
            Some(_) => {
                let book = self.book(req.item_id("id")?).await?;
                let matches = topic.as_deref().is_none_or(|t| t == book.topic);
                if matches {
                    vec![book]
                } else {
                    Vec::new()
                }
            }
            None => self.store.books(topic).await?,
        };
        Ok(json(StatusCode::OK, &ItemsResponse::new(books)))
    }

    /// `GET /sales?after=&limit=&shard=` (internal): the sales made, in
    /// apply order, for the order service's reconciliation, with the
    /// progress of order shard `shard`'s reconciler.
    async fn sales(&self, req: &Request) -> ApiResult {
        let after = req.number("after")?.unwrap_or(0);
        let limit = req.number("limit")?.unwrap_or(500).clamp(1, 5_000);
        let shard = order_shard(req.number("shard")?.unwrap_or(0))?;
        self.replica.ready_to_read().await?;
        let ops = self
            .store
            .applied(SALE_PREFIX, after, usize::try_from(limit).unwrap_or(5_000))
            .await?;
        let last_seq = ops.last().map_or(after, |op| op.seq);
        let reconciled = if self.numbers_sales_alike() {
            Some(self.store.reconciled(shard).await?.unwrap_or(0))
        } else {
            None
        };
        let sales = ops
            .into_iter()
            .filter_map(|op| {
                let CatalogOutcome::Sold { book } = op.outcome else {
                    return None;
                };
                let key = CatalogCommand::sale_key(&op.id)?;
                Some(Sale {
                    item: book.id,
                    key,
                    seq: op.seq,
                })
            })
            .collect();
        Ok(json(
            StatusCode::OK,
            &SalesResponse {
                last_seq,
                message: Empty {},
                reconciled,
                sales,
                envelope: Envelope::OK,
            },
        ))
    }

    /// Whether every replica numbers the sales alike (under `raft`, which
    /// applies one log in one order; `broadcast`'s replicas apply ops in
    /// orders of their own, and each numbers them its way): only then is
    /// the reconciler's progress, a place in that numbering, kept with the
    /// sales.
    fn numbers_sales_alike(&self) -> bool {
        self.replica.status().is_some()
    }

    /// `POST /sales/reconciled` (internal): the order service's reconciler
    /// has recorded the order of every sale up to `upto`; kept with the
    /// sales (a replicated op) so that the next order leader resumes from
    /// it, and so that the records of the sales after it are kept.
    async fn reconciled(&self, req: &Request) -> ApiResult {
        let ReconciledRequest {
            upto,
            shard,
            shards,
        } = req.json()?;
        if shard >= shards || usize::try_from(shards).unwrap_or(usize::MAX) > MAX_ORDER_SHARDS {
            return Err(ApiError::bad_request(format!(
                "shard {shard} of {shards}: a shard is below the count, which is at most \
                 {MAX_ORDER_SHARDS}"
            )));
        }
        if !self.numbers_sales_alike() {
            return Err(ApiError::unprocessable(
                "the reconciler's progress is kept under raft only",
            ));
        }
        let op = Op {
            id: CatalogCommand::reconciled_op_id(shard, upto),
            cmd: CatalogCommand::Reconciled {
                upto,
                shard,
                shards,
            },
        };
        match self.change(op).await? {
            CatalogOutcome::Reconciled { upto } => Ok(json(
                StatusCode::OK,
                &ReconciledResponse {
                    message: Empty {},
                    reconciled: upto,
                    envelope: Envelope::OK,
                },
            )),
            other => Err(ApiError::internal(format!(
                "a reconciled mark answered {other:?}"
            ))),
        }
    }

    /// Refuses a write of an item of another catalog shard (421): a book
    /// lives in one shard only.
    fn ensure_holds(&self, id: ItemId) -> Result<(), ApiError> {
        if self.ranges.holds(self.shard, id) {
            return Ok(());
        }
        Err(ApiError::misdirected(format!(
            "item {id} belongs to catalog shard {}, not to this replica's ({})",
            self.ranges.shard_of(id),
            self.shard
        )))
    }

    /// `PUT /item/<id>`: `{"count": delta}` and/or `{"cost": value}`. With
    /// an `Idempotency-Key`, applied once per key (a retry answers the
    /// first one's outcome).
    async fn update(&self, req: &Request, id: ItemId) -> ApiResult {
        let (count, cost) = parse_update(&req.json::<Value>()?)?;
        self.ensure_holds(id)?;
        let key = req.idempotency_key()?;
        let op = Op {
            id: key
                .as_ref()
                .map_or_else(OpId::random, CatalogCommand::update_op_id),
            cmd: CatalogCommand::Update {
                item: id,
                count,
                cost,
            },
        };
        let another_item = |key: Option<IdempotencyKey>| {
            ApiError::unprocessable(format!(
                "the idempotency key {} was used to update another item",
                key.map(|k| k.to_string()).unwrap_or_default()
            ))
        };
        match self.change(op).await? {
            CatalogOutcome::Updated { book } if book.id == id => {
                Ok(json(StatusCode::CREATED, &UpdateResponse::new(book)))
            }
            CatalogOutcome::Refused { item, reason } if item == id => {
                Err(ApiError::unprocessable(reason))
            }
            CatalogOutcome::NoSuchItem { item } if item == id => Err(ApiError::no_such_item(item)),
            CatalogOutcome::Updated { .. }
            | CatalogOutcome::Refused { .. }
            | CatalogOutcome::NoSuchItem { .. } => Err(another_item(key)),
            other => Err(ApiError::internal(format!("an update answered {other:?}"))),
        }
    }

    /// `POST /item/<id>/sell` (internal): one copy, once per key.
    async fn sell(&self, req: &Request, id: ItemId) -> ApiResult {
        let key = req
            .idempotency_key()?
            .ok_or_else(|| ApiError::bad_request("a sale needs an Idempotency-Key header"))?;
        let book = self.sale(id, key).await?;
        Ok(json(StatusCode::OK, &ItemsResponse::new(vec![book])))
    }

    /// `POST /sales` (internal): many sales, proposed together (under load
    /// they go into one raft entry), each answered with its own result. A
    /// replica that cannot serve refuses the whole call (503), so that the
    /// caller takes it to another replica.
    async fn sell_many(&self, req: &Request) -> ApiResult {
        let SalesRequest { sales } = req.json()?;
        // Before readiness: a bad call is 400 even from a replica that
        // could not serve now (as `POST /lookups` and `POST /buys`).
        check_count(sales.len(), SalesRequest::MOST)?;
        self.replica.ensure_ready()?;
        let made = serve_each(sales, |s| self.sale(s.item, s.key)).await;
        let results = made
            .into_iter()
            .map(|made| made.map_or_else(SaleResult::Failed, SaleResult::Sold))
            .collect();
        Ok(json(StatusCode::OK, &SaleAnswers::new(results)))
    }

    /// `POST /lookups` (internal): many books, all read after one read
    /// index (taken after the call arrived, so after each of its lookups
    /// was asked), each answered with its own result.
    async fn lookup_many(&self, req: &Request) -> ApiResult {
        let LookupsRequest { items } = req.json()?;
        // Before the read index: a bad call is 400 even from a replica
        // that could not read now (as `POST /sales` and `POST /buys`).
        check_count(items.len(), LookupsRequest::MOST)?;
        self.replica.ready_to_read().await?;
        let made = serve_each(items, |id| self.book(id)).await;
        let results = made
            .into_iter()
            .map(|made| made.map_or_else(LookupResult::Failed, LookupResult::Found))
            .collect();
        Ok(json(StatusCode::OK, &LookupAnswers::new(results)))
    }

    /// Sells one copy of `id` under `key` (op `sale:<key>`): the book after
    /// the sale, or the sale's refusal (out of stock, no such item, the key
    /// used for another item).
    async fn sale(&self, id: ItemId, key: IdempotencyKey) -> Result<Book, ApiError> {
        self.ensure_holds(id)?;
        let op = Op {
            id: CatalogCommand::sale_op_id(&key),
            cmd: CatalogCommand::Sell { item: id },
        };
        match self.change(op).await? {
            CatalogOutcome::Sold { book } if book.id == id => Ok(book),
            CatalogOutcome::SoldOut { item } if item == id => Err(ApiError::out_of_stock(id)),
            CatalogOutcome::NoSuchItem { item } if item == id => Err(ApiError::no_such_item(id)),
            _ => Err(ApiError::unprocessable(format!(
                "the idempotency key {key} was used to buy another item"
            ))),
        }
    }

    /// Proposes `op`; after a change, drops the book from every frontend's
    /// cache before answering. The change runs to its end in a task of its
    /// own, whoever stops waiting for it: a caller that goes away (or the
    /// request's time limit) cannot leave a committed change without its
    /// invalidation.
    async fn change(&self, op: Op<CatalogCommand>) -> Result<CatalogOutcome, ApiError> {
        self.replica.ensure_ready()?;
        let replica = self.replica.clone();
        let pushes = Arc::clone(&self.pushes);
        let change = async move {
            let outcome = replica.propose(op).await?;
            if let Some(book) = outcome.changed_book() {
                pushes.members_seen(replica.members_index());
                pushes.invalidate(book).await;
            }
            Ok(outcome)
        };
        tokio::spawn(change.in_current_span())
            .await
            .map_err(|e| ApiError::internal(format!("the change task failed: {e}")))?
    }
}

impl Pushes {
    /// Before a change's pushes: if the membership changed since the last
    /// change (this replica joined, or was added again), the frontends
    /// may have learned of this replica only now, from their grants; so
    /// each counts as granted now, and is pushed to until its leases from
    /// before have surely run out.
    fn members_seen(&self, index: Option<u64>) {
        let mut seen = self.members_index.lock().unwrap_or_else(|p| p.into_inner());
        if *seen != index {
            *seen = index;
            let now = now();
            for link in &self.frontends {
                link.issuer().assume_granted(now);
            }
        }
    }

    /// Pushes the invalidation of `book` to every frontend that holds a
    /// lease from this replica, and waits until each took it or its lease
    /// has surely run out.
    async fn invalidate(&self, book: &Book) {
        let mut pushes = tokio::task::JoinSet::new();
        for link in &self.frontends {
            let Push::Send { seq, deadline } = link.issuer().plan(now()) else {
                continue;
            };
            let deadline = tokio::time::Instant::from_std(deadline);
            let invalidation = Invalidation {
                item: book.id,
                topic: book.topic.clone(),
                stamp: Some(Stamp {
                    source: self.source.clone(),
                    incarnation: self.incarnation.clone(),
                    seq,
                }),
            };
            let link = link.clone();
            pushes.spawn(
                async move {
                    match link.pusher.push(invalidation, deadline).await {
                        Ok(()) => false,
                        Err(err) => {
                            tracing::warn!(frontend = %link.name, %err,
                                "a frontend did not take an invalidation; waiting out its lease");
                            tokio::time::sleep_until(deadline).await;
                            true
                        }
                    }
                }
                .in_current_span(),
            );
        }
        while let Some(waited) = pushes.join_next().await {
            if waited.unwrap_or(false) {
                self.lease_waits.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Checks a `PUT /item` body: an object with `count` (an integer delta)
/// and/or `cost` (a price), nothing else. 400 for a malformed body, 422 for
/// an impossible value.
/// An order shard's number as a request gives it (`?shard=`).
fn order_shard(shard: u64) -> Result<u32, ApiError> {
    u32::try_from(shard)
        .ok()
        .filter(|s| usize::try_from(*s).is_ok_and(|s| s < MAX_ORDER_SHARDS))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "shard {shard}: a store has at most {MAX_ORDER_SHARDS} order shards"
            ))
        })
}

fn parse_update(body: &Value) -> Result<(Option<i64>, Option<Cost>), ApiError> {
    let Value::Object(fields) = body else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object with \"count\" and/or \"cost\"".to_owned(),
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| *k != "count" && *k != "cost") {
        return Err(ApiError::bad_request(format!(
            "unknown field {unknown:?}: only \"count\" and \"cost\" can change"
        )));
    }
    let count = match fields.get("count") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(delta) if (-MAX_COUNT..=MAX_COUNT).contains(&delta) => Some(delta),
            Some(_) => {
                return Err(ApiError::unprocessable(format!(
                    "count must be within ±{MAX_COUNT}"
                )))
            }
            None => {
                return Err(ApiError::unprocessable(format!(
                    "count must be a whole number, not {n}"
                )))
            }
        },
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "count must be a number, not {other}"
            )))
        }
    };
    let cost = match fields.get("cost") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            Some(Cost::from_json(n).map_err(|e| ApiError::unprocessable(e.to_string()))?)
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "cost must be a number, not {other}"
            )))
        }
    };
    if count.is_none() && cost.is_none() {
        return Err(ApiError::bad_request(
            "nothing to update: give \"count\" and/or \"cost\"".to_owned(),
        ));
    }
    Ok((count, cost))
}

#[async_trait]
impl Handler for CatalogNode {
    type Route = CatalogRoute;

    async fn handle(&self, route: CatalogRoute, req: Request) -> ApiResult {
        match route {
            CatalogRoute::Items => self.query(&req).await,
            CatalogRoute::Item(id) => {
                self.replica.ready_to_read().await?;
                let book = self.book(id).await?;
                Ok(json(StatusCode::OK, &ItemsResponse::new(vec![book])))
            }
            CatalogRoute::Update(id) => self.update(&req, id).await,
            CatalogRoute::Sell(id) => self.sell(&req, id).await,
            CatalogRoute::Sales => self.sales(&req).await,
            CatalogRoute::SellMany => self.sell_many(&req).await,
            CatalogRoute::Reconciled => self.reconciled(&req).await,
            CatalogRoute::LookupMany => self.lookup_many(&req).await,
            CatalogRoute::Lease => self.lease(&req),
            // The seed's propagation endpoint: here, a shipment of ops.
            CatalogRoute::Propagate => self.replica.replication_call("ship", &req).await,
            CatalogRoute::Replication(rpc) => self.replica.replication_call(&rpc, &req).await,
            CatalogRoute::Members(route) => self.replica.members_call(route, &req).await,
            CatalogRoute::Backup => self.replica.backup("catalog").await,
        }
    }

    fn node(&self) -> &NodeInfo {
        self.replica.node()
    }

    fn readiness(&self) -> Readiness {
        self.replica.readiness()
    }

    fn leader(&self) -> Option<String> {
        self.replica.status().and_then(|status| status.leader)
    }

    async fn stop(&self) {
        self.replica.stop().await;
    }

    async fn metrics(&self, out: &mut Metrics) {
        self.replica.write_metrics(out).await;
        out.counter(
            "pygmy_catalog_reads_total",
            "Reads of books served.",
            self.reads.load(Ordering::Relaxed),
        );
        out.counter(
            "pygmy_catalog_lease_waits_total",
            "Invalidation pushes that failed, waited out until the frontend's cache lease ran out.",
            self.pushes.lease_waits.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Option<i64>, Option<Cost>), ApiError> {
        parse_update(&serde_json::from_str(text).expect("json"))
    }

    #[test]
    fn update_bodies_are_checked() {
        assert_eq!(parse(r#"{"count": -1}"#).expect("ok"), (Some(-1), None));
        assert_eq!(
            parse(r#"{"cost": 12.5}"#).expect("ok").1.map(Cost::cents),
            Some(1250)
        );
        let status = |text| parse(text).map(|_| ()).map_err(|e| e.status().as_u16());
        assert_eq!(status(r#"{"count": 1.5}"#), Err(422));
        assert_eq!(status(r#"{"cost": -3}"#), Err(422));
        assert_eq!(status(r#"{"count": 1e13}"#), Err(422));
        assert_eq!(status(r#"{"count": "1"}"#), Err(400));
        assert_eq!(status(r#"{"title": "x"}"#), Err(400));
        assert_eq!(status(r#"{}"#), Err(400));
        assert_eq!(status(r#"[1]"#), Err(400));
    }
}
