//! The [`CatalogStore`] contract: every check a catalog backend must pass,
//! run against the memory and SQLite backends in this crate's tests, and
//! against yours:
//!
//! ```
//! use std::sync::Arc;
//! use pygmy_core::catalog::memory::MemoryCatalog;
//! use pygmy_core::testing::catalog;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! catalog::run(|| Arc::new(MemoryCatalog::new())).await;
//! # }
//! ```

use std::sync::Arc;

use crate::catalog::{CatalogCommand, CatalogOutcome, CatalogStore};
use crate::journal::{Entry, Op, OpId, Source};
use crate::types::{default_books, Cost, ItemId};

/// Runs every check, each on a new empty store from `make`; panics at the
/// first that fails. Run it on a multi-threaded runtime: one check races
/// sales from many tasks.
pub async fn run<F>(make: F)
where
    F: Fn() -> Arc<dyn CatalogStore>,
{
    seeds_once_and_reads(make()).await;
    sells_until_sold_out(make()).await;
    updates_are_checked_and_atomic(make()).await;
    an_op_id_applies_once(make()).await;
    the_log_reads_back_per_origin(make()).await;
    a_batch_of_peer_ops_applies_whole_or_not_at_all(make()).await;
    concurrent_sales_never_oversell(make()).await;
    the_reconcilers_progress_only_moves_forward(make()).await;
}

/// The source of an op proposed at replica `catalog-a`.
pub fn local() -> Source {
    Source::Local {
        node: "catalog-a".to_owned(),
    }
}

fn op(id: &str, cmd: CatalogCommand) -> Op<CatalogCommand> {
    Op {
        id: OpId(id.to_owned()),
        cmd,
    }
}

/// The sale of one copy of `item` under op id `id`.
pub fn sell(id: &str, item: i64) -> Op<CatalogCommand> {
    op(id, CatalogCommand::Sell { item: ItemId(item) })
}

fn restock(id: &str, item: i64, count: i64) -> Op<CatalogCommand> {
    op(
        id,
        CatalogCommand::Update {
            item: ItemId(item),
            count: Some(count),
            cost: None,
        },
    )
}

/// Seeds the seed's books, each with `stock` copies.
pub async fn seeded(store: &Arc<dyn CatalogStore>, stock: i64) {
    let books = default_books()
        .into_iter()
        .map(|mut b| {
            b.count = stock;
            b
        })
        .collect();
    assert!(store.seed(books).await.expect("seed"));
}

/// The stock of `item`.
pub async fn count(store: &Arc<dyn CatalogStore>, item: i64) -> i64 {
    store
        .book(ItemId(item))
        .await
        .expect("read")
        .expect("book exists")
        .count
}

/// A check of the suite (see [`run`]).
pub async fn seeds_once_and_reads(store: Arc<dyn CatalogStore>) {
    seeded(&store, 100).await;
    assert!(!store.seed(default_books()).await.expect("seed again"));
    assert_eq!(store.books(None).await.expect("all").len(), 7);
    let ds = store
        .books(Some("distributed systems".to_owned()))
        .await
        .expect("topic");
    assert_eq!(ds.iter().map(|b| b.id.0).collect::<Vec<_>>(), vec![1, 2, 5]);
    assert!(store
        .books(Some("no such topic".to_owned()))
        .await
        .expect("topic")
        .is_empty());
    // A topic is a value, never SQL.
    assert!(store
        .books(Some("' OR '1'='1".to_owned()))
        .await
        .expect("topic")
        .is_empty());
    assert_eq!(store.book(ItemId(99)).await.expect("read"), None);
    assert_eq!(
        store.book(ItemId(3)).await.expect("read"),
        Some(default_books()[2].clone())
    );
}

/// A check of the suite (see [`run`]).
pub async fn sells_until_sold_out(store: Arc<dyn CatalogStore>) {
    seeded(&store, 2).await;
    for (n, left) in [(1, 1), (2, 0)] {
        let outcome = store
            .apply(local(), sell(&format!("s{n}"), 1))
            .await
            .expect("sell");
        match outcome.outcome {
            CatalogOutcome::Sold { book } => assert_eq!(book.count, left),
            other => panic!("expected a sale, got {other:?}"),
        }
    }
    let outcome = store.apply(local(), sell("s3", 1)).await.expect("sell");
    assert_eq!(outcome.outcome, CatalogOutcome::SoldOut { item: ItemId(1) });
    assert_eq!(count(&store, 1).await, 0);
    let outcome = store.apply(local(), sell("s4", 42)).await.expect("sell");
    assert_eq!(
        outcome.outcome,
        CatalogOutcome::NoSuchItem { item: ItemId(42) }
    );
}

