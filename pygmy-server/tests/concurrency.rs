//! The seed's oversell, tried for real: 50 simultaneous buys of an item
//! with 10 in stock, through the frontend, spread over both order replicas
//! (and so over both catalog replicas).

use std::sync::Arc;

use pygmy_client::ClientError;
use pygmy_core::topology::Role;
use pygmy_core::types::ItemId;
use pygmy_server::testing::{Options, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_buys_of_ten_copies_sell_exactly_ten() {
    let test = TestCluster::start(Options {
        stock: Some(10),
        ..Options::default()
    })
    .await;
    let store = Arc::new(test.store());
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut buys = Vec::new();
    for _ in 0..50 {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        buys.push(tokio::spawn(async move {
            barrier.wait().await;
            store.buy(ItemId(1)).await
        }));
    }
    let (mut sold, mut sold_out) = (Vec::new(), 0);
    for buy in buys {
        match buy.await.expect("task") {
            Ok(order) => sold.push(order),
            Err(ClientError::OutOfStock(message)) => {
                assert_eq!(
                    message,
                    "The item with id 1 is no longer present in the catalog server"
                );
                sold_out += 1;
            }
            Err(other) => panic!("unexpected failure: {other}"),
        }
    }
    assert_eq!((sold.len(), sold_out), (10, 40));
    assert_eq!(test.stocks(ItemId(1)).await, vec![0, 0]);

    let mut replicas = Vec::new();
    for name in test.names(Role::Order) {
        replicas.push(test.order(&name).ledger().await.expect("orders"));
    }
    assert_eq!(replicas[0].len(), 10);
    assert_eq!(
        replicas[0], replicas[1],
        "both order replicas hold the same orders"
    );
    let mut ids: Vec<_> = replicas[0].iter().map(|o| o.id).collect();
    sold.sort_unstable();
    ids.sort_unstable();
    assert_eq!(
        ids, sold,
        "every acknowledged buy is an order, and nothing else is"
    );
    // Buying more changes nothing.
    assert!(matches!(
        test.store().buy(ItemId(1)).await,
        Err(ClientError::OutOfStock(_))
    ));
    assert_eq!(test.stocks(ItemId(1)).await, vec![0, 0]);
    test.shutdown().await;
}
