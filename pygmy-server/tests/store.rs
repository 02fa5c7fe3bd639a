//! The whole store (1 frontend, 2 catalog and 2 order replicas, SQLite)
//! driven through the SDK, as a user and the checks would.

use pygmy_client::ClientError;
use pygmy_core::api::public::ItemUpdate;
use pygmy_core::topology::Role;
use pygmy_core::types::{default_books, Cost, IdempotencyKey, ItemId};
use pygmy_server::testing::{Options, TestCluster, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_search_and_buy_through_the_frontend() {
    let test = TestCluster::start(Options::default()).await;
    let store = test.store();

    let book = store.lookup(ItemId(3)).await.expect("lookup");
    assert_eq!(book, default_books()[2]);
    let found = store.search("distributed systems").await.expect("search");
    assert_eq!(
        found.iter().map(|b| b.id.0).collect::<Vec<_>>(),
        vec![1, 2, 5]
    );
    assert!(store.search("cooking").await.expect("search").is_empty());
    assert!(matches!(
        store.lookup(ItemId(404)).await,
        Err(ClientError::NotFound(_))
    ));

    let first = store.buy(ItemId(3)).await.expect("buy");
    let second = store.buy(ItemId(3)).await.expect("buy");
    assert_ne!(first, second);
    // The cached lookup was invalidated by the buys.
    assert_eq!(store.lookup(ItemId(3)).await.expect("lookup").count, 98);
    assert_eq!(test.stocks(ItemId(3)).await, vec![98, 98]);
    let a = test.order("order-0").ledger().await.expect("orders");
    let b = test.order("order-1").ledger().await.expect("orders");
    assert_eq!(a.len(), 2);
    assert_eq!(a, b, "order replicas hold the same orders");
    assert!(matches!(
        store.buy(ItemId(404)).await,
        Err(ClientError::NotFound(_))
    ));
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buy_retried_with_its_key_makes_one_order() {
    let test = TestCluster::start(Options::default()).await;
    let store = test.store();
    let key = IdempotencyKey::parse("retry-me-1").expect("key");
    let first = store.buy_with_key(ItemId(1), &key).await.expect("buy");
    for _ in 0..3 {
        assert_eq!(
            store.buy_with_key(ItemId(1), &key).await.expect("retry"),
            first
        );
    }
    // Straight to the other order replica: still the same order.
    assert_eq!(
        test.order("order-1")
            .buy(ItemId(1), &key)
            .await
            .expect("retry"),
        first
    );
    assert_eq!(test.stocks(ItemId(1)).await, vec![99, 99]);
    // The same key for another item is refused.
    assert!(matches!(
        store.buy_with_key(ItemId(2), &key).await,
        Err(ClientError::Unprocessable(_))
    ));
    assert_eq!(test.stocks(ItemId(2)).await, vec![100, 100]);
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restock_retried_with_its_key_applies_once() {
    let test = TestCluster::start(Options::default()).await;
    let restock = ItemUpdate {
        count: Some(10),
        cost: None,
    };
    let key = IdempotencyKey::parse("restock-1").expect("key");
    let first = test
        .catalog("catalog-0")
        .update_with_key(ItemId(3), &restock, &key)
        .await
        .expect("restock");
    assert_eq!(first.count, 110);
    // Retried, through either replica: the same answer, nothing more.
    for name in ["catalog-0", "catalog-1", "catalog-0"] {
        let again = test
            .catalog(name)
            .update_with_key(ItemId(3), &restock, &key)
            .await
            .expect("retry");
        assert_eq!(again, first);
    }
    assert_eq!(test.stocks(ItemId(3)).await, vec![110, 110]);
    // The same key for another item is refused, and changes nothing.
    assert!(matches!(
        test.catalog("catalog-1")
            .update_with_key(ItemId(4), &restock, &key)
            .await,
        Err(ClientError::Unprocessable(_))
    ));
    assert_eq!(test.stocks(ItemId(4)).await, vec![100, 100]);
    // Without a key, each update is a new one.
    for _ in 0..2 {
        test.catalog("catalog-0")
            .update(ItemId(3), &restock)
            .await
            .expect("restock");
    }
    assert_eq!(test.stocks(ItemId(3)).await, vec![130, 130]);
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_replicated_and_no_frontend_serves_the_old_value() {
    let test = TestCluster::start(Options::default()).await;
    let store = test.store();
    // Fill the frontend's cache.
    assert_eq!(store.lookup(ItemId(4)).await.expect("lookup").count, 100);
    assert_eq!(
        store.search("graduate school").await.expect("search")[1].count,
        100
    );

    let update = ItemUpdate {
        count: Some(-30),
        cost: Cost::from_cents(1999),
    };
    let updated = test
        .catalog("catalog-1")
        .update(ItemId(4), &update)
        .await
        .expect("update");
    assert_eq!((updated.count, updated.cost.cents()), (70, 1999));

    // The catalog pushed the invalidation before it answered.
    let looked_up = store.lookup(ItemId(4)).await.expect("lookup");
    assert_eq!((looked_up.count, looked_up.cost.cents()), (70, 1999));
    let searched = store.search("graduate school").await.expect("search");
    assert_eq!(
        searched.iter().find(|b| b.id == ItemId(4)).map(|b| b.count),
        Some(70)
    );
    assert_eq!(test.stocks(ItemId(4)).await, vec![70, 70]);

    let too_many = ItemUpdate {
        count: Some(-71),
        cost: None,
    };
    assert!(matches!(
        test.catalog("catalog-0").update(ItemId(4), &too_many).await,
        Err(ClientError::Unprocessable(_))
    ));
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reports_its_health() {
    let test = TestCluster::start(Options::default()).await;
    for name in test.names(Role::Catalog) {
        let health = test.catalog(&name).health().await.expect("health");
        assert_eq!(
            (
                health.node.as_str(),
                health.role.as_str(),
                health.state.as_str()
            ),
            (name.as_str(), "catalog", "ok")
        );
    }
    for name in test.names(Role::Order) {
        assert_eq!(
            test.order(&name).health().await.expect("health").role,
            "order"
        );
    }
    let frontend = metrics(&test, "frontend").await;
    assert!(frontend.contains("pygmy_cache_hits_total{node=\"frontend\"}"));
    for name in ["catalog-0", "order-1"] {
        let text = metrics(&test, name).await;
        assert!(
            text.contains(&format!("pygmy_ready{{node=\"{name}\"}} 1")),
            "{text}"
        );
        assert!(text.contains("pygmy_requests_total"), "{text}");
    }
    test.shutdown().await;
}

async fn metrics(test: &TestCluster, node: &str) -> String {
    reqwest::get(format!("{}/metrics", test.url(node)))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of `name` on `node`'s `/metrics`.
async fn metric(test: &TestCluster, node: &str, name: &str) -> u64 {
    let text = metrics(test, node).await;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// With every catalog replica up, the frontend holds its cache lease
/// (within a probe of the start) and answers repeated reads itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_lookups_are_served_from_the_cache() {
    let test = TestCluster::start(Options::default()).await;
    test.eventually("the frontend holds its cache lease", || async {
        metric(&test, "frontend", "pygmy_cache_leased").await == 1
    })
    .await;
    let hits = metric(&test, "frontend", "pygmy_cache_hits_total").await;
    let before = catalog_reads(&test).await;
    for _ in 0..10 {
        assert_eq!(
            test.store().lookup(ItemId(2)).await.expect("lookup").id,
            ItemId(2)
        );
    }
    assert_eq!(
        catalog_reads(&test).await - before,
        1,
        "one miss, then hits"
    );
    assert_eq!(
        metric(&test, "frontend", "pygmy_cache_hits_total").await - hits,
        9
    );
    test.shutdown().await;
}

/// Reads served by all the catalog replicas.
async fn catalog_reads(test: &TestCluster) -> u64 {
    let mut sum = 0;
    for name in test.names(Role::Catalog) {
        sum += metric(test, &name, "pygmy_catalog_reads_total").await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_over_catalogs_whatever_the_buys_do() {
    let test = TestCluster::start(Options::default()).await;
    let store = test.store();
    let before = [
        metric(&test, "catalog-0", "pygmy_catalog_reads_total").await,
        metric(&test, "catalog-1", "pygmy_catalog_reads_total").await,
    ];
    // Lookups (each of a new id, so each reaches a catalog) between buys:
    // with one rotation for both backends, every lookup would land on the
    // same catalog replica.
    for id in 1..=6 {
        store.lookup(ItemId(id)).await.expect("lookup");
        store.buy(ItemId(7)).await.expect("buy");
    }
    let served = [
        metric(&test, "catalog-0", "pygmy_catalog_reads_total").await - before[0],
        metric(&test, "catalog-1", "pygmy_catalog_reads_total").await - before[1],
    ];
    assert_eq!(served, [3, 3]);
    test.shutdown().await;
}

/// Lookups that reach the frontend together go to a catalog replica
/// together (`POST /lookups`), and each is answered as it would have been
/// alone: its own book, or the 404 of a book the catalog does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_that_come_together_are_read_together_each_answered_as_alone() {
    let test = TestCluster::start(Options {
        extra_books: 60,
        ..Options::default()
    })
    .await;
    let store = std::sync::Arc::new(test.store());
    let missing = ItemId(5_000);
    let Err(ClientError::NotFound(alone)) = store.lookup(missing).await else {
        panic!("book {missing} was found");
    };
    // Every id a new one, so that each misses the cache and reaches a
    // catalog replica: the seed's seven, the 60 added, 13 missing.
    let found = |id: ItemId| (1..=7).contains(&id.0) || (1_000..1_060).contains(&id.0);
    let ids: Vec<ItemId> = (1..=7)
        .chain(1_000..1_060)
        .chain(2_000..2_013)
        .map(ItemId)
        .collect();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(ids.len()));
    let lookups: Vec<_> = ids
        .iter()
        .map(|&id| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.lookup(id).await
            })
        })
        .collect();
    for (id, lookup) in ids.into_iter().zip(lookups) {
        match lookup.await.expect("the task") {
            Ok(book) => assert!(found(id) && book.id == id, "{id}: {book:?}"),
            Err(ClientError::NotFound(message)) => {
                assert!(!found(id), "{id} not found");
                assert_eq!(message, alone.replace("5000", &id.to_string()));
            }
            Err(other) => panic!("{id}: {other}"),
        }
    }
    let mut gathered = 0;
    for name in test.names(Role::Catalog) {
        let calls = "pygmy_request_duration_seconds_count{node=\"NAME\",route=\"POST /lookups\"}"
            .replace("NAME", &name);
        let text = metrics(&test, &name).await;
        gathered += text
            .lines()
            .find_map(|l| l.strip_prefix(&calls))
            .map_or(0, |v| v.trim().parse::<u64>().expect("a count"));
    }
    // 80 lookups released at once by the barrier overlap in the frontend
    // (only one with no other under way goes alone): not a certainty of
    // the scheduler, but every run so far gathered some.
    assert!(gathered > 0, "no lookups were read together");
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_its_data_across_a_restart() {
    let mut test = TestCluster::start(Options::default()).await;
    let store = test.store();
    let order = store.buy(ItemId(5)).await.expect("buy");
    for name in test
        .names(Role::Catalog)
        .into_iter()
        .chain(test.names(Role::Order))
    {
        test.cluster.restart_node(&name).await.expect("restart");
    }
    test.cluster
        .wait_ready(std::time::Duration::from_secs(10))
        .await
        .expect("healthy");
    assert_eq!(test.stocks(ItemId(5)).await, vec![99, 99]);
    let orders = test.order("order-0").ledger().await.expect("orders");
    assert_eq!(orders.iter().map(|o| o.id).collect::<Vec<_>>(), vec![order]);
    // Ids go on after the restart.
    assert!(store.buy(ItemId(5)).await.expect("buy") > order);
    test.shutdown().await;
}

/// The largest push a catalog replica sends (as many invalidations as one
/// push carries, each with a long topic) is taken whole, under the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_takes_the_largest_invalidation_push() {
    use pygmy_core::api::internal::{Invalidation, Stamp};
    let test = TestCluster::start(Options::default()).await;
    let mut options = test.options();
    options.token = Some(TOKEN.to_owned());
    let frontend =
        pygmy_client::InternalClient::new(&test.url("frontend"), &options).expect("client");
    let push: Vec<Invalidation> = (1..=pygmy_server::pusher::MOST_PER_PUSH)
        .map(|seq| Invalidation {
            item: ItemId(3),
            topic: "t".repeat(200),
            stamp: Some(Stamp {
                source: "catalog-0".to_owned(),
                incarnation: uuid::Uuid::new_v4().to_string(),
                seq: seq as u64,
            }),
        })
        .collect();
    frontend
        .invalidate_all(&push)
        .await
        .expect("the push is taken");
    test.shutdown().await;
}

/// The orders of a call of many buys are proposed together, once every
/// sale of the call is answered, so that they go into one raft entry: the
/// call is answered when its last order is, and orders proposed as each
/// sale came back were split over entries (the first sale of a call goes
/// alone, the others together, and they come back apart: this test failed
/// 3 of 3 runs so). The 14 proposals are queued in one poll of the call's
/// task, before the raft writer (woken by the first) takes any: tokio runs
/// a task woken by a running one after it, on the same thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_of_a_call_of_many_buys_go_into_one_raft_entry() {
    use pygmy_core::api::internal::{BuyRequest, BuysRequest};
    let test = TestCluster::start(Options::raft()).await;
    // Healthy raft replicas each know the leader.
    let leader = test
        .order("order-0")
        .health()
        .await
        .expect("health")
        .leader
        .expect("the order service has a leader");
    // A new service writes one op per entry until its leader raised the
    // entry format, about a second after the start.
    test.eventually("the order service writes grouped entries", || async {
        metric(&test, &leader, "pygmy_raft_format_writes").await == 2
    })
    .await;
    let entries = "pygmy_raft_last_log_index";
    let before = metric(&test, &leader, entries).await;
    let buys = BuysRequest {
        buys: (1..=7)
            .chain(1..=7)
            .map(|item| BuyRequest {
                item: ItemId(item),
                key: IdempotencyKey::mint(),
            })
            .collect(),
    };
    let made = test.order(&leader).buy_many(&buys).await.expect("the call");
    assert!(made.iter().all(Result::is_ok), "{made:?}");
    assert_eq!(
        metric(&test, &leader, entries).await - before,
        1,
        "the 14 orders went into more than one entry"
    );
    test.shutdown().await;
}
