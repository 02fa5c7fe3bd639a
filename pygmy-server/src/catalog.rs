//! The catalog node: books and stock, one replica of the catalog service.
//!
//! Reads come from the local store (refused while the replica catches up);
//! changes go through the replicator, and after each one the node pushes an
//! invalidation of the book and its topic to every frontend before it
//! answers, so no frontend serves the old value from its cache afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, StatusCode};
use pygmy_client::InternalClient;
use pygmy_core::api::{
    Empty, Invalidation, ItemsResponse, Sale, SalesResponse, Status, UpdateResponse,
};
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

/// How long a change waits, at most, for the frontends to drop the book.
const INVALIDATION_TIMEOUT: Duration = Duration::from_millis(500);

/// A catalog replica.
pub struct CatalogNode {
    identity: Identity,
    store: Arc<dyn CatalogStore>,
    replicator: Arc<dyn Replicator<CatalogMachine>>,
    frontends: Vec<InternalClient>,
    /// Reads served (`GET /item...`), for `/metrics`.
    reads: AtomicU64,
}

impl CatalogNode {
    /// A catalog replica over `store`, replicated by `replicator`, pushing
    /// invalidations to `frontends`.
    pub fn new(
        identity: Identity,
        store: Arc<dyn CatalogStore>,
        replicator: Arc<dyn Replicator<CatalogMachine>>,
        frontends: Vec<InternalClient>,
    ) -> Self {
        CatalogNode {
            identity,
            store,
            replicator,
            frontends,
            reads: AtomicU64::new(0),
        }
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

    /// Pushes the invalidation of `book` to every frontend and waits (at
    /// most [`INVALIDATION_TIMEOUT`]) for each to take it. A frontend that
    /// did not is retried in the background until it does, or for
    /// [`INVALIDATION_RETRY_FOR`] (past the cache's TTL backstop), so it
    /// serves the old value no longer than it stays unreachable.
    async fn invalidate(&self, book: &Book) {
        let invalidation = Invalidation {
            item: book.id,
            topic: book.topic.clone(),
        };
        let mut pushes = tokio::task::JoinSet::new();
        for frontend in &self.frontends {
            let (frontend, invalidation) = (frontend.clone(), invalidation.clone());
            pushes.spawn(async move {
                if push(&frontend, &invalidation).await {
                    return;
                }
                // Answered already or not, the change stands: keep trying
                // in the background.
                tokio::spawn(
                    async move {
                        let deadline = tokio::time::Instant::now() + INVALIDATION_RETRY_FOR;
                        while tokio::time::Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if push(&frontend, &invalidation).await {
                                return;
                            }
                        }
                        tracing::error!(item = %invalidation.item, "a frontend never took an invalidation");
                    }
                    .in_current_span(),
                );
            });
        }
        while pushes.join_next().await.is_some() {}
    }
}

/// How long a failed invalidation push is retried.
const INVALIDATION_RETRY_FOR: Duration = Duration::from_secs(60);

/// One push of an invalidation; whether the frontend took it in time.
async fn push(frontend: &InternalClient, invalidation: &Invalidation) -> bool {
    match tokio::time::timeout(INVALIDATION_TIMEOUT, frontend.invalidate(invalidation)).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::warn!(%err, "a frontend did not take an invalidation");
            false
        }
        Err(_) => {
            tracing::warn!("a frontend did not answer an invalidation in time");
            false
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
