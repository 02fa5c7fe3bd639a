//! Replicas that stop: reads and buys go on through the others, and a
//! replica that comes back catches up before it serves.

use std::time::Duration;

use pygmy_client::ClientError;
use pygmy_core::topology::Role;
use pygmy_core::types::ItemId;
use pygmy_server::testing::{Options, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_buys_survive_a_stopped_catalog_replica() {
    let mut test = TestCluster::start(Options::default()).await;
    let store = test.store();
    test.cluster.stop_node("catalog-0").await.expect("stop");
    // Lookups are not cached yet, so each of these reaches a catalog.
    for id in 1..=7 {
        let started = std::time::Instant::now();
        store.lookup(ItemId(id)).await.expect("lookup fails over");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "failover must not hang"
        );
    }
    // Order replica 0 prefers catalog 0, which is down: it falls over.
    let mut orders = Vec::new();
    for _ in 0..4 {
        orders.push(store.buy(ItemId(2)).await.expect("buy fails over"));
    }
    assert_eq!(
        test.catalog("catalog-1")
            .item(ItemId(2))
            .await
            .expect("read")
            .count,
        96
    );

    // Back, it catches up from catalog-1 before it serves.
    test.cluster
        .restart_node("catalog-0")
        .await
        .expect("restart");
    test.cluster
        .wait_healthy(Duration::from_secs(10))
        .await
        .expect("healthy");
    assert_eq!(test.stocks(ItemId(2)).await, vec![96, 96]);
    // And takes writes again.
    store.buy(ItemId(2)).await.expect("buy");
    test.eventually("stocks converge", || async {
        test.stocks(ItemId(2)).await == vec![95, 95]
    })
    .await;
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buys_survive_a_stopped_order_replica_and_it_gets_what_it_missed() {
    let mut test = TestCluster::start(Options::default()).await;
    let store = test.store();
    test.cluster.stop_node("order-0").await.expect("stop");
    let mut sold = Vec::new();
    for _ in 0..4 {
        sold.push(store.buy(ItemId(6)).await.expect("buy fails over"));
    }
    test.cluster.restart_node("order-0").await.expect("restart");
    test.cluster
        .wait_healthy(Duration::from_secs(10))
        .await
        .expect("healthy");
    let a = test.order("order-0").ledger().await.expect("orders");
    let b = test.order("order-1").ledger().await.expect("orders");
    assert_eq!(a, b);
    assert_eq!(a.iter().map(|o| o.id).collect::<Vec<_>>(), sold);
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_replica_down_the_answer_is_a_quick_503() {
    let mut test = TestCluster::start(Options::default()).await;
    for name in test
        .names(Role::Catalog)
        .into_iter()
        .chain(test.names(Role::Order))
    {
        test.cluster.stop_node(&name).await.expect("stop");
    }
    let store = test.store();
    let started = std::time::Instant::now();
    assert!(matches!(
        store.lookup(ItemId(1)).await,
        Err(ClientError::Unavailable(_))
    ));
    assert!(matches!(
        store.search("graduate school").await,
        Err(ClientError::Unavailable(_))
    ));
    assert!(matches!(
        store.buy(ItemId(1)).await,
        Err(ClientError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_alone_answers_what_it_can() {
    let mut test = TestCluster::start(Options::default()).await;
    for name in ["frontend", "catalog-1", "order-0", "order-1"] {
        test.cluster.stop_node(name).await.expect("stop");
    }
    // A catalog replica alone serves reads and takes updates.
    let catalog = test.catalog("catalog-0");
    assert_eq!(catalog.items(None).await.expect("items").len(), 7);
    let update = pygmy_core::api::public::ItemUpdate {
        count: Some(5),
        cost: None,
    };
    assert_eq!(
        catalog
            .update(ItemId(7), &update)
            .await
            .expect("update")
            .count,
        105
    );

    // An order replica alone (catalog-0 still up) takes buys.
    test.cluster
        .restart_node("order-0")
        .await
        .expect("start order-0");
    test.cluster
        .wait_healthy(Duration::from_secs(10))
        .await
        .expect("healthy");
    let key = pygmy_core::types::IdempotencyKey::mint();
    test.order("order-0")
        .buy(ItemId(7), &key)
        .await
        .expect("buy");
    assert_eq!(catalog.item(ItemId(7)).await.expect("read").count, 104);

    // A frontend alone, with no backend: clear 503s, never a hang.
    for name in ["catalog-0", "order-0"] {
        test.cluster.stop_node(name).await.expect("stop");
    }
    test.cluster
        .restart_node("frontend")
        .await
        .expect("start frontend");
    test.cluster
        .wait_healthy(Duration::from_secs(10))
        .await
        .expect("healthy");
    assert!(matches!(
        test.store().lookup(ItemId(1)).await,
        Err(ClientError::Unavailable(_))
    ));
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_stops_the_cluster_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut topology = pygmy_server::testing::topology(&Options::default(), dir.path());
    // A data dir below a plain file cannot be made.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("write");
    if let Some(node) = topology.nodes.iter_mut().find(|n| n.name == "catalog-1") {
        node.data_dir = Some(blocker.join("catalog-1"));
    }
    let cluster = pygmy_server::Cluster::start(topology).await.expect("binds");
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        cluster.run_until(std::future::pending()),
    )
    .await
    .expect("the failure is noticed");
    let err = result.expect_err("a node failed");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

/// Sales whose buys never got to record their orders (their clients went
/// away, say), made straight at the catalog: the reconciler records every
/// one of them after one grace period, not one grace period each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_left_without_their_orders_get_them() {
    orphan_sales_get_their_orders(Options::default()).await;
}

/// The same under raft, where only the order leader reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_left_without_their_orders_get_them_under_raft() {
    orphan_sales_get_their_orders(Options::raft()).await;
}

async fn orphan_sales_get_their_orders(options: Options) {
    let catalogs = options.catalogs;
    let test = TestCluster::start(options).await;
    let key = |n: i64| {
        pygmy_core::types::IdempotencyKey::parse(&format!("orphan-sale-{n}")).expect("key")
    };
    for n in 1..=4 {
        test.catalog("catalog-0")
            .sell(ItemId(n), &key(n))
            .await
            .expect("sale");
        // An ordinary buy between them, which has its order.
        test.store().buy(ItemId(7)).await.expect("buy");
    }
    assert_eq!(
        test.order("order-0").ledger().await.expect("orders").len(),
        4
    );
    let started = std::time::Instant::now();
    test.eventually("every orphan sale gets its order", || async {
        let orders = test.order("order-1").ledger().await.expect("orders");
        (1..=4).all(|n| {
            orders
                .iter()
                .any(|o| o.key == key(n) && o.item_id == ItemId(n))
        })
    })
    .await;
    assert!(started.elapsed() >= pygmy_server::order::reconcile::GRACE - Duration::from_secs(1));
    let a = test.order("order-0").ledger().await.expect("orders");
    let b = test.order("order-1").ledger().await.expect("orders");
    assert_eq!((a.len(), &a), (8, &b));
    // A buy retried with one of those keys answers its order, selling
    // nothing more.
    let order = test
        .store()
        .buy_with_key(ItemId(4), &key(4))
        .await
        .expect("retry");
    let recorded = a.iter().find(|o| o.key == key(4)).expect("recorded");
    assert_eq!(recorded.id, order);
    let stocks = test.stocks(ItemId(4)).await;
    assert_eq!(stocks, vec![99; catalogs]);
    test.shutdown().await;
}
