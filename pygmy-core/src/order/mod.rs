//! The order service: one order per successful buy.
//!
//! An order is recorded under the buy's idempotency key: recording the same
//! key again returns the order already there, so a retried buy never makes
//! a second order. Ids are assigned in apply order (1, 2, ..., or from the
//! base of the order shard up), which is the same on every replica that
//! applies the same ops in the same order.

pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::collections::HashSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::journal::{Journal, Machine, OpId};
use crate::types::{IdempotencyKey, ItemId, Order, OrderId};

/// A change to the orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderCommand {
    /// Record the order of a buy whose sale the catalog made.
    Record {
        /// The buy's idempotency key.
        key: IdempotencyKey,
        /// The book sold.
        item: ItemId,
        /// When the order was taken (RFC 3339, chosen by the proposer so
        /// that every replica records the same time).
        created: String,
        /// The id below the first order of the order shard that records
        /// it ([`crate::shard::order_id_base`]): a new order takes the
        /// shard's highest id, or this, plus one. 0, and not written, for
        /// the first shard (the only one of a store without shards).
        #[serde(default, skip_serializing_if = "is_zero")]
        base: i64,
    },
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl OrderCommand {
    /// The op id of recording the order of `key`: one op per key.
    pub fn op_id(key: &IdempotencyKey) -> OpId {
        OpId(format!("order:{key}"))
    }
}

/// What an order command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderOutcome {
    /// The order of the key: new, or the one recorded before.
    Recorded {
        /// The order.
        order: Order,
    },
}

/// The order service as a replicated state machine.
#[derive(Debug, Clone, Copy)]
pub struct OrderMachine;

impl Machine for OrderMachine {
    type Command = OrderCommand;
    type Outcome = OrderOutcome;
}

/// An order replica's storage: the journal of orders, and the reads.
///
/// ```
/// use pygmy_core::journal::{Journal, Op, Source};
/// use pygmy_core::order::memory::MemoryOrders;
/// use pygmy_core::order::{OrderCommand, OrderStore};
/// use pygmy_core::types::{IdempotencyKey, ItemId, OrderId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), pygmy_core::StoreError> {
/// let store = MemoryOrders::new();
/// let key = IdempotencyKey::parse("buy-1").unwrap();
/// let record = Op {
///     id: OrderCommand::op_id(&key),
///     cmd: OrderCommand::Record { key: key.clone(), item: ItemId(7), created: "2026-11-25T00:00:00Z".into(), base: 0 },
/// };
/// store.apply(Source::Local { node: "order-a".into() }, record).await?;
/// let order = store.order_by_key(&key).await?.expect("recorded");
/// assert_eq!(order.id, OrderId(1));
/// assert_eq!(store.orders().await?.len(), 1);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait OrderStore: Journal<OrderMachine> {
    /// The order recorded under `key`.
    async fn order_by_key(&self, key: &IdempotencyKey) -> Result<Option<Order>, StoreError>;

    /// Which of `keys` have an order. The default looks each up: a store
    /// that can look many up at once should.
    async fn keys_with_orders(
        &self,
        keys: &[IdempotencyKey],
    ) -> Result<HashSet<IdempotencyKey>, StoreError> {
        let mut found = HashSet::new();
        for key in keys {
            if self.order_by_key(key).await?.is_some() {
                found.insert(key.clone());
            }
        }
        Ok(found)
    }

    /// Every order, by ascending id.
    async fn orders(&self) -> Result<Vec<Order>, StoreError>;

    /// The orders with an id above `after`, by ascending id, at most
    /// `limit`. The default reads every order: a store that can seek
    /// should.
    async fn orders_after(&self, after: OrderId, limit: usize) -> Result<Vec<Order>, StoreError> {
        let mut orders = self.orders().await?;
        orders.retain(|o| o.id > after);
        orders.truncate(limit);
        Ok(orders)
    }
}
