//! The frontend node: `search`, `lookup` and `buy` for users, with a cache
//! of read responses and a balancer over the replicas of each shard of
//! each backend.
//!
//! Reads are served from the cache, or from a replica of the item's
//! catalog shard (retried on the next replica if one cannot answer) and
//! then cached, unless the key was invalidated meanwhile; a search asks
//! every catalog shard and merges their books. A lookup is served from
//! the cache only while the frontend holds a lease from every replica of
//! its item's shard, and a search while it holds every shard's
//! ([`pygmy_core::cache::lease`]), so that an invalidation lost on the way
//! cannot leave an old value served: the replicas of its topology, or of
//! the newest membership of the shard a grant told of (a replica added at
//! run time is dialled at its URL there). A buy goes to a replica of its
//! key's order shard under an idempotency key (the client's, or one
//! minted here), so that it can be retried on another replica without
//! buying twice. The cache is never used to decide a buy.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::join_all;
use http::StatusCode;
use pygmy_client::{CatalogClient, ClientError, OrderClient};
use pygmy_core::api::internal::{
    Acknowledged, BuyRequest, BuysRequest, Invalidations, LookupsRequest,
};
use pygmy_core::api::public::{BuyResponse, ItemsResponse};
use pygmy_core::api::routes::FrontendRoute;
use pygmy_core::balance::ReplicaSet;
use pygmy_core::cache::lease::{Grant, Leases, RENEW_EVERY, RENEW_TIMEOUT};
use pygmy_core::cache::{lookup_key, search_key, Cache};
use pygmy_core::replication::KnownMembers;
use pygmy_core::shard::{ItemRanges, KeyShards};
use pygmy_core::types::{Book, IdempotencyKey, ItemId, OrderId};

use crate::background::Background;
use crate::gather::Gatherer;
use crate::http::{
    json, json_bytes, to_bytes, ApiError, ApiResult, Handler, Metrics, NodeInfo, Readiness, Request,
};

/// The longest topic a search takes: topics are short, and each one
/// searched takes a cache slot.
const MAX_TOPIC_BYTES: usize = 256;

/// Counts of what the frontend served, for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    lookups: AtomicU64,
    searches: AtomicU64,
    buys: AtomicU64,
}

/// Locks `mutex`, taking a poisoned one as it is (each holder leaves the
/// state whole between its steps).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The frontend's cache leases, and until when they let it use its cache.
struct CacheLease {
    leases: Mutex<Leases>,
    /// The clock's origin for `until`.
    base: Instant,
    /// Nanoseconds after `base` until which the cache may be used; 0 for
    /// none. Read on every request without a lock.
    until: AtomicU64,
}

