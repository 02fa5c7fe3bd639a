//! The catalog node: books and stock, one replica of the catalog service.
//!
//! Reads come from the local store (refused while the replica catches up);
//! changes go through the replicator, and after each one the node pushes an
//! invalidation of the book and its topic to every frontend before it
//! answers, so no frontend serves the old value from its cache afterwards.
//! A push that fails is waited out: the change is answered once that
//! frontend's cache lease from this replica has run out (see
//! [`pygmy_core::cache::lease`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{Method, StatusCode};
use pygmy_client::InternalClient;
use pygmy_core::api::{
    Empty, Invalidation, ItemsResponse, LeaseGrant, Sale, SalesResponse, Stamp, Status,
    UpdateResponse,
};
use pygmy_core::cache::lease::{LEASE, LEASE_MARGIN};
use pygmy_core::catalog::{
    CatalogCommand, CatalogMachine, CatalogOutcome, CatalogStore, MAX_COUNT,
};
use pygmy_core::journal::{Op, OpId};
use pygmy_core::replication::Replicator;
use pygmy_core::types::{Book, Cost, IdempotencyKey, ItemId};
use serde_json::Value;
use tracing::Instrument;

use crate::api::{json, parse_item_id, ApiError, ApiResult, Request};
use crate::node::{method_not_allowed, replication_call, route_not_found, Identity};
use crate::server::{parse_json, Handler, Metrics};

/// One frontend, as this replica pushes to it.
struct FrontendLink {
    name: String,
    client: InternalClient,
    lease: Mutex<LinkLease>,
}

/// What this replica granted a frontend, and numbered for it.
#[derive(Debug)]
struct LinkLease {
    /// Invalidations numbered for it (this incarnation).
    issued: u64,
    /// When this replica last answered its lease request (its start,
    /// before the first).
    last_granted: tokio::time::Instant,
}

/// How one invalidation goes to one frontend.
enum Push {
    /// Its lease from this replica has surely run out: it clears its cache
    /// before it serves from it again.
    Skip,
    /// Push it as number `seq`; if that fails, wait until `deadline`, when
    /// its lease has surely run out.
    Send {
        seq: u64,
        deadline: tokio::time::Instant,
    },
}

impl FrontendLink {
    /// Numbers the next invalidation for this frontend, unless it holds no
    /// lease.
    fn plan(&self) -> Push {
        let mut lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = lease.last_granted + LEASE + LEASE_MARGIN;
        if tokio::time::Instant::now() >= deadline {
            return Push::Skip;
        }
        lease.issued += 1;
        Push::Send {
            seq: lease.issued,
            deadline,
        }
    }

    /// Grants a lease: records the time, answers the count.
    fn grant(&self) -> u64 {
        let mut lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        lease.last_granted = tokio::time::Instant::now();
        lease.issued
    }
}

/// A catalog replica.
pub struct CatalogNode {
    identity: Identity,
    store: Arc<dyn CatalogStore>,
    replicator: Arc<dyn Replicator<CatalogMachine>>,
    frontends: Vec<Arc<FrontendLink>>,
    /// New at each start: the frontends count this replica's pushes anew.
    incarnation: String,
    /// Reads served (`GET /item...`), for `/metrics`.
    reads: AtomicU64,
    /// Changes answered after waiting out a frontend's lease.
    lease_waits: AtomicU64,
}

impl CatalogNode {
    /// A catalog replica over `store`, replicated by `replicator`, pushing
    /// invalidations to `frontends` (by name).
    pub fn new(
        identity: Identity,
        store: Arc<dyn CatalogStore>,
        replicator: Arc<dyn Replicator<CatalogMachine>>,
        frontends: Vec<(String, InternalClient)>,
    ) -> Self {
        CatalogNode {
            identity,
            store,
            replicator,
            frontends: frontends
                .into_iter()
                .map(|(name, client)| {
                    Arc::new(FrontendLink {
                        name,
                        client,
                        // As if granted now: the frontend may still hold a
                        // lease from this replica's previous incarnation,
                        // granted before this one started.
                        lease: Mutex::new(LinkLease {
                            issued: 0,
                            last_granted: tokio::time::Instant::now(),
                        }),
                    })
                })
                .collect(),
            incarnation: uuid::Uuid::new_v4().to_string(),
            reads: AtomicU64::new(0),
            lease_waits: AtomicU64::new(0),
        }
    }

