//! The store embedded in another program: a catalog and an order service,
//! each three replicas with their own SQLite file, replicated by raft over
//! an in-process transport. A few buys, the way an order node makes them
//! (sell under the buy's key, then record the order under the same key),
//! then a check that every replica agrees and nothing was oversold.
//!
//! `cargo run -p pygmy-examples --example embedded_store`

use std::sync::Arc;
use std::time::Duration;

use pygmy_core::catalog::{CatalogCommand, CatalogMachine, CatalogOutcome, CatalogStore};
use pygmy_core::journal::sqlite::{SqliteJournal, SqliteMachine};
use pygmy_core::journal::Op;
use pygmy_core::order::{OrderCommand, OrderMachine, OrderOutcome, OrderStore};
use pygmy_core::replication::loopback::Loopback;
use pygmy_core::replication::raft::{self, RaftConfig, RaftReplicator};
use pygmy_core::replication::Replicator;
use pygmy_core::types::{default_books, IdempotencyKey, ItemId};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One replica: its store, and the replicator that writes to it.
type Replica<M> = (Arc<SqliteJournal<M>>, Arc<dyn Replicator<M>>);

/// One replicated service: each replica's store and replicator.
struct Service<M: SqliteMachine> {
    replicas: Vec<Replica<M>>,
    _net: Arc<Loopback<M>>,
}

impl<M: SqliteMachine> Service<M> {
    /// Three replicas named `<prefix>-0..2`, files in `dir`, each prepared
    /// by `seed` before it joins.
    async fn start<F, Fut>(dir: &std::path::Path, prefix: &str, seed: F) -> Result<Self, Error>
    where
        F: Fn(Arc<SqliteJournal<M>>) -> Fut,
        Fut: std::future::Future<Output = Result<(), Error>>,
    {
        let names: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
        let net = Loopback::new();
        let mut replicas = Vec::new();
        for name in &names {
            let path = dir.join(format!("{name}.db"));
            // Opening a SQLite file blocks: not on the runtime's threads.
            let opened = path.clone();
            let journal = Arc::new(
                tokio::task::spawn_blocking(move || SqliteJournal::<M>::open(opened)).await??,
            );
            seed(Arc::clone(&journal)).await?;
            let (log, machine) = raft::sqlite::open(Arc::clone(&journal), &path).await?;
            let config = RaftConfig::new(name.clone(), names.clone());
            let replicator: Arc<dyn Replicator<M>> =
                Arc::new(RaftReplicator::start(config, log, machine, net.endpoint(name)).await?);
            net.register(name, &replicator);
            replicas.push((journal, replicator));
        }
        // Wait for a leader.
        for _ in 0..500 {
            if replicas.iter().all(|(_, r)| r.is_ready()) {
                return Ok(Service {
                    replicas,
                    _net: net,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("no raft leader was elected".into())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let catalog = Service::<CatalogMachine>::start(dir.path(), "catalog", |store| async move {
        store.seed(default_books()).await?;
        Ok(())
    })
    .await?;
    let orders = Service::<OrderMachine>::start(dir.path(), "order", |_| async { Ok(()) }).await?;

    // Five buys of book 7, each proposed to a different replica; one is
    // retried with its key and buys nothing more.
    let mut keys = Vec::new();
    for i in 0..5 {
        let key = IdempotencyKey::parse(&format!("embedded-buy-{i}"))?;
        let (_, seller) = &catalog.replicas[i % 3];
        let sale = Op {
            id: CatalogCommand::sale_op_id(&key),
            cmd: CatalogCommand::Sell { item: ItemId(7) },
        };
        let CatalogOutcome::Sold { book } = seller.propose(sale).await? else {
            return Err("book 7 is sold out".into());
        };
        let (_, recorder) = &orders.replicas[i % 3];
        let record = Op {
            id: OrderCommand::op_id(&key),
            cmd: OrderCommand::Record {
                key: key.clone(),
                item: ItemId(7),
                created: "2026-11-25T00:00:00Z".to_owned(),
                base: 0,
            },
        };
        let OrderOutcome::Recorded { order } = recorder.propose(record).await?;
        println!("order {} for book 7, {} left", order.id, book.count);
        keys.push(key);
    }
    let retry = Op {
        id: CatalogCommand::sale_op_id(&keys[0]),
        cmd: CatalogCommand::Sell { item: ItemId(7) },
    };
    catalog.replicas[2].1.propose(retry).await?;

    // Every replica, read fresh, agrees: 100 - 5 copies, 5 orders.
    for (store, replicator) in &catalog.replicas {
        replicator.linearize().await?;
        let count = store.book(ItemId(7)).await?.map(|b| b.count);
        if count != Some(95) {
            return Err(format!("a catalog replica has {count:?} copies, not 95").into());
        }
    }
    for (store, replicator) in &orders.replicas {
        replicator.linearize().await?;
        let n = store.orders().await?.len();
        if n != 5 {
            return Err(format!("an order replica has {n} orders, not 5").into());
        }
    }
    println!("3 catalog and 3 order replicas agree: 95 copies left, 5 orders");
    Ok(())
}