impl CacheLease {
    fn new(sources: Vec<String>) -> Self {
        CacheLease {
            leases: Mutex::new(Leases::new(sources)),
            base: Instant::now(),
            until: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        lock(&self.leases)
    }

    /// Whether the cache may be used now.
    fn holds(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        now < self.until.load(Ordering::Acquire)
    }

    /// Publishes what `leases` now allow (the caller holds their lock).
    fn publish(&self, leases: &Leases) {
        let until = leases.valid_until().map_or(0, |until| {
            u64::try_from(until.saturating_duration_since(self.base).as_nanos()).unwrap_or(0)
        });
        self.until.store(until, Ordering::Release);
    }
}

/// Makes a client of the catalog replica at a URL (a member the
/// frontend's topology does not name, learned from a lease grant).
pub type DialCatalog = Box<dyn Fn(&str) -> Result<CatalogClient, ClientError> + Send + Sync>;

/// One catalog shard as the frontend sees it: its replicas, the cache
/// lease it holds from them, and its lookups gathered into calls.
struct CatalogShard {
    replicas: Arc<ReplicaSet<CatalogClient>>,
    lease: CacheLease,
    /// Clients of the shard's members learned from lease grants that the
    /// topology does not name (asked for leases; reads stay with the
    /// topology's replicas).
    learned: Mutex<HashMap<String, CatalogClient>>,
    /// The lookups that miss the cache, those that come together read
    /// from a replica in one call.
    lookups: Gatherer<ItemId, Book>,
}

impl CatalogShard {
    /// The client of the shard's replica `name`: the topology's, or a
    /// learned member's.
    fn client(&self, name: &str) -> Option<CatalogClient> {
        if let Some((_, client)) = self.replicas.clients().find(|(n, _)| *n == name) {
            return Some(client.clone());
        }
        lock(&self.learned).get(name).cloned()
    }
}

/// One order shard as the frontend sees it: its replicas, and its buys
/// gathered into calls.
struct OrderShard {
    replicas: Arc<ReplicaSet<OrderClient>>,
    buys: Gatherer<BuyRequest, OrderId>,
}

/// The backends of a frontend, shard by shard.
pub struct Backends {
    /// The replicas of each catalog shard, in the order of `ranges`.
    pub catalogs: Vec<ReplicaSet<CatalogClient>>,
    /// Which catalog shard holds an item.
    pub ranges: ItemRanges,
    /// The replicas of each order shard, in the order of `keys`.
    pub orders: Vec<ReplicaSet<OrderClient>>,
    /// Which order shard a buy's key belongs to.
    pub keys: KeyShards,
}

/// A frontend.
pub struct FrontendNode {
    node: NodeInfo,
    cache: Arc<dyn Cache>,
    catalogs: Vec<CatalogShard>,
    ranges: ItemRanges,
    orders: Vec<OrderShard>,
    keys: KeyShards,
    dial: DialCatalog,
    counters: Counters,
}

impl FrontendNode {
    /// A frontend over these backends, and its background work (not
    /// started): for each shard, the gathering of its lookups or buys and
    /// a health probe of its replicas; for each catalog shard, the renewal
    /// of its cache leases.
    pub fn new(
        node: NodeInfo,
        cache: Arc<dyn Cache>,
        backends: Backends,
        dial: DialCatalog,
    ) -> (Arc<Self>, Background) {
        let mut background = Background::default();
        let catalogs = backends
            .catalogs
            .into_iter()
            .map(|replicas| {
                let sources = replicas
                    .clients()
                    .map(|(name, _)| name.to_owned())
                    .collect();
                let replicas = Arc::new(replicas);
                let (lookups, gathering) = gather_lookups(Arc::clone(&replicas));
                background.add(gathering);
                background.add(Arc::clone(&replicas).probe_forever());
                CatalogShard {
                    replicas,
                    lease: CacheLease::new(sources),
                    learned: Mutex::new(HashMap::new()),
                    lookups,
                }
            })
            .collect::<Vec<_>>();
        let orders = backends
            .orders
            .into_iter()
            .map(|replicas| {
                let replicas = Arc::new(replicas);
                let (buys, gathering) = gather_buys(Arc::clone(&replicas));
                background.add(gathering);
                background.add(Arc::clone(&replicas).probe_forever());
                OrderShard { replicas, buys }
            })
            .collect();
        let shards = catalogs.len();
        let frontend = Arc::new(FrontendNode {
            node,
            cache,
            catalogs,
            ranges: backends.ranges,
            orders,
            keys: backends.keys,
            dial,
            counters: Counters::default(),
        });
        for shard in 0..shards {
            background.add(Arc::clone(&frontend).renew_leases_forever(shard));
        }
        (frontend, background)
    }

    /// The catalog shard that holds `item`.
    fn catalog_of(&self, item: ItemId) -> Result<&CatalogShard, ApiError> {
        self.catalogs
            .get(self.ranges.shard_of(item))
            .ok_or_else(|| ApiError::internal(format!("no catalog shard holds item {item}")))
    }

    /// The order shard `key` belongs to.
    fn order_shard_of(&self, key: &IdempotencyKey) -> Result<&OrderShard, ApiError> {
        self.orders
            .get(self.keys.shard_of(key))
            .ok_or_else(|| ApiError::internal(format!("no order shard takes key {key}")))
    }

