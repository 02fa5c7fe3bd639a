//! Typed clients of the backend nodes, used by the server for its
//! node-to-node calls and by tests and checkers to read each replica.

use std::time::Duration;

use pygmy_core::api::internal::{
    BuyAnswers, BuyResult, BuysRequest, Invalidation, LeaseGrant, LedgerResponse, LookupAnswers,
    LookupResult, LookupsRequest, MembersResponse, NewMember, ReconciledRequest,
    ReconciledResponse, SaleAnswers, SaleResult, SalesRequest, SalesResponse,
};
use pygmy_core::api::public::{
    BuyResponse, HealthResponse, ItemUpdate, ItemsResponse, OrderPage, UpdateResponse,
};
use pygmy_core::api::routes::{CatalogRoute, FrontendRoute, MemberRoute, OrderRoute, Route};
use pygmy_core::balance::{Probe, Probed};
use pygmy_core::replication::Members;
use pygmy_core::types::{Book, IdempotencyKey, ItemId, Order, OrderId};

use crate::error::ClientError;
use crate::http::{ClientOptions, Http, IDEMPOTENCY_HEADER};

/// A client of one catalog replica.
#[derive(Debug, Clone)]
pub struct CatalogClient {
    http: Http,
}

impl CatalogClient {
    /// A client of the catalog replica at `url`.
    pub fn new(url: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        Ok(CatalogClient {
            http: Http::new(url, options)?,
        })
    }

    /// The same over an existing HTTP client (sharing its connection pool).
    pub fn from_http(http: Http) -> Self {
        CatalogClient { http }
    }

    /// Every book (`GET /item`), or those of `topic` (`GET /item?topic=`).
    pub async fn items(&self, topic: Option<&str>) -> Result<Vec<Book>, ClientError> {
        let query: Vec<(&str, &str)> = topic.map(|t| ("topic", t)).into_iter().collect();
        let request = self.http.request(&CatalogRoute::Items, &query);
        let response: ItemsResponse = self.http.send(request).await?;
        Ok(response.item)
    }

    /// The book with this id (`GET /item/<id>`).
    pub async fn item(&self, id: ItemId) -> Result<Book, ClientError> {
        let request = self.http.request(&CatalogRoute::Item(id), &[]);
        let response: ItemsResponse = self.http.send(request).await?;
        self.http.first_item(response, "an item lookup")
    }

    /// Reads many books in one call (`POST /lookups`, internal), each as
    /// [`CatalogClient::item`] reads one and all after one read index: the
    /// result of each, in order (the book, or the error that call would
    /// have met).
    pub async fn item_many(
        &self,
        lookups: &LookupsRequest,
    ) -> Result<Vec<Result<Book, ClientError>>, ClientError> {
        let request = self
            .http
            .request(&CatalogRoute::LookupMany, &[])
            .json(lookups);
        let made: LookupAnswers = self.http.send(request).await?;
        each_of(
            &self.http,
            lookups.items.len(),
            made.results,
            |result| match result {
                LookupResult::Found(book) => Ok(book),
                LookupResult::Failed(refusal) => Err(refusal.into()),
            },
        )
    }

    /// Changes stock (a delta) and/or cost (`PUT /item/<id>`, internal).
    /// Without a key, a retry after an error may apply the change twice:
    /// see [`CatalogClient::update_with_key`].
    pub async fn update(&self, id: ItemId, update: &ItemUpdate) -> Result<Book, ClientError> {
        let request = self
            .http
            .request(&CatalogRoute::Update(id), &[])
            .json(update);
        let response: UpdateResponse = self.http.send(request).await?;
        Ok(response.item)
    }

    /// Changes stock and/or cost once per `key`: a retry with the same key
    /// applies nothing more and answers the book as the first one left it.
    pub async fn update_with_key(
        &self,
        id: ItemId,
        update: &ItemUpdate,
        key: &IdempotencyKey,
    ) -> Result<Book, ClientError> {
        let request = self
            .http
            .request(&CatalogRoute::Update(id), &[])
            .header(IDEMPOTENCY_HEADER, key.as_str())
            .json(update);
        let response: UpdateResponse = self.http.send(request).await?;
        Ok(response.item)
    }

