//! A sharded store (docs/scaling.md, "Shards: the design"): the catalog in
//! two shards by item id (1-4, 5 up), the orders in two shards by key,
//! each shard its own raft group, driven through the frontend and at its
//! replicas.

use std::collections::HashSet;

use std::time::Duration;

use pygmy_client::tools::check::{Checker, ReplicaUrls};
use pygmy_client::tools::load::{self, LoadConfig};
use pygmy_client::tools::members::Admin;
use pygmy_client::ClientError;
use pygmy_core::api::public::ItemUpdate;
use pygmy_core::shard::{order_id_base, KeyShards};
use pygmy_core::topology::Role;
use pygmy_core::types::{default_books, IdempotencyKey, ItemId};
use pygmy_core::ErrorKind;
use pygmy_server::testing::{Options, TestCluster, TestShards};

/// Two catalog shards split at item 5 and two order shards, of
/// `replicas` replicas each.
fn sharded(replicas: usize) -> Options {
    Options {
        catalogs: replicas,
        orders: replicas,
        shards: Some(TestShards {
            catalog_splits: vec![5],
            orders: 2,
        }),
        ..Options::raft()
    }
}

/// Reads and searches reach every shard; each buy sells on its item's
/// catalog shard and is recorded on its key's order shard, numbered in
/// that shard's ids; stock and orders add up over the shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_store_sells_each_item_in_its_shard_and_records_each_key_in_its_own() {
    let test = TestCluster::start(sharded(1)).await;
    let store = test.store();
    let books = default_books();

    // Item 3 lives in the first catalog shard, item 6 in the second.
    assert_eq!(store.lookup(ItemId(3)).await.expect("lookup"), books[2]);
    assert_eq!(store.lookup(ItemId(6)).await.expect("lookup"), books[5]);
    // A search merges every shard's books, in id order.
    let found = store.search("distributed systems").await.expect("search");
    assert_eq!(
        found.iter().map(|b| b.id.0).collect::<Vec<_>>(),
        vec![1, 2, 5]
    );

    let keys = KeyShards::new(2);
    let mut ids = HashSet::new();
    let mut by_shard = [0usize; 2];
    for i in 0..24 {
        let item = ItemId(if i % 2 == 0 { 1 } else { 6 });
        let key = IdempotencyKey::parse(&format!("sharded-buy-{i}")).expect("key");
        let id = store.buy_with_key(item, &key).await.expect("buy");
        let shard = keys.shard_of(&key);
        by_shard[shard] += 1;
        let base = order_id_base(shard);
        assert!(
            id.0 > base && id.0 <= base + 24,
            "order {id} of key {key} is not in shard {shard}'s ids"
        );
        assert!(ids.insert(id), "order id {id} given twice");
        // A retry answers the same order.
        assert_eq!(store.buy_with_key(item, &key).await.expect("retry"), id);
    }
    assert!(
        by_shard.iter().all(|n| *n > 0),
        "keys all in one shard: {by_shard:?}"
    );

    // Each catalog shard holds its own books alone.
    let catalogs = test.names(Role::Catalog);
    let (low, high) = (test.catalog(&catalogs[0]), test.catalog(&catalogs[1]));
    assert_eq!(low.item(ItemId(1)).await.expect("stock").count, 88);
    assert_eq!(high.item(ItemId(6)).await.expect("stock").count, 88);
    assert!(matches!(
        low.item(ItemId(6)).await,
        Err(ClientError::NotFound(_))
    ));
    // Each order shard holds the orders of its keys alone; together, one
    // order per sale.
    let orders = test.names(Role::Order);
    let mut recorded = 0;
    for (shard, name) in orders.iter().enumerate() {
        let ledger = test.order(name).ledger().await.expect("ledger");
        assert_eq!(ledger.len(), by_shard[shard], "{name}'s orders");
        assert!(ledger.iter().all(|o| keys.shard_of(&o.key) == shard));
        recorded += ledger.len();
    }
    assert_eq!(recorded, 24);
    test.shutdown().await;
}

