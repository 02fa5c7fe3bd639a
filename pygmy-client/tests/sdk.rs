//! The SDK, the load generator and the checker against a real store.

use pygmy_client::tools::check::{check, Expected, ReplicaUrls};
use pygmy_client::tools::load::{self, LoadConfig, Mix, Operation};
use pygmy_client::{Client, ClientError, ClientOptions};
use pygmy_core::api::internal::{
    BuyRequest, BuysRequest, LookupsRequest, SaleRequest, SalesRequest,
};
use pygmy_core::topology::Role;
use pygmy_core::types::{IdempotencyKey, ItemId};
use pygmy_server::testing::{Options, TestCluster};

fn replica_urls(test: &TestCluster) -> ReplicaUrls {
    ReplicaUrls::of(test.topology())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_tells_failures_apart() {
    let test = TestCluster::start(Options {
        stock: Some(1),
        ..Options::default()
    })
    .await;
    let store = test.store();
    assert_eq!(store.lookup(ItemId(1)).await.expect("lookup").count, 1);
    let key = IdempotencyKey::mint();
    let order = store.buy_with_key(ItemId(1), &key).await.expect("buy");
    assert_eq!(
        store.buy_with_key(ItemId(1), &key).await.expect("same key"),
        order
    );
    assert!(matches!(
        store.buy(ItemId(1)).await,
        Err(ClientError::OutOfStock(_))
    ));
    assert!(matches!(
        store.buy(ItemId(99)).await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        store.lookup(ItemId(99)).await,
        Err(ClientError::NotFound(_))
    ));
    // Without the token, an internal call is refused.
    let no_token =
        pygmy_client::CatalogClient::new(&test.url("catalog-0"), &ClientOptions::default())
            .expect("client");
    let update = pygmy_core::api::public::ItemUpdate {
        count: Some(1),
        cost: None,
    };
    assert!(matches!(
        no_token.update(ItemId(1), &update).await,
        Err(ClientError::Unauthorized(_))
    ));
    test.shutdown().await;
    // Nothing listens any more: a transport failure, told as such (on a
    // pooled connection the server closed, or on a refused new one).
    let err = store.lookup(ItemId(1)).await.expect_err("no store");
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(err.is_replica_failure());
    let fresh = Client::new(store.url().as_str()).expect("client");
    let err = fresh.lookup(ItemId(1)).await.expect_err("no store");
    assert!(
        matches!(err, ClientError::Transport { connect: true, .. }),
        "{err:?}"
    );
    assert!(matches!(
        Client::new("ftp://x"),
        Err(ClientError::InvalidUrl(_))
    ));
}

/// `POST /sales`: each sale of a call is made, or refused, on its own, as
/// `POST /item/<id>/sell` would; a call of no sales or of too many is
/// refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_many_sales_answers_each_on_its_own() {
    let test = TestCluster::start(Options {
        stock: Some(1),
        ..Options::default()
    })
    .await;
    let catalog = test.catalog("catalog-0");
    let key = |k: &str| IdempotencyKey::parse(k).expect("a valid key");
    let sale = |item: i64, k: &str| SaleRequest {
        item: ItemId(item),
        key: key(k),
    };
    let first = SalesRequest {
        sales: vec![sale(1, "k1")],
    };
    let sold = catalog.sell_many(&first).await.expect("the first call");
    assert!(matches!(&sold[..], [Ok(book)] if book.id == ItemId(1) && book.count == 0));
    let mixed = SalesRequest {
        sales: vec![
            sale(1, "k1"),  // a repeat: the first answer again
            sale(1, "k2"),  // none left
            sale(99, "k3"), // no such book
            sale(2, "k1"),  // the key sold another book
            sale(2, "k4"),  // sold
        ],
    };
    let results = catalog.sell_many(&mixed).await.expect("the mixed call");
    assert_eq!(results.len(), 5);
    assert!(matches!(&results[0], Ok(book) if book.id == ItemId(1) && book.count == 0));
    assert!(matches!(&results[1], Err(ClientError::OutOfStock(_))));
    assert!(matches!(&results[2], Err(ClientError::NotFound(_))));
    assert!(matches!(&results[3], Err(ClientError::Unprocessable(_))));
    assert!(matches!(&results[4], Ok(book) if book.id == ItemId(2) && book.count == 0));
    for (item, stocks) in [(1, [0, 0]), (2, [0, 0]), (3, [1, 1])] {
        assert_eq!(test.stocks(ItemId(item)).await, stocks, "item {item}");
    }
    let none = SalesRequest { sales: Vec::new() };
    assert!(matches!(
        catalog.sell_many(&none).await,
        Err(ClientError::BadRequest(_))
    ));
    let too_many = SalesRequest {
        sales: (0..=SalesRequest::MOST)
            .map(|n| sale(3, &format!("many-{n}")))
            .collect(),
    };
    assert!(matches!(
        catalog.sell_many(&too_many).await,
        Err(ClientError::BadRequest(_))
    ));
    assert_eq!(test.stocks(ItemId(3)).await, [1, 1]);
    test.shutdown().await;
}

