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
        .wait_ready(Duration::from_secs(10))
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
        .wait_ready(Duration::from_secs(10))
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
        .wait_ready(Duration::from_secs(10))
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
    // Alive, and saying it cannot serve.
    let frontend = pygmy_server::node::probe_client(&test.url("frontend"), None).expect("client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let health = loop {
        match frontend.health().await {
            Ok(health) => break health,
            Err(err) if tokio::time::Instant::now() >= deadline => panic!("not alive: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    };
    assert_eq!(health.state, "no_backend");
    assert!(matches!(
        frontend.ready().await,
        Err(ClientError::Unavailable(reason)) if reason == "no catalog nor order replica is ready"
    ));
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

/// Sales made before the test, each with its order, as a store that has
/// sold `sold` copies of book 1 has them; the catalog's reconciler
/// progress at the last of them. Written once into a file of each
/// service, then copied to every replica (they apply the same ops, as
/// seeded replicas start from the same books).
async fn a_store_that_sold(
    dir: &std::path::Path,
    topology: &pygmy_core::topology::Topology,
    sold: u64,
) {
    use pygmy_core::catalog::sqlite::SqliteCatalog;
    use pygmy_core::catalog::{CatalogCommand, CatalogStore};
    use pygmy_core::journal::{Op, Source};
    use pygmy_core::order::sqlite::SqliteOrders;
    use pygmy_core::order::OrderCommand;
    use pygmy_core::types::IdempotencyKey;

    let history = |seq: u64| Source::Peer {
        origin: "history".to_owned(),
        origin_seq: seq,
    };
    let key = |n: u64| IdempotencyKey::parse(&format!("sold-{n:08}")).expect("key");
    let catalog = SqliteCatalog::open(dir.join("catalog.db")).expect("open");
    catalog
        .seed(topology.books().expect("books"))
        .await
        .expect("seed");
    let orders = SqliteOrders::open(dir.join("orders.db")).expect("open");
    for first in (1..=sold).step_by(20_000) {
        let last = (first + 19_999).min(sold);
        let sales = (first..=last)
            .map(|n| {
                let op = Op {
                    id: CatalogCommand::sale_op_id(&key(n)),
                    cmd: CatalogCommand::Sell { item: ItemId(1) },
                };
                (history(n), Some(op), None)
            })
            .collect();
        catalog
            .apply_with_meta(sales, Vec::new(), None)
            .await
            .expect("sales");
        let records = (first..=last)
            .map(|n| {
                let op = Op {
                    id: OrderCommand::op_id(&key(n)),
                    cmd: OrderCommand::Record {
                        key: key(n),
                        item: ItemId(1),
                        created: "2026-12-04T00:00:00Z".to_owned(),
                        base: 0,
                    },
                };
                (history(n), Some(op), None)
            })
            .collect();
        orders
            .apply_with_meta(records, Vec::new(), None)
            .await
            .expect("orders");
    }
    let kept = Op {
        id: CatalogCommand::reconciled_op_id(0, sold),
        cmd: CatalogCommand::Reconciled {
            upto: sold,
            shard: 0,
            shards: 1,
        },
    };
    catalog
        .apply_with_meta(
            vec![(history(sold + 1), Some(kept), None)],
            Vec::new(),
            None,
        )
        .await
        .expect("the reconciler's progress");
    drop((catalog, orders));
    for node in &topology.nodes {
        let file = match node.role {
            Role::Catalog => "catalog.db",
            Role::Order => "orders.db",
            Role::Frontend => continue,
        };
        let data = topology.data_dir(node);
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::copy(dir.join(file), data.join(file)).expect("copy");
    }
}

/// After 200,000 sales, each with its order, an order leader dies just
/// after a sale was made whose order it never recorded. The next order
/// leader starts from the reconciler's progress kept with the sales, not
/// from the first sale, and records that order within 10 s of its
/// election (its grace period is 5 s; 5.1 s measured). (Seen failing with
/// the progress ignored: reading every sale again, 10,000 a round, it had
/// not reached the orphan 10 s after the election.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_order_leader_resumes_reconciling_where_the_last_stopped() {
    const SOLD: u64 = 200_000;
    let options = Options {
        stock: Some(1_000_000),
        ..Options::raft()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let topology = pygmy_server::testing::topology(&options, dir.path());
    a_store_that_sold(dir.path(), &topology, SOLD).await;
    let cluster = pygmy_server::Cluster::start(topology)
        .await
        .expect("cluster starts");
    cluster
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("cluster healthy");
    let mut test = TestCluster { cluster, dir };
    let leader_of = |health: pygmy_core::api::public::HealthResponse| health.leader;
    let order_leader =
        leader_of(test.order("order-0").health().await.expect("health")).expect("an order leader");
    let catalog_leader = leader_of(test.catalog("catalog-0").health().await.expect("health"))
        .expect("a catalog leader");
    // A sale whose order its order leader never records: it dies at once.
    let orphan = pygmy_core::types::IdempotencyKey::parse("orphan-of-a-dead-leader").expect("key");
    test.catalog(&catalog_leader)
        .sell(ItemId(2), &orphan)
        .await
        .expect("the sale");
    test.cluster.stop_node(&order_leader).await.expect("stop");
    let others: Vec<String> = test
        .names(Role::Order)
        .into_iter()
        .filter(|name| *name != order_leader)
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let elected = loop {
        if let Ok(health) = test.order(&others[0]).health().await {
            if health.leader.as_deref().is_some_and(|l| l != order_leader) {
                break std::time::Instant::now();
            }
        }
        assert!(std::time::Instant::now() < deadline, "no new order leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    loop {
        let page = test
            .order(&others[0])
            .orders(pygmy_core::types::OrderId(SOLD as i64), 10)
            .await
            .expect("a page of orders");
        if page.order.iter().any(|order| order.item_id == ItemId(2)) {
            break;
        }
        assert!(
            elected.elapsed() < Duration::from_secs(10),
            "the orphan sale has no order {:?} after the election",
            elected.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "the orphan sale's order, {:?} after the new leader's election",
        elected.elapsed()
    );
    test.shutdown().await;
}
