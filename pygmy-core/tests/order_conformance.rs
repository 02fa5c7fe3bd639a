//! The order store contract (`pygmy_core::testing::order`), run against
//! every backend, and what only SQLite promises.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pygmy_core::order::memory::MemoryOrders;
use pygmy_core::order::sqlite::SqliteOrders;
use pygmy_core::order::OrderStore;
use pygmy_core::testing::order::{self, order_id, record};
use pygmy_core::types::{IdempotencyKey, OrderId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_orders_pass_the_suite() {
    order::run(|| Arc::new(MemoryOrders::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_orders_pass_the_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let made = AtomicUsize::new(0);
    order::run(|| {
        let n = made.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("orders-{n}.db"));
        Arc::new(SqliteOrders::open(path).expect("open"))
    })
    .await;
}

#[tokio::test]
async fn sqlite_orders_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orders.db");
    {
        let store: Arc<dyn OrderStore> = Arc::new(SqliteOrders::open(&path).expect("open"));
        order_id(&store, record("k1", 2)).await;
    }
    let store: Arc<dyn OrderStore> = Arc::new(SqliteOrders::open(&path).expect("reopen"));
    // The keys kept in memory are loaded at open.
    let k1 = IdempotencyKey::parse("k1").expect("key");
    let found = store.order_by_key(&k1).await.expect("read");
    assert_eq!(found.map(|o| o.id), Some(OrderId(1)));
    assert_eq!(order_id(&store, record("k1", 2)).await, OrderId(1));
    assert_eq!(order_id(&store, record("k2", 2)).await, OrderId(2));
}
