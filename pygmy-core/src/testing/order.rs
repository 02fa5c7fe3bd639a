//! The [`OrderStore`] contract: every check an order backend must pass,
//! run against the memory and SQLite backends in this crate's tests, and
//! against yours:
//!
//! ```
//! use std::sync::Arc;
//! use pygmy_core::order::memory::MemoryOrders;
//! use pygmy_core::testing::order;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! order::run(|| Arc::new(MemoryOrders::new())).await;
//! # }
//! ```

use std::sync::Arc;

use crate::journal::{Op, Source};
use crate::order::{OrderCommand, OrderOutcome, OrderStore};
use crate::types::{IdempotencyKey, ItemId, OrderId};

/// Runs every check, each on a new empty store from `make`; panics at the
/// first that fails. Run it on a multi-threaded runtime.
pub async fn run<F>(make: F)
where
    F: Fn() -> Arc<dyn OrderStore>,
{
    ids_follow_apply_order(make()).await;
    a_shard_numbers_its_orders_from_its_base(make()).await;
    a_key_makes_one_order(make()).await;
    concurrent_records_get_distinct_ids(make()).await;
    keys_with_orders_are_told_apart(make()).await;
}

fn key(raw: &str) -> IdempotencyKey {
    IdempotencyKey::parse(raw).expect("valid key")
}

/// The op recording the order of key `raw` for `item`.
pub fn record(raw: &str, item: i64) -> Op<OrderCommand> {
    let key = key(raw);
    Op {
        id: OrderCommand::op_id(&key),
        cmd: OrderCommand::Record {
            key,
            item: ItemId(item),
            created: "2026-11-24T00:00:00Z".to_owned(),
            base: 0,
        },
    }
}

/// The source of an op proposed at replica `order-a`.
pub fn local() -> Source {
    Source::Local {
        node: "order-a".to_owned(),
    }
}

/// Applies `op` and answers the id of the order it recorded.
pub async fn order_id(store: &Arc<dyn OrderStore>, op: Op<OrderCommand>) -> OrderId {
    let OrderOutcome::Recorded { order } = store.apply(local(), op).await.expect("apply").outcome;
    order.id
}

/// A check of the suite (see [`run`]).
pub async fn ids_follow_apply_order(store: Arc<dyn OrderStore>) {
    assert_eq!(order_id(&store, record("k1", 1)).await, OrderId(1));
    assert_eq!(order_id(&store, record("k2", 3)).await, OrderId(2));
    let orders = store.orders().await.expect("orders");
    assert_eq!(
        orders
            .iter()
            .map(|o| (o.id.0, o.item_id.0, o.key.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, 1, "k1"), (2, 3, "k2")]
    );
}

/// A check of the suite (see [`run`]): the replica of an order shard
/// numbers its orders from the shard's base up
/// ([`crate::shard::order_id_base`]).
pub async fn a_shard_numbers_its_orders_from_its_base(store: Arc<dyn OrderStore>) {
    let base = crate::shard::order_id_base(3);
    let in_shard = |raw: &str| {
        let mut op = record(raw, 1);
        let OrderCommand::Record { base: b, .. } = &mut op.cmd;
        *b = base;
        op
    };
    assert_eq!(order_id(&store, in_shard("s1")).await, OrderId(base + 1));
    assert_eq!(order_id(&store, in_shard("s2")).await, OrderId(base + 2));
    // A repeat answers the order recorded first.
    assert_eq!(order_id(&store, in_shard("s1")).await, OrderId(base + 1));
}

/// A check of the suite (see [`run`]).
pub async fn a_key_makes_one_order(store: Arc<dyn OrderStore>) {
    let first = order_id(&store, record("same", 1)).await;
    assert_eq!(order_id(&store, record("same", 1)).await, first);
    // Even under another op id (a bug elsewhere must not make two orders).
    let mut other = record("same", 1);
    other.id = crate::journal::OpId("different".to_owned());
    assert_eq!(order_id(&store, other).await, first);
    assert_eq!(store.orders().await.expect("orders").len(), 1);
    let found = store.order_by_key(&key("same")).await.expect("read");
    assert_eq!(found.map(|o| o.id), Some(first));
    assert_eq!(store.order_by_key(&key("none")).await.expect("read"), None);
}

/// A check of the suite (see [`run`]).
pub async fn concurrent_records_get_distinct_ids(store: Arc<dyn OrderStore>) {
    let mut tasks = Vec::new();
    for n in 0..40 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            order_id(&store, record(&format!("c{n}"), 1)).await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task").0);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
}

/// A check of the suite (see [`run`]).
pub async fn keys_with_orders_are_told_apart(store: Arc<dyn OrderStore>) {
    order_id(&store, record("had-1", 1)).await;
    order_id(&store, record("had-2", 2)).await;
    let asked = [key("had-2"), key("never"), key("had-1"), key("had-2")];
    let found = store.keys_with_orders(&asked).await.expect("read");
    let mut found: Vec<&str> = found.iter().map(IdempotencyKey::as_str).collect();
    found.sort_unstable();
    assert_eq!(found, vec!["had-1", "had-2"]);
    assert!(store.keys_with_orders(&[]).await.expect("read").is_empty());
}