    /// `GET /lease?frontend=<name>` (internal): a grant of that frontend's
    /// cache lease.
    fn lease(&self, req: &Request) -> ApiResult {
        req.authorize(self.identity.token.as_deref())?;
        let name = req.required("frontend")?;
        let link = self
            .frontends
            .iter()
            .find(|link| link.name == name)
            .ok_or_else(|| ApiError::NotFound(format!("no frontend {name} in the topology")))?;
        Ok(json(
            StatusCode::OK,
            &LeaseGrant {
                incarnation: self.incarnation.clone(),
                issued: link.grant(),
                message: Empty {},
                status: Status::Success,
                validation_code: 200,
            },
        ))
    }

    /// Ok once this replica serves, and (for a read) has applied every
    /// change acknowledged before: a read that follows is fresh.
    async fn ready_to_read(&self) -> Result<(), ApiError> {
        self.ensure_ready()?;
        self.replicator.linearize().await?;
        Ok(())
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
        self.ready_to_read().await?;
        if req.param("id").is_none() {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        let topic = req.param("topic").map(str::to_owned);
        let books = match req.param("id") {
            Some(raw) => {
                let book = self.book(parse_item_id(raw)?).await?;
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

    /// `GET /sales?after=&limit=` (internal): the sales made, in apply
    /// order, for the order service's reconciliation.
    async fn sales(&self, req: &Request) -> ApiResult {
        req.authorize(self.identity.token.as_deref())?;
        let number = |name: &str, default: u64| -> Result<u64, ApiError> {
            match req.param(name) {
                None => Ok(default),
                Some(raw) => raw
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("{name} must be a whole number"))),
            }
        };
        let after = number("after", 0)?;
        let limit = number("limit", 500)?.clamp(1, 5_000);
        self.ready_to_read().await?;
        let ops = self
            .store
            .applied("sale:", after, usize::try_from(limit).unwrap_or(5_000))
            .await?;
        let last_seq = ops.last().map_or(after, |op| op.seq);
        let sales = ops
            .into_iter()
            .filter_map(|op| {
                let CatalogOutcome::Sold { book } = op.outcome else {
                    return None;
                };
                let key = IdempotencyKey::parse(op.id.0.strip_prefix("sale:")?).ok()?;
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
                sales,
                status: Status::Success,
                validation_code: 200,
            },
        ))
    }

    /// `PUT /item/<id>`: `{"count": delta}` and/or `{"cost": value}`.
    async fn update(&self, req: &Request, id: &str) -> ApiResult {
        req.authorize(self.identity.token.as_deref())?;
        let id = parse_item_id(id)?;
        let (count, cost) = parse_update(&parse_json::<Value>(&req.body)?)?;
        let op = Op {
            id: OpId::random(),
            cmd: CatalogCommand::Update {
                item: id,
                count,
                cost,
            },
        };
        match self.change(op).await? {
            CatalogOutcome::Updated { book } => {
                Ok(json(StatusCode::CREATED, &UpdateResponse::new(book)))
            }
            CatalogOutcome::Refused { reason, .. } => Err(ApiError::Unprocessable(reason)),
            CatalogOutcome::NoSuchItem { item } => Err(ApiError::no_such_item(item)),
            other => Err(ApiError::Internal(format!("an update answered {other:?}"))),
        }
    }

    /// `POST /item/<id>/sell` (internal): one copy, once per key.
    async fn sell(&self, req: &Request, id: &str) -> ApiResult {
        req.authorize(self.identity.token.as_deref())?;
        let id = parse_item_id(id)?;
        let key = req.idempotency_key()?.ok_or_else(|| {
            ApiError::BadRequest("a sale needs an Idempotency-Key header".to_owned())
        })?;
        let op = Op {
            id: OpId(format!("sale:{key}")),
            cmd: CatalogCommand::Sell { item: id },
        };
        match self.change(op).await? {
            CatalogOutcome::Sold { book } if book.id == id => {
                Ok(json(StatusCode::OK, &ItemsResponse::new(vec![book])))
            }
            CatalogOutcome::SoldOut { item } if item == id => Err(ApiError::out_of_stock(id)),
            CatalogOutcome::NoSuchItem { item } if item == id => Err(ApiError::no_such_item(id)),
            _ => Err(ApiError::Unprocessable(format!(
                "the idempotency key {key} was used to buy another item"
            ))),
        }
    }

    /// Proposes `op`; after a change, drops the book from every frontend's
    /// cache before answering.
    async fn change(&self, op: Op<CatalogCommand>) -> Result<CatalogOutcome, ApiError> {
        self.ensure_ready()?;
        let outcome = self.replicator.propose(op).await?;
        if let Some(book) = outcome.changed_book() {
            self.invalidate(book).await;
        }
        Ok(outcome)
    }

    /// Pushes the invalidation of `book` to every frontend that holds a
    /// lease from this replica, and waits until each took it or its lease
    /// has surely run out.
    async fn invalidate(&self, book: &Book) {
        let mut pushes = tokio::task::JoinSet::new();
        for link in &self.frontends {
            let Push::Send { seq, deadline } = link.plan() else {
                continue;
            };
            let invalidation = Invalidation {
                item: book.id,
                topic: book.topic.clone(),
                stamp: Some(Stamp {
                    source: self.identity.name.clone(),
                    incarnation: self.incarnation.clone(),
                    seq,
                }),
            };
            let link = link.clone();
            pushes.spawn(
                async move {
                    match tokio::time::timeout_at(deadline, link.client.invalidate(&invalidation))
                        .await
                    {
                        Ok(Ok(())) => false,
                        Ok(Err(err)) => {
                            tracing::warn!(frontend = %link.name, %err,
                                "a frontend did not take an invalidation; waiting out its lease");
                            tokio::time::sleep_until(deadline).await;
                            true
                        }
                        Err(_) => {
                            tracing::warn!(frontend = %link.name,
                                "a frontend did not take an invalidation before its lease ran out");
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
fn parse_update(body: &Value) -> Result<(Option<i64>, Option<Cost>), ApiError> {
    let Value::Object(fields) = body else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object with \"count\" and/or \"cost\"".to_owned(),
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| *k != "count" && *k != "cost") {
        return Err(ApiError::BadRequest(format!(
            "unknown field {unknown:?}: only \"count\" and \"cost\" can change"
        )));
    }
    let count = match fields.get("count") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(delta) if (-MAX_COUNT..=MAX_COUNT).contains(&delta) => Some(delta),
            Some(_) => {
                return Err(ApiError::Unprocessable(format!(
                    "count must be within ±{MAX_COUNT}"
                )))
            }
            None => {
                return Err(ApiError::Unprocessable(format!(
                    "count must be a whole number, not {n}"
                )))
            }
        },
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "count must be a number, not {other}"
            )))
        }
    };
    let cost = match fields.get("cost") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            Some(Cost::from_json(n).map_err(|e| ApiError::Unprocessable(e.to_string()))?)
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "cost must be a number, not {other}"
            )))
        }
    };
    if count.is_none() && cost.is_none() {
        return Err(ApiError::BadRequest(
            "nothing to update: give \"count\" and/or \"cost\"".to_owned(),
        ));
    }
    Ok((count, cost))
}