/// A write sent to a shard that does not hold it is refused (421), and
/// changes nothing: a book lives in one catalog shard, a key's order in
/// one order shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_refuses_what_another_shard_holds() {
    let test = TestCluster::start(sharded(1)).await;
    let catalogs = test.names(Role::Catalog);
    let low = test.catalog(&catalogs[0]);
    let refused = low
        .update(
            ItemId(6),
            &ItemUpdate {
                count: Some(1),
                cost: None,
            },
        )
        .await
        .expect_err("item 6 is the second shard's");
    assert_eq!(refused.kind(), ErrorKind::Misdirected, "{refused}");
    let key = IdempotencyKey::parse("misdirected-sale").expect("key");
    let refused = low.sell(ItemId(6), &key).await.expect_err("not its item");
    assert_eq!(refused.kind(), ErrorKind::Misdirected, "{refused}");

    let keys = KeyShards::new(2);
    let orders = test.names(Role::Order);
    let key = (0..)
        .map(|i| IdempotencyKey::parse(&format!("other-shard-{i}")).expect("key"))
        .find(|key| keys.shard_of(key) == 1)
        .expect("a key of shard 1");
    let refused = test
        .order(&orders[0])
        .buy(ItemId(1), &key)
        .await
        .expect_err("the key is shard 1's");
    assert_eq!(refused.kind(), ErrorKind::Misdirected, "{refused}");
    // Nothing was sold for it.
    assert_eq!(
        test.store().lookup(ItemId(1)).await.expect("lookup").count,
        100
    );
    test.shutdown().await;
}

/// Load over every path of a store of two shards per service, three
/// replicas each: every promise holds over the shards (the checker reads
/// every replica of every shard); each shard is a raft group of its own
/// replicas, with a leader of its own; `status` names each row's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_store_keeps_every_promise_under_load() {
    let test = TestCluster::start(Options {
        stock: Some(100_000),
        ..sharded(3)
    })
    .await;
    let urls = ReplicaUrls::of(test.topology());
    let checker = Checker::before(&urls, &test.options())
        .await
        .expect("before");
    let config = LoadConfig {
        requests: Some(1_500),
        concurrency: 16,
        mix: "lookup=30,search=20,buy=50".parse().expect("mix"),
        history: true,
        ..LoadConfig::default()
    };
    let report = load::run(&test.store(), &config).await;
    for (op, figures) in &report.operations {
        assert!(figures.errors.is_empty(), "{op}: {:?}", figures.errors);
    }
    let verdict = checker
        .verdict_within(&report.acked_buys, &report.history, Duration::from_secs(10))
        .await
        .expect("after");
    assert!(verdict.passed(), "{verdict}");
    assert_eq!((verdict.catalogs, verdict.orders), (6, 6), "{verdict}");
    let mut shards_sold = HashSet::new();
    for buy in &report.acked_buys {
        shards_sold.insert(test.topology().item_ranges().shard_of(buy.item));
    }
    assert_eq!(shards_sold.len(), 2, "buys reached one catalog shard only");

    for role in [Role::Catalog, Role::Order] {
        for shard in 0..2 {
            let admin = Admin::of(test.topology(), role, shard, &test.options()).expect("admin");
            let members = admin.list().await.expect("members");
            let names: Vec<String> = test
                .topology()
                .shard_nodes(role, shard)
                .map(|n| n.name.clone())
                .collect();
            assert_eq!(
                members.members.len(),
                3,
                "{role} shard {shard}: {members:?}"
            );
            assert!(
                members.members.iter().all(|m| names.contains(&m.name)),
                "{role} shard {shard} has members of another shard: {members:?}"
            );
            let leader = members.leader.expect("a leader");
            assert!(names.contains(&leader), "{leader} leads another shard");
        }
    }
    let rows = pygmy_client::tools::status::status(
        test.topology(),
        &test.options(),
        Duration::from_millis(100),
    )
    .await;
    let catalog_4 = rows.iter().find(|r| r.node == "catalog-4").expect("row");
    assert_eq!(catalog_4.shard, "catalog-s1");
    test.shutdown().await;
}

/// A catalog shard with no replica left fails what needs it, and only
/// that: a lookup or a buy of another shard's item is served, a lookup
/// of its items and every search answer 503 (a search is whole or an
/// error, never the other shards' part), and the frontend says it is not
/// ready, naming the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_shard_down_fails_its_items_and_searches_alone() {
    let mut test = TestCluster::start(sharded(1)).await;
    let catalogs = test.names(Role::Catalog);
    test.cluster.stop_node(&catalogs[1]).await.expect("stop");
    let store = test.store();

    assert_eq!(store.lookup(ItemId(1)).await.expect("lookup").count, 100);
    store
        .buy(ItemId(2))
        .await
        .expect("a buy of the first shard");
    assert!(
        matches!(
            store.lookup(ItemId(6)).await,
            Err(ClientError::Unavailable(_))
        ),
        "a lookup of the stopped shard's item"
    );
    let search = store.search("distributed systems").await;
    assert!(
        matches!(search, Err(ClientError::Unavailable(_))),
        "a search with a shard down answered {search:?}"
    );
    let frontend = pygmy_server::node::probe_client(&test.url("frontend"), None).expect("client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let reason = loop {
        match frontend.ready().await {
            Err(ClientError::Unavailable(reason)) => break reason,
            other if tokio::time::Instant::now() >= deadline => {
                panic!("the frontend is still ready: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(reason, "no catalog (shard 1) replica is ready");
    test.shutdown().await;
}