    /// Sells one copy under `key` (`POST /item/<id>/sell`, internal): the
    /// same key sells at most once. Returns the book after the sale.
    pub async fn sell(&self, id: ItemId, key: &IdempotencyKey) -> Result<Book, ClientError> {
        let request = self
            .http
            .request(&CatalogRoute::Sell(id), &[])
            .header(IDEMPOTENCY_HEADER, key.as_str());
        let response: ItemsResponse = self.http.send(request).await?;
        self.http.first_item(response, "a sale")
    }

    /// Makes many sales in one call (`POST /sales`, internal), each as
    /// [`CatalogClient::sell`] makes one: the result of each, in order
    /// (the book after the sale, or the error that call would have met).
    /// An error for the whole call (the node could not take it) means
    /// nothing is known of any sale: each may be made again, as its key
    /// makes harmless.
    pub async fn sell_many(
        &self,
        sales: &SalesRequest,
    ) -> Result<Vec<Result<Book, ClientError>>, ClientError> {
        let request = self.http.request(&CatalogRoute::SellMany, &[]).json(sales);
        let made: SaleAnswers = self.http.send(request).await?;
        each_of(
            &self.http,
            sales.sales.len(),
            made.results,
            |result| match result {
                SaleResult::Sold(book) => Ok(book),
                SaleResult::Failed(refusal) => Err(refusal.into()),
            },
        )
    }

    /// The sales made after `after` (`GET /sales`, internal), at most
    /// `limit`, and the cursor to ask from next.
    pub async fn sales(&self, after: u64, limit: u64) -> Result<SalesResponse, ClientError> {
        self.sales_for(0, after, limit).await
    }

    /// [`CatalogClient::sales`], with the progress of order shard
    /// `shard`'s reconciler (`GET /sales?shard=`, internal).
    pub async fn sales_for(
        &self,
        shard: u32,
        after: u64,
        limit: u64,
    ) -> Result<SalesResponse, ClientError> {
        let (after, limit, shard) = (after.to_string(), limit.to_string(), shard.to_string());
        let mut query = vec![("after", after.as_str()), ("limit", limit.as_str())];
        if shard != "0" {
            query.push(("shard", shard.as_str()));
        }
        self.http
            .send(self.http.request(&CatalogRoute::Sales, &query))
            .await
    }

    /// Says that the order of every sale up to `upto` is recorded
    /// (`POST /sales/reconciled`, internal); answers the progress as it is
    /// after the call.
    pub async fn reconciled(&self, upto: u64) -> Result<u64, ClientError> {
        self.reconciled_for(0, 1, upto).await
    }

    /// [`CatalogClient::reconciled`] for the reconciler of order shard
    /// `shard` of `shards`.
    pub async fn reconciled_for(
        &self,
        shard: u32,
        shards: u32,
        upto: u64,
    ) -> Result<u64, ClientError> {
        let request = self
            .http
            .request(&CatalogRoute::Reconciled, &[])
            .json(&ReconciledRequest {
                upto,
                shard,
                shards,
            });
        let answer: ReconciledResponse = self.http.send(request).await?;
        Ok(answer.reconciled)
    }

    /// A grant of frontend `frontend`'s cache lease (`GET /lease`,
    /// internal).
    pub async fn lease(&self, frontend: &str) -> Result<LeaseGrant, ClientError> {
        let request = self
            .http
            .request(&CatalogRoute::Lease, &[("frontend", frontend)]);
        self.http.send(request).await
    }

    /// `GET /health`: liveness (answered while the node runs).
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.http.health().await
    }

    /// `GET /ready`: Ok once the node can serve; `Unavailable` with the
    /// node's reason until then.
    pub async fn ready(&self) -> Result<HealthResponse, ClientError> {
        self.http.ready().await
    }
}