#[async_trait]
impl Handler for CatalogNode {
    async fn handle(&self, req: Request) -> ApiResult {
        let method = req.method.clone();
        match (&method, req.path().as_slice()) {
            (&Method::GET, ["item"]) => self.query(&req).await,
            (&Method::GET, ["sales"]) => self.sales(&req).await,
            (&Method::GET, ["lease"]) => self.lease(&req),
            (&Method::GET, ["item", id]) => {
                self.ready_to_read().await?;
                let book = self.book(parse_item_id(id)?).await?;
                Ok(json(StatusCode::OK, &ItemsResponse::new(vec![book])))
            }
            (&Method::PUT, ["item", "propagate", _]) => {
                // The seed's propagation endpoint: here, a shipment of ops.
                replication_call(&self.identity, &*self.replicator, "ship", &req).await
            }
            (&Method::PUT, ["item", id]) => self.update(&req, id).await,
            (&Method::POST, ["item", id, "sell"]) => self.sell(&req, id).await,
            (&Method::POST, ["replication", rpc]) => {
                replication_call(&self.identity, &*self.replicator, rpc, &req).await
            }
            (
                _,
                ["item"]
                | ["item", _]
                | ["item", "propagate", _]
                | ["item", _, "sell"]
                | ["replication", _]
                | ["sales"]
                | ["lease"]
                | ["health"],
            ) => Err(method_not_allowed(&method)),
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
            "pygmy_catalog_reads_total",
            "Reads of books served.",
            self.reads.load(Ordering::Relaxed),
        );
        out.counter(
            "pygmy_catalog_lease_waits_total",
            "Invalidation pushes that failed, waited out until the frontend's cache lease ran out.",
            self.lease_waits.load(Ordering::Relaxed),
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