    /// Renews the cache lease from every replica of catalog shard `shard`
    /// (those of the topology, or of the newest membership a grant told
    /// of), at once and then every [`RENEW_EVERY`], until the task is
    /// dropped (the shard's reads skip the cache until its first grants).
    async fn renew_leases_forever(self: Arc<Self>, shard: usize) {
        let Some(catalog) = self.catalogs.get(shard) else {
            return;
        };
        loop {
            let sources: Vec<(String, CatalogClient)> = {
                let leases = catalog.lease.lock();
                leases
                    .sources()
                    .filter_map(|name| Some((name.to_owned(), catalog.client(name)?)))
                    .collect()
            };
            let renewals = sources
                .iter()
                .map(|(source, client)| self.renew_lease(catalog, client, source));
            join_all(renewals).await;
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// Takes the membership of catalog shard `catalog` a grant told of: if
    /// it is the newest, leases are needed from its members from now on,
    /// and a member the topology does not name is dialled at its URL (one
    /// without a URL cannot be asked: the shard's reads skip the cache
    /// while it is a member).
    fn learn(&self, catalog: &CatalogShard, leases: &mut Leases, members: &KnownMembers) {
        let names = members.replicas.iter().map(|m| m.name.clone());
        if !leases.learn(members.index, names) {
            return;
        }
        let mut learned = lock(&catalog.learned);
        learned.retain(|name, _| members.replicas.iter().any(|m| m.name == *name));
        for member in &members.replicas {
            let known = catalog.replicas.clients().any(|(n, _)| n == member.name)
                || learned.contains_key(&member.name);
            if known {
                continue;
            }
            let dialled = match &member.url {
                Some(url) => (self.dial)(url).map_err(|e| e.to_string()),
                None => Err("the membership gives no URL".to_owned()),
            };
            match dialled {
                Ok(client) => {
                    tracing::info!(member = %member.name, "a catalog member learned; its lease is needed");
                    learned.insert(member.name.clone(), client);
                }
                Err(err) => tracing::warn!(member = %member.name, %err,
                    "cannot reach a catalog member: its shard's reads skip the cache while it is one"),
            }
        }
    }

    /// Asks replica `source` of catalog shard `catalog` for a grant of
    /// this frontend's cache lease, and takes it (and the membership it
    /// tells of).
    async fn renew_lease(&self, catalog: &CatalogShard, client: &CatalogClient, source: &str) {
        let sent = Instant::now();
        let grant = match tokio::time::timeout(RENEW_TIMEOUT, client.lease(&self.node.name)).await {
            Ok(Ok(grant)) => grant,
            Ok(Err(err)) => {
                tracing::debug!(%source, %err, "no cache lease granted");
                return;
            }
            Err(_) => {
                tracing::debug!(%source, "no cache lease granted in time");
                return;
            }
        };
        let mut leases = catalog.lease.lock();
        if let Some(members) = &grant.members {
            self.learn(catalog, &mut leases, members);
        }
        match leases.granted(
            source,
            &grant.incarnation,
            grant.issued,
            sent,
            Instant::now(),
        ) {
            Grant::Renewed => {}
            Grant::ClearThenRenewed => {
                // Before the lease is published: nothing old is served.
                self.cache.clear();
            }
            Grant::Waiting => {}
        }
        catalog.lease.publish(&leases);
    }

    /// Answers from the cache while `leased` (the leases of every shard
    /// the answer reads hold), or fills it from `load`.
    async fn cached<Fut>(&self, leased: bool, key: String, load: Fut) -> ApiResult
    where
        Fut: Future<Output = Result<Bytes, ApiError>>,
    {
        if !leased {
            return Ok(json_bytes(StatusCode::OK, load.await?));
        }
        if let Some(body) = self.cache.get(&key) {
            return Ok(json_bytes(StatusCode::OK, body));
        }
        // Taken before the backend read: an invalidation (or a clear) that
        // lands while the read is under way makes the fill below a no-op.
        let generation = self.cache.generation();
        let body = load.await?;
        self.cache.fill(&key, body.clone(), generation);
        Ok(json_bytes(StatusCode::OK, body))
    }

    async fn lookup(&self, req: &Request) -> ApiResult {
        self.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let id = req.item_id("id")?;
        let shard = self.catalog_of(id)?;
        self.cached(shard.lease.holds(), lookup_key(id), async {
            let alone = || async { Ok(shard.replicas.call(|c| c.item(id)).await?) };
            let book = shard.lookups.ask(id, alone).await?;
            to_bytes(&ItemsResponse::new(vec![book]))
        })
        .await
    }

    async fn search(&self, req: &Request) -> ApiResult {
        self.counters.searches.fetch_add(1, Ordering::Relaxed);
        let topic = req.required("topic")?;
        if topic.len() > MAX_TOPIC_BYTES {
            return Err(ApiError::bad_request(format!(
                "a topic is at most {MAX_TOPIC_BYTES} bytes"
            )));
        }
        let leased = self.catalogs.iter().all(|shard| shard.lease.holds());
        self.cached(leased, search_key(topic), async {
            let asked = self
                .catalogs
                .iter()
                .map(|shard| shard.replicas.call(|c| c.items(Some(topic))));
            let mut books = Vec::new();
            // Every shard's books, or the first failure: never a part.
            for answer in join_all(asked).await {
                books.extend(answer?);
            }
            if self.catalogs.len() > 1 {
                books.sort_by_key(|book| book.id);
            }
            to_bytes(&ItemsResponse::new(books))
        })
        .await
    }

    async fn buy(&self, req: &Request) -> ApiResult {
        self.counters.buys.fetch_add(1, Ordering::Relaxed);
        let id = req.item_id("id")?;
        let key = req.idempotency_key()?.unwrap_or_else(IdempotencyKey::mint);
        let buy = BuyRequest {
            item: id,
            key: key.clone(),
        };
        let shard = self.order_shard_of(&key)?;
        let alone = || async {
            Ok(shard
                .replicas
                .call_leader_first(|o| o.buy(id, &key))
                .await?)
        };
        let order = shard.buys.ask(buy, alone).await?;
        // The catalog pushed the invalidation of the book and its topic
        // before the sale was answered; dropping the lookup here too costs
        // nothing and covers a lost push for lookups (not for searches: the
        // frontend does not know the topic; the TTL bounds those).
        self.cache.invalidate(&lookup_key(id));
        Ok(json(StatusCode::OK, &BuyResponse::new(id, order)))
    }

    /// `POST /invalidate` (internal): the catalog says a book changed, or
    /// several did (a list).
    fn invalidate(&self, req: &Request) -> ApiResult {
        let invalidations: Invalidations = req.json()?;
        for invalidation in invalidations.into_vec() {
            self.cache.invalidate(&lookup_key(invalidation.item));
            self.cache.invalidate(&search_key(&invalidation.topic));
            if let Some(stamp) = &invalidation.stamp {
                // Only the shard of the source knows it.
                for shard in &self.catalogs {
                    shard
                        .lease
                        .lock()
                        .applied(&stamp.source, &stamp.incarnation, stamp.seq);
                }
            }
        }
        Ok(json(StatusCode::OK, &Acknowledged::default()))
    }
}

#[async_trait]
impl Handler for FrontendNode {
    type Route = FrontendRoute;

    async fn handle(&self, route: FrontendRoute, req: Request) -> ApiResult {
        match route {
            FrontendRoute::Lookup => self.lookup(&req).await,
            FrontendRoute::Search => self.search(&req).await,
            FrontendRoute::Buy => self.buy(&req).await,
            FrontendRoute::Invalidate => self.invalidate(&req),
        }
    }

    fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Ready once the last probe of each shard of each backend found a
    /// replica ready: then a lookup, a search and a buy each have a
    /// replica to go to.
    fn readiness(&self) -> Readiness {
        // Each service with a shard whose replicas are all unready: the
        // service's name (of one shard), or its shards' numbers.
        let unready = |service: &str, ready: Vec<bool>| {
            let shards: Vec<String> = ready
                .iter()
                .enumerate()
                .filter(|(_, ready)| !**ready)
                .map(|(shard, _)| shard.to_string())
                .collect();
            match (shards.is_empty(), ready.len()) {
                (true, _) => None,
                (false, 1) => Some(service.to_owned()),
                (false, _) => Some(format!("{service} (shard {})", shards.join(", "))),
            }
        };
        let unreached: Vec<String> = [
            unready(
                "catalog",
                self.catalogs
                    .iter()
                    .map(|s| s.replicas.any_ready())
                    .collect(),
            ),
            unready(
                "order",
                self.orders.iter().map(|s| s.replicas.any_ready()).collect(),
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        if unreached.is_empty() {
            Readiness::Ready
        } else {
            Readiness::NotReady {
                state: "no_backend",
                reason: format!("no {} replica is ready", unreached.join(" nor ")),
            }
        }
    }

    async fn metrics(&self, out: &mut Metrics) {
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        out.counter(
            "pygmy_frontend_lookups_total",
            "Lookups asked.",
            load(&c.lookups),
        );
        out.counter(
            "pygmy_frontend_searches_total",
            "Searches asked.",
            load(&c.searches),
        );
        out.counter("pygmy_frontend_buys_total", "Buys asked.", load(&c.buys));
        out.counter(
            "pygmy_frontend_failovers_total",
            "Backend calls retried on another replica.",
            self.catalogs
                .iter()
                .map(|s| s.replicas.failovers())
                .chain(self.orders.iter().map(|s| s.replicas.failovers()))
                .sum(),
        );
        out.gauge(
            "pygmy_cache_leased",
            "1 while the frontend holds a cache lease from every catalog replica (member) of every shard.",
            u64::from(self.catalogs.iter().all(|s| s.lease.holds())),
        );
        let stats = self.cache.stats();
        out.counter(
            "pygmy_cache_hits_total",
            "Reads answered from the cache.",
            stats.hits,
        );
        out.counter(
            "pygmy_cache_misses_total",
            "Reads not in the cache.",
            stats.misses,
        );
        out.counter(
            "pygmy_cache_evictions_total",
            "Values evicted or expired.",
            stats.evictions,
        );
        out.counter(
            "pygmy_cache_stale_fills_total",
            "Fills dropped because the key was invalidated meanwhile.",
            stats.stale_fills,
        );
    }
}

/// A frontend's lookups that miss the cache, those that come together read
/// from a catalog replica in one call (`POST /lookups`), the replicas taken
/// in turn as one lookup's call takes them; and the task that gathers them.
fn gather_lookups(
    catalogs: Arc<ReplicaSet<CatalogClient>>,
) -> (Gatherer<ItemId, Book>, impl Future<Output = ()> + Send) {
    Gatherer::new(LookupsRequest::MOST, move |items| {
        let catalogs = Arc::clone(&catalogs);
        async move {
            let request = LookupsRequest { items };
            catalogs.call(|catalog| catalog.item_many(&request)).await
        }
    })
}

/// A frontend's buys, those that come together asked of an order replica
/// in one call (`POST /buys`): the leader first, then the others, as one
/// buy's call goes; and the task that gathers them.
fn gather_buys(
    orders: Arc<ReplicaSet<OrderClient>>,
) -> (
    Gatherer<BuyRequest, OrderId>,
    impl Future<Output = ()> + Send,
) {
    Gatherer::new(BuysRequest::MOST, move |buys| {
        let orders = Arc::clone(&orders);
        async move {
            let request = BuysRequest { buys };
            orders
                .call_leader_first(|order| order.buy_many(&request))
                .await
        }
    })
}