/// A client of one order replica.
#[derive(Debug, Clone)]
pub struct OrderClient {
    http: Http,
}

impl OrderClient {
    /// A client of the order replica at `url`.
    pub fn new(url: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        Ok(OrderClient {
            http: Http::new(url, options)?,
        })
    }

    /// The same over an existing HTTP client (sharing its connection pool).
    pub fn from_http(http: Http) -> Self {
        OrderClient { http }
    }

    /// Buys one copy of `item` under `key` (`GET /buy/<item>`).
    pub async fn buy(&self, item: ItemId, key: &IdempotencyKey) -> Result<OrderId, ClientError> {
        let request = self
            .http
            .request(&OrderRoute::Buy(item), &[])
            .header(IDEMPOTENCY_HEADER, key.as_str());
        let response: BuyResponse = self.http.send(request).await?;
        Ok(response.order.id)
    }

    /// Makes many buys in one call (`POST /buys`, internal), each as
    /// [`OrderClient::buy`] makes one: the result of each, in order (the
    /// order, or the error that call would have met). An error for the
    /// whole call means nothing is known of any buy: each may be made
    /// again, as its key makes harmless.
    pub async fn buy_many(
        &self,
        buys: &BuysRequest,
    ) -> Result<Vec<Result<OrderId, ClientError>>, ClientError> {
        let request = self.http.request(&OrderRoute::BuyMany, &[]).json(buys);
        let made: BuyAnswers = self.http.send(request).await?;
        each_of(
            &self.http,
            buys.buys.len(),
            made.results,
            |result| match result {
                BuyResult::Bought(order) => Ok(order.id),
                BuyResult::Failed(refusal) => Err(refusal.into()),
            },
        )
    }

    /// Every order this replica holds, with its idempotency key
    /// (`GET /ledger`, internal: the client needs the cluster token).
    pub async fn ledger(&self) -> Result<Vec<Order>, ClientError> {
        let request = self.http.request(&OrderRoute::Ledger, &[]);
        let response: LedgerResponse = self.http.send(request).await?;
        Ok(response.order)
    }

    /// A page of orders, without their keys (`GET /orders?after=&limit=`,
    /// public): those with an id above `after`, at most `limit`.
    pub async fn orders(&self, after: OrderId, limit: u64) -> Result<OrderPage, ClientError> {
        let (after, limit) = (after.0.to_string(), limit.to_string());
        let request = self.http.request(
            &OrderRoute::Orders,
            &[("after", after.as_str()), ("limit", limit.as_str())],
        );
        self.http.send(request).await
    }

    /// `GET /health`: liveness (answered while the node runs).
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.http.health().await
    }

    /// `GET /ready`: Ok once the node can serve; `Unavailable` with the
    /// node's reason until then.
    pub async fn ready(&self) -> Result<HealthResponse, ClientError> {
        self.http.ready().await
    }
}

/// A client of a node's internal endpoints: replication calls, cache
/// invalidation and the membership of a service.
#[derive(Debug, Clone)]
pub struct InternalClient {
    http: Http,
}

impl InternalClient {
    /// A client of the node at `url`.
    pub fn new(url: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        Ok(InternalClient {
            http: Http::new(url, options)?,
        })
    }

    /// The same over an existing HTTP client (sharing its connection pool).
    pub fn from_http(http: Http) -> Self {
        InternalClient { http }
    }

    /// `GET /backup` (`CatalogRoute::Backup` or `OrderRoute::Backup`):
    /// the replica's state after a read index, written to `out` as it
    /// comes; answers the bytes written.
    pub async fn backup(
        &self,
        route: &impl Route,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        self.http.download(self.http.request(route, &[]), out).await
    }

    /// The node's base URL.
    pub fn url(&self) -> &url::Url {
        self.http.base()
    }

    /// `POST /replication/<rpc>` with a JSON body; the JSON answer.
    pub async fn replicate(&self, rpc: &str, body: Vec<u8>) -> Result<bytes::Bytes, ClientError> {
        // The same path on a catalog and an order replica.
        let route = CatalogRoute::Replication(rpc.to_owned());
        let request = self.http.request(&route, &[]).body(body);
        self.http.send_raw(request).await
    }