/// A check of the suite (see [`run`]).
pub async fn updates_are_checked_and_atomic(store: Arc<dyn CatalogStore>) {
    seeded(&store, 5).await;
    let applied = store
        .apply(local(), restock("u1", 2, 10))
        .await
        .expect("restock");
    assert!(matches!(applied.outcome, CatalogOutcome::Updated { ref book } if book.count == 15));
    // Below zero: refused, and the cost that came with it is not applied either.
    let refused = store
        .apply(
            local(),
            op(
                "u2",
                CatalogCommand::Update {
                    item: ItemId(2),
                    count: Some(-16),
                    cost: Cost::whole(99),
                },
            ),
        )
        .await
        .expect("apply");
    assert!(matches!(refused.outcome, CatalogOutcome::Refused { .. }));
    let book = store.book(ItemId(2)).await.expect("read").expect("exists");
    assert_eq!(
        (book.count, book.cost),
        (15, Cost::whole(10).expect("cost"))
    );
    let overflow = store
        .apply(local(), restock("u3", 2, i64::MAX))
        .await
        .expect("apply");
    assert!(matches!(overflow.outcome, CatalogOutcome::Refused { .. }));
    let priced = store
        .apply(
            local(),
            op(
                "u4",
                CatalogCommand::Update {
                    item: ItemId(2),
                    count: None,
                    cost: Cost::from_cents(1250),
                },
            ),
        )
        .await
        .expect("apply");
    assert!(
        matches!(priced.outcome, CatalogOutcome::Updated { ref book } if book.cost.cents() == 1250 && book.count == 15)
    );
}

/// A check of the suite (see [`run`]).
pub async fn an_op_id_applies_once(store: Arc<dyn CatalogStore>) {
    seeded(&store, 5).await;
    let first = store.apply(local(), sell("same", 1)).await.expect("sell");
    let again = store.apply(local(), sell("same", 1)).await.expect("sell");
    assert!(first.fresh);
    assert!(!again.fresh);
    assert_eq!(first.outcome, again.outcome);
    assert_eq!(count(&store, 1).await, 4);
    // Even from a peer, under another origin.
    let from_peer = store
        .apply(
            Source::Peer {
                origin: "catalog-b".to_owned(),
                origin_seq: 7,
            },
            sell("same", 1),
        )
        .await
        .expect("sell");
    assert!(!from_peer.fresh);
    assert_eq!(count(&store, 1).await, 4);
    // A repeat after a later sale answers the first outcome (4 left then)
    // and leaves the stock as the later sale left it.
    store.apply(local(), sell("later", 1)).await.expect("sell");
    let late_repeat = store.apply(local(), sell("same", 1)).await.expect("sell");
    assert_eq!(late_repeat.outcome, first.outcome);
    assert_eq!(count(&store, 1).await, 3);
    assert_eq!(
        store.outcome(&OpId("same".to_owned())).await.expect("read"),
        Some(first.outcome)
    );
    assert_eq!(
        store
            .outcome(&OpId("other".to_owned()))
            .await
            .expect("read"),
        None
    );
}

/// A check of the suite (see [`run`]).
pub async fn the_log_reads_back_per_origin(store: Arc<dyn CatalogStore>) {
    seeded(&store, 5).await;
    for n in 1..=3 {
        let applied = store
            .apply(local(), sell(&format!("l{n}"), 1))
            .await
            .expect("sell");
        assert_eq!(applied.origin_seq, Some(n));
    }
    store
        .apply(
            Source::Peer {
                origin: "catalog-b".to_owned(),
                origin_seq: 4,
            },
            restock("p4", 3, 1),
        )
        .await
        .expect("peer op");
    let ours = store.entries("catalog-a", 1, 10).await.expect("entries");
    assert_eq!(
        ours.iter()
            .map(|e| (e.origin_seq, e.op.id.0.as_str()))
            .collect::<Vec<_>>(),
        vec![(2, "l2"), (3, "l3")]
    );
    assert_eq!(
        store
            .entries("catalog-a", 0, 1)
            .await
            .expect("entries")
            .len(),
        1
    );
    let theirs = store.entries("catalog-b", 0, 10).await.expect("entries");
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].op, restock("p4", 3, 1));
    let mut waters = store.high_waters().await.expect("waters");
    waters.sort_by(|a, b| a.origin.cmp(&b.origin));
    assert_eq!(
        waters
            .iter()
            .map(|w| (w.origin.as_str(), w.seq))
            .collect::<Vec<_>>(),
        vec![("catalog-a", 3), ("catalog-b", 4)]
    );
}

