//! The broadcast replicator over the in-process transport: what it promises
//! when nothing fails, how it recovers, and the weakness it keeps.

use std::sync::Arc;
use std::time::Duration;

use pygmy_core::catalog::memory::MemoryCatalog;
use pygmy_core::catalog::{CatalogCommand, CatalogMachine, CatalogOutcome, CatalogStore};
use pygmy_core::journal::{Op, OpId};
use pygmy_core::replication::broadcast::{Broadcast, BroadcastConfig};
use pygmy_core::replication::loopback::Loopback;
use pygmy_core::replication::Replicator;
use pygmy_core::types::{default_books, ItemId};

const NAMES: [&str; 3] = ["c0", "c1", "c2"];

struct Replica {
    store: Arc<MemoryCatalog>,
    replicator: Arc<dyn Replicator<CatalogMachine>>,
    broadcast: Arc<Broadcast<CatalogMachine>>,
}

fn config(name: &str) -> BroadcastConfig {
    let mut config = BroadcastConfig::new(name, NAMES.iter().map(|s| s.to_string()).collect());
    config.call_timeout = Duration::from_millis(500);
    config.ack_timeout = Duration::from_millis(500);
    config
}

async fn start(
    net: &Arc<Loopback<CatalogMachine>>,
    name: &str,
    store: Arc<MemoryCatalog>,
) -> Replica {
    let broadcast =
        Arc::new(Broadcast::start(config(name), store.clone(), net.endpoint(name)).expect("start"));
    let replicator: Arc<dyn Replicator<CatalogMachine>> = broadcast.clone();
    net.register(name, &replicator);
    for _ in 0..200 {
        if replicator.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(replicator.is_ready(), "{name} did not become ready");
    Replica {
        store,
        replicator,
        broadcast,
    }
}

/// Waits until every replica sees every peer up (the replicas of a test
/// start one after another, so the first ones find the others down).
async fn connected(replicas: &[Replica]) {
    for _ in 0..200 {
        if replicas
            .iter()
            .all(|r| r.broadcast.peers().iter().all(|p| p.up))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("replicas did not connect");
}

async fn seeded_store(stock: i64) -> Arc<MemoryCatalog> {
    let store = Arc::new(MemoryCatalog::new());
    let mut books = default_books();
    for book in &mut books {
        book.count = stock;
    }
    store.seed(books).await.expect("seed");
    store
}

async fn cluster(stock: i64) -> (Arc<Loopback<CatalogMachine>>, Vec<Replica>) {
    let net = Loopback::new();
    let mut replicas = Vec::new();
    for name in NAMES {
        replicas.push(start(&net, name, seeded_store(stock).await).await);
    }
    connected(&replicas).await;
    (net, replicas)
}

fn sell(id: &str) -> Op<CatalogCommand> {
    Op {
        id: OpId(id.to_owned()),
        cmd: CatalogCommand::Sell { item: ItemId(1) },
    }
}

async fn stock(replica: &Replica) -> i64 {
    replica
        .store
        .book(ItemId(1))
        .await
        .expect("read")
        .expect("exists")
        .count
}

async fn stocks(replicas: &[Replica]) -> Vec<i64> {
    let mut out = Vec::new();
    for r in replicas {
        out.push(stock(r).await);
    }
    out
}

async fn settle(replicas: &[Replica], expected: i64) {
    for _ in 0..200 {
        if stocks(replicas).await.iter().all(|&s| s == expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "replicas did not converge to {expected}: {:?}",
        stocks(replicas).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sales_through_every_replica_never_oversell() {
    let (_net, replicas) = cluster(10).await;
    let mut tasks = Vec::new();
    for n in 0..45 {
        let replicator = Arc::clone(&replicas[n % 3].replicator);
        tasks.push(tokio::spawn(async move {
            replicator.propose(sell(&format!("b{n}"))).await
        }));
    }
    let mut sold = 0;
    for task in tasks {
        if let CatalogOutcome::Sold { .. } = task.await.expect("task").expect("propose") {
            sold += 1;
        }
    }
    assert_eq!(sold, 10);
    // Acknowledged means on every replica that is up: no waiting needed.
    assert_eq!(stocks(&replicas).await, vec![0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_op_is_applied_once_everywhere() {
    let (_net, replicas) = cluster(10).await;
    let first = replicas[2]
        .replicator
        .propose(sell("once"))
        .await
        .expect("propose");
    let again = replicas[1]
        .replicator
        .propose(sell("once"))
        .await
        .expect("propose");
    assert_eq!(first, again);
    assert_eq!(stocks(&replicas).await, vec![9, 9, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_without_the_first_replica_and_it_catches_up() {
    let (net, mut replicas) = cluster(10).await;
    net.set_cut("c0", true);
    for n in 0..3 {
        replicas[2]
            .replicator
            .propose(sell(&format!("w{n}")))
            .await
            .expect("propose");
    }
    assert_eq!(stocks(&replicas[1..]).await, vec![7, 7]);
    assert_eq!(stock(&replicas[0]).await, 10, "c0 was cut off");
    // c0 restarts on its old state and catches up before it serves.
    net.set_cut("c0", false);
    let old = replicas.remove(0);
    drop((old.replicator, old.broadcast));
    replicas.insert(0, start(&net, "c0", old.store).await);
    assert_eq!(stock(&replicas[0]).await, 7);
    connected(&replicas).await;
    replicas[0]
        .replicator
        .propose(sell("after"))
        .await
        .expect("propose");
    settle(&replicas, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_was_down_gets_what_it_missed() {
    let (net, replicas) = cluster(10).await;
    net.set_cut("c2", true);
    for n in 0..4 {
        replicas[0]
            .replicator
            .propose(sell(&format!("m{n}")))
            .await
            .expect("propose");
    }
    assert_eq!(stock(&replicas[2]).await, 10);
    net.set_cut("c2", false);
    // No restart: c0's shipper resends from c2's high-water mark.
    settle(&replicas, 6).await;
}

/// The weakness the fault tests must catch: with the first replica cut off
/// from the others but still taking writes, two replicas sell the last copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_makes_broadcast_oversell() {
    let (net, replicas) = cluster(1).await;
    net.set_cut("c0", true);
    let a = replicas[0]
        .replicator
        .propose(sell("x"))
        .await
        .expect("propose");
    let b = replicas[1]
        .replicator
        .propose(sell("y"))
        .await
        .expect("propose");
    assert!(matches!(a, CatalogOutcome::Sold { .. }));
    assert!(
        matches!(b, CatalogOutcome::Sold { .. }),
        "broadcast should oversell here"
    );
}

#[tokio::test]
async fn a_replica_must_be_in_its_own_list() {
    let net: Arc<Loopback<CatalogMachine>> = Loopback::new();
    let config = BroadcastConfig::new("stranger", vec!["c0".to_owned()]);
    assert!(Broadcast::start(
        config,
        Arc::new(MemoryCatalog::new()),
        net.endpoint("stranger")
    )
    .is_err());
}

/// A clean restart of the first replica, with sales of every item going on
/// at every replica all along: no more sales of an item may be answered
/// than it had in stock, and the replicas must agree at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_first_replica_under_load_never_oversells() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
    const STOCK: i64 = 150;
    const ITEMS: usize = 7;
    const SELLERS: usize = 4;
    let (net, mut replicas) = cluster(STOCK).await;
    let sold: Arc<Vec<AtomicI64>> = Arc::new((0..ITEMS).map(|_| AtomicI64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut sellers = Vec::new();
    let spawn_seller = |replicator: Arc<dyn Replicator<CatalogMachine>>, name: String| {
        let (sold, stop) = (Arc::clone(&sold), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Relaxed) {
                n += 1;
                let item = n % ITEMS;
                let op = Op {
                    id: OpId(format!("{name}-{n}")),
                    cmd: CatalogCommand::Sell {
                        item: ItemId(item as i64 + 1),
                    },
                };
                if let Ok(CatalogOutcome::Sold { .. }) = replicator.propose(op).await {
                    sold[item].fetch_add(1, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    for (i, r) in replicas.iter().enumerate().skip(1) {
        for k in 0..SELLERS {
            sellers.push(spawn_seller(Arc::clone(&r.replicator), format!("s{i}.{k}")));
        }
    }
    // c0 crashes (cut off); the others go on selling through c1 until
    // little is left...
    net.set_cut("c0", true);
    let left = |r: &Replica| {
        let store = Arc::clone(&r.store);
        async move {
            store
                .books(None)
                .await
                .expect("books")
                .iter()
                .map(|b| b.count)
                .sum::<i64>()
        }
    };
    while left(&replicas[1]).await > ITEMS as i64 * 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let old = replicas.remove(0);
    drop((old.replicator, old.broadcast));
    net.set_cut("c0", false);
    // ...then c0 comes back on its old state and sells at once, beside them.
    let c0 = start(&net, "c0", old.store).await;
    for k in 0..SELLERS {
        sellers.push(spawn_seller(Arc::clone(&c0.replicator), format!("s0.{k}")));
    }
    replicas.insert(0, c0);
    for _ in 0..500 {
        let mut remaining = 0;
        for r in &replicas {
            remaining += left(r).await;
        }
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Relaxed);
    for seller in sellers {
        seller.await.expect("seller");
    }
    let sold: Vec<i64> = sold.iter().map(|s| s.load(Relaxed)).collect();
    assert!(
        sold.iter().all(|&s| s <= STOCK),
        "sales answered per item {sold:?} for {STOCK} copies each"
    );
    for r in &replicas {
        let books = r.store.books(None).await.expect("books");
        let counts: Vec<i64> = books.iter().map(|b| b.count).collect();
        assert_eq!(counts, sold.iter().map(|s| STOCK - s).collect::<Vec<_>>());
    }
}