/// `POST /lookups`: each book of a call is read, or refused, on its own,
/// as `GET /item/<id>` would; a call of none or of too many is refused
/// whole. (That each read is fresh: faults.rs,
/// `a_follower_thawed_behind_serves_no_stale_read`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_many_lookups_answers_each_on_its_own() {
    let test = TestCluster::start(Options {
        stock: Some(1_000),
        ..Options::default()
    })
    .await;
    let catalogs: Vec<_> = test
        .names(Role::Catalog)
        .iter()
        .map(|name| test.catalog(name))
        .collect();
    let lookups = |items: &[i64]| LookupsRequest {
        items: items.iter().copied().map(ItemId).collect(),
    };
    let results = catalogs[1]
        .item_many(&lookups(&[1, 99, 2, 1]))
        .await
        .expect("the mixed call");
    assert_eq!(results.len(), 4);
    assert!(matches!(&results[0], Ok(book) if book.id == ItemId(1) && book.count == 1_000));
    assert!(matches!(&results[1], Err(ClientError::NotFound(_))));
    assert!(matches!(&results[2], Ok(book) if book.id == ItemId(2)));
    assert!(matches!(&results[3], Ok(book) if book.id == ItemId(1)));
    for refused in [lookups(&[]), lookups(&[1; LookupsRequest::MOST + 1])] {
        assert!(matches!(
            catalogs[0].item_many(&refused).await,
            Err(ClientError::BadRequest(_))
        ));
    }
    test.shutdown().await;
}

/// `POST /buys`: each buy of a call is made, or refused, on its own, as
/// `GET /buy/<item>` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_many_buys_answers_each_on_its_own() {
    let test = TestCluster::start(Options {
        stock: Some(1),
        ..Options::default()
    })
    .await;
    let order = test.order("order-0");
    let buy = |item: i64, k: &str| BuyRequest {
        item: ItemId(item),
        key: IdempotencyKey::parse(k).expect("a valid key"),
    };
    let first = BuysRequest {
        buys: vec![buy(1, "b1")],
    };
    let bought = order.buy_many(&first).await.expect("the first call");
    let [Ok(id)] = bought[..] else {
        panic!("the first buy: {bought:?}");
    };
    let mixed = BuysRequest {
        buys: vec![
            buy(1, "b1"),  // a repeat: the same order
            buy(1, "b2"),  // none left
            buy(99, "b3"), // no such book
            buy(2, "b1"),  // the key bought another book
            buy(2, "b4"),  // bought
        ],
    };
    let results = order.buy_many(&mixed).await.expect("the mixed call");
    assert_eq!(results.len(), 5);
    assert!(matches!(&results[0], Ok(same) if *same == id));
    assert!(matches!(&results[1], Err(ClientError::OutOfStock(_))));
    assert!(matches!(&results[2], Err(ClientError::NotFound(_))));
    assert!(matches!(&results[3], Err(ClientError::Unprocessable(_))));
    assert!(matches!(&results[4], Ok(other) if *other != id));
    let ledger = order.ledger().await.expect("the ledger");
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    assert!(matches!(
        order.buy_many(&BuysRequest { buys: Vec::new() }).await,
        Err(ClientError::BadRequest(_))
    ));
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_run_keeps_every_promise() {
    let test = TestCluster::start(Options {
        stock: Some(40),
        ..Options::default()
    })
    .await;
    let replicas = replica_urls(&test)
        .clients(&test.options())
        .expect("clients");
    let before = replicas.collect().await.expect("state");
    let config = LoadConfig {
        requests: Some(600),
        concurrency: 12,
        mix: "lookup=30,search=30,buy=40".parse::<Mix>().expect("mix"),
        ..LoadConfig::default()
    };
    let report = load::run(&test.store(), &config).await;
    assert_eq!(report.requests, 600);
    let buys = &report.operations[&Operation::Buy];
    // Some items sell out (7 items x 40 copies, ~240 buys spread at random).
    assert_eq!(buys.ok as usize, report.acked_buys.len());
    assert_eq!(buys.count, buys.ok + buys.errors.values().sum::<u64>());
    assert!(
        buys.errors.keys().all(|k| k == "out_of_stock"),
        "{:?}",
        buys.errors
    );
    let lookups = &report.operations[&Operation::Lookup];
    assert_eq!(lookups.ok, lookups.count);
    assert!(lookups.latency_ms.p50 > 0.0 && lookups.latency_ms.p50 <= lookups.latency_ms.max);

    let after = replicas.collect().await.expect("state");
    assert_eq!(
        check(&Expected::baseline(&before), &after, &report.acked_buys),
        Vec::new()
    );
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_run_keeps_its_rate() {
    let test = TestCluster::start(Options::default()).await;
    let config = LoadConfig {
        requests: Some(100),
        rate: Some(200.0),
        concurrency: 8,
        ..LoadConfig::default()
    };
    let report = load::run(&test.store(), &config).await;
    assert_eq!(report.requests, 100);
    // 100 requests due over 0.5 s: the run cannot be shorter than that.
    assert!(report.elapsed_s >= 0.49, "{}", report.elapsed_s);
    assert!(report.mode.starts_with("open"));
    test.shutdown().await;
}