/// A check of the suite (see [`run`]).
pub async fn a_batch_of_peer_ops_applies_whole_or_not_at_all(store: Arc<dyn CatalogStore>) {
    seeded(&store, 5).await;
    let entry = |seq: u64, op: Op<CatalogCommand>| Entry {
        origin: "catalog-b@1".to_owned(),
        origin_seq: seq,
        op,
    };
    let batch = vec![
        entry(1, sell("b1", 1)),
        entry(2, restock("b2", 1, 10)),
        entry(3, sell("b3", 1)),
    ];
    store.apply_entries(batch.clone()).await.expect("batch");
    assert_eq!(count(&store, 1).await, 13);
    assert_eq!(
        store
            .entries("catalog-b@1", 0, 10)
            .await
            .expect("entries")
            .len(),
        3
    );
    // A repeat of the batch changes nothing.
    store.apply_entries(batch).await.expect("repeat");
    assert_eq!(count(&store, 1).await, 13);
    // A batch with a collision (a place in the origin's sequence already
    // taken by another op) is refused whole: its first op is not applied.
    let bad = vec![entry(4, sell("b4", 1)), entry(2, sell("other", 1))];
    assert!(store.apply_entries(bad).await.is_err());
    assert_eq!(count(&store, 1).await, 13);
    assert_eq!(
        store.outcome(&OpId("b4".to_owned())).await.expect("read"),
        None
    );
    let waters = store.high_waters().await.expect("waters");
    assert_eq!(
        waters
            .iter()
            .find(|w| w.origin == "catalog-b@1")
            .map(|w| w.seq),
        Some(3)
    );
}

/// A check of the suite (see [`run`]).
pub async fn concurrent_sales_never_oversell(store: Arc<dyn CatalogStore>) {
    seeded(&store, 10).await;
    let mut tasks = Vec::new();
    for n in 0..50 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.apply(local(), sell(&format!("c{n}"), 1)).await
        }));
    }
    let mut sold = 0;
    for task in tasks {
        if let CatalogOutcome::Sold { .. } = task.await.expect("task").expect("sell").outcome {
            sold += 1;
        }
    }
    assert_eq!(sold, 10);
    assert_eq!(count(&store, 1).await, 0);
    assert_eq!(
        store.entries("catalog-a", 0, 100).await.expect("log").len(),
        50
    );
}

/// A check of the suite (see [`run`]): the reconciler's progress
/// ([`CatalogCommand::Reconciled`]) is none at first, then the highest
/// ever applied; it changes no book.
pub async fn the_reconcilers_progress_only_moves_forward(store: Arc<dyn CatalogStore>) {
    seeded(&store, 5).await;
    assert_eq!(store.reconciled(0).await.expect("read"), None);
    let reconciled = |shard: u32, shards: u32, upto: u64| {
        op(
            &CatalogCommand::reconciled_op_id(shard, upto).0,
            CatalogCommand::Reconciled {
                upto,
                shard,
                shards,
            },
        )
    };
    for (upto, after) in [(7, 7), (3, 7), (12, 12)] {
        let applied = store
            .apply(local(), reconciled(0, 1, upto))
            .await
            .expect("apply");
        assert_eq!(
            applied.outcome,
            CatalogOutcome::Reconciled { upto: after },
            "after {upto}"
        );
        assert_eq!(store.reconciled(0).await.expect("read"), Some(after));
    }
    // Each order shard's reconciler keeps its own progress: one shard's
    // does not move another's.
    store
        .apply(local(), reconciled(2, 3, 40))
        .await
        .expect("apply");
    assert_eq!(store.reconciled(2).await.expect("read"), Some(40));
    assert_eq!(store.reconciled(1).await.expect("read"), Some(0));
    assert_eq!(store.reconciled(0).await.expect("read"), Some(12));
    assert_eq!(count(&store, 1).await, 5, "no book changed");
}
