//! The order store contract, run against every backend.

use std::sync::Arc;

use pygmy_core::journal::{Op, Source};
use pygmy_core::order::memory::MemoryOrders;
use pygmy_core::order::sqlite::SqliteOrders;
use pygmy_core::order::{OrderCommand, OrderOutcome, OrderStore};
use pygmy_core::types::{IdempotencyKey, ItemId, OrderId};

fn key(raw: &str) -> IdempotencyKey {
    IdempotencyKey::parse(raw).expect("valid key")
}

fn record(raw: &str, item: i64) -> Op<OrderCommand> {
    let key = key(raw);
    Op {
        id: OrderCommand::op_id(&key),
        cmd: OrderCommand::Record {
            key,
            item: ItemId(item),
            created: "2026-11-24T00:00:00Z".to_owned(),
        },
    }
}

fn local() -> Source {
    Source::Local {
        node: "order-a".to_owned(),
    }
}

async fn order_id(store: &Arc<dyn OrderStore>, op: Op<OrderCommand>) -> OrderId {
    let OrderOutcome::Recorded { order } = store.apply(local(), op).await.expect("apply").outcome;
    order.id
}

async fn ids_follow_apply_order(store: Arc<dyn OrderStore>) {
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

async fn a_key_makes_one_order(store: Arc<dyn OrderStore>) {
    let first = order_id(&store, record("same", 1)).await;
    assert_eq!(order_id(&store, record("same", 1)).await, first);
    // Even under another op id (a bug elsewhere must not make two orders).
    let mut other = record("same", 1);
    other.id = pygmy_core::journal::OpId("different".to_owned());
    assert_eq!(order_id(&store, other).await, first);
    assert_eq!(store.orders().await.expect("orders").len(), 1);
    let found = store.order_by_key(&key("same")).await.expect("read");
    assert_eq!(found.map(|o| o.id), Some(first));
    assert_eq!(store.order_by_key(&key("none")).await.expect("read"), None);
}

async fn concurrent_records_get_distinct_ids(store: Arc<dyn OrderStore>) {
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

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            fn store() -> (Arc<dyn OrderStore>, Option<tempfile::TempDir>) {
                $make
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ids_follow_apply_order() {
                let (store, _dir) = store();
                super::ids_follow_apply_order(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_key_makes_one_order() {
                let (store, _dir) = store();
                super::a_key_makes_one_order(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_records_get_distinct_ids() {
                let (store, _dir) = store();
                super::concurrent_records_get_distinct_ids(store).await;
            }
        }
    };
}

suite!(memory, (Arc::new(MemoryOrders::new()), None));
suite!(sqlite, {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteOrders::open(dir.path().join("orders.db")).expect("open");
    (Arc::new(store), Some(dir))
});

#[tokio::test]
async fn sqlite_orders_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orders.db");
    {
        let store: Arc<dyn OrderStore> = Arc::new(SqliteOrders::open(&path).expect("open"));
        order_id(&store, record("k1", 2)).await;
    }
    let store: Arc<dyn OrderStore> = Arc::new(SqliteOrders::open(&path).expect("reopen"));
    assert_eq!(order_id(&store, record("k1", 2)).await, OrderId(1));
    assert_eq!(order_id(&store, record("k2", 2)).await, OrderId(2));
}
