//! The orders in memory.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::{OrderCommand, OrderMachine, OrderOutcome, OrderStore};
use crate::error::StoreError;
use crate::journal::memory::{MemoryJournal, MemoryState};
use crate::types::{IdempotencyKey, Order, OrderId};

/// The orders, by id, with an index by key.
#[derive(Debug, Default)]
pub struct OrderState {
    orders: BTreeMap<OrderId, Order>,
    by_key: HashMap<IdempotencyKey, OrderId>,
}

impl MemoryState for OrderState {
    type Machine = OrderMachine;

    fn execute(&mut self, cmd: &OrderCommand) -> OrderOutcome {
        let OrderCommand::Record {
            key,
            item,
            created,
            base,
        } = cmd;
        if let Some(order) = self.by_key.get(key).and_then(|id| self.orders.get(id)) {
            return OrderOutcome::Recorded {
                order: order.clone(),
            };
        }
        let id = OrderId(self.orders.keys().next_back().map_or(*base, |id| id.0) + 1);
        let order = Order {
            created: created.clone(),
            id,
            item_id: *item,
            key: key.clone(),
        };
        self.orders.insert(id, order.clone());
        self.by_key.insert(key.clone(), id);
        OrderOutcome::Recorded { order }
    }
}

/// The in-memory order store.
pub type MemoryOrders = MemoryJournal<OrderState>;

#[async_trait]
impl OrderStore for MemoryOrders {
    async fn order_by_key(&self, key: &IdempotencyKey) -> Result<Option<Order>, StoreError> {
        Ok(self.read(|state| {
            state
                .by_key
                .get(key)
                .and_then(|id| state.orders.get(id))
                .cloned()
        }))
    }

    async fn orders(&self) -> Result<Vec<Order>, StoreError> {
        Ok(self.read(|state| state.orders.values().cloned().collect()))
    }
}