    /// `GET /members` on a catalog or order replica: the service's
    /// membership, as its leader knows it.
    pub async fn members(&self) -> Result<Members, ClientError> {
        self.member_call(MemberRoute::List, &[], None).await
    }

    /// `POST /members`: adds replica `name`, running at `url`, to the
    /// service (a learner at first; see [`Members`]).
    pub async fn add_member(&self, name: &str, url: &str) -> Result<Members, ClientError> {
        let member = NewMember {
            name: name.to_owned(),
            url: url.to_owned(),
        };
        self.member_call(MemberRoute::Add, &[], Some(&member)).await
    }

    /// `DELETE /members/<name>`: removes replica `name` from the service;
    /// refused (conflict) if fewer than a majority of the voters left
    /// would answer, unless `force`.
    pub async fn remove_member(&self, name: &str, force: bool) -> Result<Members, ClientError> {
        let query: &[(&str, &str)] = if force { &[("force", "true")] } else { &[] };
        self.member_call(MemberRoute::Remove(name.to_owned()), query, None)
            .await
    }

    async fn member_call(
        &self,
        route: MemberRoute,
        query: &[(&str, &str)],
        body: Option<&NewMember>,
    ) -> Result<Members, ClientError> {
        // The same paths on a catalog and an order replica.
        let request = self.http.request(&CatalogRoute::Members(route), query);
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        let answer: MembersResponse = self.http.send(request).await?;
        Ok(answer.members)
    }

    /// `POST /invalidate` on a frontend: drop the cached reads of a book.
    pub async fn invalidate(&self, invalidation: &Invalidation) -> Result<(), ClientError> {
        let request = self
            .http
            .request(&FrontendRoute::Invalidate, &[])
            .json(invalidation);
        self.http.send_raw(request).await.map(drop)
    }

    /// `POST /invalidate` on a frontend with a list: drop the cached reads
    /// of several books at once.
    pub async fn invalidate_all(&self, invalidations: &[Invalidation]) -> Result<(), ClientError> {
        let request = self
            .http
            .request(&FrontendRoute::Invalidate, &[])
            .json(&invalidations);
        self.http.send_raw(request).await.map(drop)
    }

    /// `GET /health`: liveness (answered while the node runs).
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.http.health().await
    }

    /// `GET /ready`: Ok once the node can serve; `Unavailable` with the
    /// node's reason until then.
    pub async fn ready(&self) -> Result<HealthResponse, ClientError> {
        self.http.ready().await
    }

    /// Asks `/ready` until the node answers 200, at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<HealthResponse, ClientError> {
        self.http.wait_ready(timeout).await
    }
}

/// A probe's reading of a `/ready` answer: a replica that cannot answer
/// 200 does not serve.
fn probed(ready: Result<HealthResponse, ClientError>) -> Probed {
    match ready {
        Ok(health) => Probed {
            serves: true,
            leader: health.leader,
        },
        Err(_) => Probed::default(),
    }
}

#[async_trait::async_trait]
impl Probe for CatalogClient {
    async fn probe(&self) -> Probed {
        probed(self.ready().await)
    }
}

#[async_trait::async_trait]
impl Probe for OrderClient {
    async fn probe(&self) -> Probed {
        probed(self.ready().await)
    }
}

/// The results of a call of many (sales, buys), one per item asked, each
/// turned into the item's own answer by `one`.
fn each_of<T, R>(
    http: &Http,
    asked: usize,
    results: Vec<T>,
    one: impl FnMut(T) -> Result<R, ClientError>,
) -> Result<Vec<Result<R, ClientError>>, ClientError> {
    if results.len() != asked {
        return Err(ClientError::Decode {
            url: http.base().to_string(),
            reason: format!("{asked} asked, {} results answered", results.len()),
        });
    }
    Ok(results.into_iter().map(one).collect())
}
