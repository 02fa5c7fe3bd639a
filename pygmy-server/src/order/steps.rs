//! The two steps of a buy, each idempotent under the buy's key: the
//! catalog sells one copy (its conditional sale is the single point of
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
use pygmy_core::types::{Book, IdempotencyKey, ItemId, Order};

use crate::gather::Gatherer;
use crate::http::ApiError;
use crate::replica::Replica;

/// What an order replica sells and records through. Cheap to clone (it
/// is all shared handles).
#[derive(Clone)]
pub struct BuySteps {
    /// This replica of the order service.
    pub replica: Replica<OrderMachine>,
    /// The catalog replicas, this replica's preferred one first.
    pub catalogs: Arc<ReplicaSet<CatalogClient>>,
    /// The buys' sales, those that come together asked in one call.
    sales: Arc<Gatherer<SaleRequest, Book>>,
}

impl BuySteps {
    /// Steps through `replica`, selling on `catalogs`; and the task that
    /// gathers the sales asked together (not started).
    pub fn new(
        replica: Replica<OrderMachine>,
        catalogs: Arc<ReplicaSet<CatalogClient>>,
    ) -> (Self, impl Future<Output = ()> + Send) {
        let (sales, gathering) = gather_sales(Arc::clone(&catalogs));
        let steps = BuySteps {
            replica,
            catalogs,
            sales: Arc::new(sales),
        };
        (steps, gathering)
    }

    /// Has a catalog replica sell one copy under `key`, with the other
    /// sales that came with it, or alone if it could not be made with them.
    pub async fn sell(&self, item: ItemId, key: &IdempotencyKey) -> Result<(), ApiError> {
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

    /// Records the order of the sale under `key` (op `order:<key>`: a
    /// repeat answers the order recorded first).
    pub async fn record(&self, item: ItemId, key: &IdempotencyKey) -> Result<Order, ApiError> {
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
