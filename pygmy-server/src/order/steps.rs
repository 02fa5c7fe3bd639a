//! The two steps of a buy, each idempotent under the buy's key: the
//! item's catalog shard sells one copy (its conditional sale is the single point of
//! truth), then the order is recorded through the replicator. A buy takes
//! them in turn; the reconciler takes them again for a sale that has no
//! order. A retry with the same key after any failure completes the same
//! order; it never sells a second copy.

use std::future::Future;

use std::sync::Arc;
use std::time::SystemTime;

use pygmy_client::CatalogClient;
use pygmy_core::api::internal::{SaleRequest, SalesRequest};
use pygmy_core::balance::ReplicaSet;
use pygmy_core::journal::Op;
use pygmy_core::order::{OrderCommand, OrderMachine, OrderOutcome};
use pygmy_core::shard::ItemRanges;
use pygmy_core::types::{Book, IdempotencyKey, ItemId, Order};

use crate::background::Background;
use crate::gather::Gatherer;
use crate::http::ApiError;
use crate::replica::Replica;

/// One catalog shard as an order replica sells on it: its replicas (this
/// replica's preferred one first), and its sales gathered into calls.
pub struct SalesShard {
    /// The shard's replicas.
    pub replicas: Arc<ReplicaSet<CatalogClient>>,
    /// The buys' sales on this shard, those that come together asked in
    /// one call.
    sales: Gatherer<SaleRequest, Book>,
}

/// The catalog as an order replica sells on it: every shard, and which
/// one holds an item.
pub struct SalesRoute {
    shards: Vec<SalesShard>,
    ranges: ItemRanges,
}

impl SalesRoute {
    /// Sales on the replicas of each catalog shard (in the order of
    /// `ranges`), the item's shard found by `ranges`; and, for each shard,
    /// the task that gathers its sales and a health probe of its replicas
    /// (not started).
    pub fn new(catalogs: Vec<ReplicaSet<CatalogClient>>, ranges: ItemRanges) -> (Self, Background) {
        let mut background = Background::default();
        let shards = catalogs
            .into_iter()
            .map(|replicas| {
                let replicas = Arc::new(replicas);
                let (sales, gathering) = gather_sales(Arc::clone(&replicas));
                background.add(gathering);
                background.add(Arc::clone(&replicas).probe_forever());
                SalesShard { replicas, sales }
            })
            .collect();
        (SalesRoute { shards, ranges }, background)
    }

    /// Every catalog shard, in order.
    pub fn shards(&self) -> &[SalesShard] {
        &self.shards
    }

    /// The shard that holds `item`.
    fn shard_of(&self, item: ItemId) -> Result<&SalesShard, ApiError> {
        self.shards
            .get(self.ranges.shard_of(item))
            .ok_or_else(|| ApiError::internal(format!("no catalog shard holds item {item}")))
    }
}

/// What an order replica sells and records through. Cheap to clone (it
/// is all shared handles).
#[derive(Clone)]
pub struct BuySteps {
    /// This replica of the order service.
    pub replica: Replica<OrderMachine>,
    /// The catalog's shards.
    pub catalog: Arc<SalesRoute>,
    /// The id below its order shard's first order.
    base: i64,
}

impl BuySteps {
    /// Steps through `replica` of the order shard whose ids start after
    /// `base`, selling on `catalog`.
    pub fn new(replica: Replica<OrderMachine>, catalog: Arc<SalesRoute>, base: i64) -> Self {
        BuySteps {
            replica,
            catalog,
            base,
        }
    }

    /// Has a replica of the item's catalog shard sell one copy under
    /// `key`, with the other sales that came with it, or alone if it could
    /// not be made with them.
    pub async fn sell(&self, item: ItemId, key: &IdempotencyKey) -> Result<(), ApiError> {
        let shard = self.catalog.shard_of(item)?;
        let sale = SaleRequest {
            item,
            key: key.clone(),
        };
        let alone = || sell_alone(shard, item, key);
        shard.sales.ask(sale, alone).await.map(drop)
    }

    /// Records the order of the sale under `key` (op `order:<key>`: a
    /// repeat answers the order recorded first).
    pub async fn record(&self, item: ItemId, key: &IdempotencyKey) -> Result<Order, ApiError> {
        let op = Op {
            id: OrderCommand::op_id(key),
            cmd: OrderCommand::Record {
                key: key.clone(),
                item,
                created: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                base: self.base,
            },
        };
        let OrderOutcome::Recorded { order } = self.replica.propose(op).await?;
        Ok(order)
    }
}

/// Has a replica of catalog shard `shard` sell one copy under `key` in a
/// call of its own: the leader (as the last probe found it), then the
/// preferred one, then the others if it cannot serve (safe: the sale is
/// keyed).
async fn sell_alone(
    shard: &SalesShard,
    item: ItemId,
    key: &IdempotencyKey,
) -> Result<Book, ApiError> {
    Ok(shard
        .replicas
        .call_leader_first(|catalog| catalog.sell(item, key))
        .await?)
}

/// The sales of an order replica, those that come together asked of the
/// catalog in one call (`POST /sales`): to the leader first, then the
/// other replicas, as one sale's call goes; and the task that gathers
/// them.
fn gather_sales(
    catalogs: Arc<ReplicaSet<CatalogClient>>,
) -> (Gatherer<SaleRequest, Book>, impl Future<Output = ()> + Send) {
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
