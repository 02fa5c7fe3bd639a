//! The catalog store contract (`pygmy_core::testing::catalog`), run
//! against every backend, and what only SQLite promises.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pygmy_core::catalog::memory::MemoryCatalog;
use pygmy_core::catalog::sqlite::SqliteCatalog;
use pygmy_core::catalog::CatalogStore;
use pygmy_core::testing::catalog::{self, count, local, seeded, sell};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_catalog_passes_the_suite() {
    catalog::run(|| Arc::new(MemoryCatalog::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_catalog_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let made = AtomicUsize::new(0);
    catalog::run(|| {
        let n = made.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("catalog-{n}.db"));
        Arc::new(SqliteCatalog::open(path).expect("open"))
    })
    .await;
}

#[tokio::test]
async fn sqlite_catalog_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("catalog.db");
    {
        let store: Arc<dyn CatalogStore> = Arc::new(SqliteCatalog::open(&path).expect("open"));
        seeded(&store, 3).await;
        store.apply(local(), sell("d1", 1)).await.expect("sell");
    }
    let store: Arc<dyn CatalogStore> = Arc::new(SqliteCatalog::open(&path).expect("reopen"));
    assert_eq!(count(&store, 1).await, 2);
    assert!(
        !store
            .apply(local(), sell("d1", 1))
            .await
            .expect("repeat")
            .fresh
    );
    assert_eq!(
        store
            .apply(local(), sell("d2", 1))
            .await
            .expect("sell")
            .origin_seq,
        Some(2)
    );
}

/// One apply of many ops raises each origin's high water once, to its
/// highest sequence, whatever the order of the ops; a local op after a
/// peer's op of the same name, in the same apply, is numbered after it.
#[tokio::test]
async fn one_apply_raises_each_origin_to_its_highest_op() {
    use pygmy_core::journal::{HighWater, Journal, Source};

    let dir = tempfile::tempdir().expect("tempdir");
    let journal = SqliteCatalog::open(dir.path().join("catalog.db")).expect("open");
    assert!(journal
        .seed(pygmy_core::types::default_books())
        .await
        .expect("seed"));
    let peer = |origin: &str, seq| Source::Peer {
        origin: origin.to_owned(),
        origin_seq: seq,
    };
    let outcomes = journal
        .apply_with_meta(
            vec![
                (peer("catalog-b", 7), Some(sell("b7", 1)), None),
                (peer("catalog-c", 2), Some(sell("c2", 1)), None),
                (peer("catalog-b", 5), Some(sell("b5", 1)), None),
                (peer("catalog-a", 4), Some(sell("a4", 1)), None),
                (local(), Some(sell("a-local", 1)), None),
            ],
            Vec::new(),
            None,
        )
        .await
        .expect("apply");
    assert_eq!(outcomes.iter().filter(|o| o.is_some()).count(), 5);
    let mut waters = journal.high_waters().await.expect("waters");
    waters.sort_by(|a, b| a.origin.cmp(&b.origin));
    let water = |origin: &str, seq| HighWater {
        origin: origin.to_owned(),
        seq,
    };
    assert_eq!(
        waters,
        vec![
            water("catalog-a", 5),
            water("catalog-b", 7),
            water("catalog-c", 2)
        ],
        "the local op follows catalog-a's 4 (applied before it, in the same apply)"
    );
    // The next local op, in an apply of its own, follows on.
    let next = journal
        .apply(local(), sell("a-next", 1))
        .await
        .expect("sell");
    assert_eq!(next.origin_seq, Some(6));
}

/// A new file has pages of `PAGE_SIZE`; a file made with SQLite's default
/// pages (as before) keeps them, and serves as it did.
#[tokio::test]
async fn a_new_file_has_small_pages_and_an_older_file_keeps_its_own() {
    use pygmy_core::journal::sqlite::PAGE_SIZE;
    let page_size = |path: &std::path::Path| -> u32 {
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.query_row("PRAGMA page_size", [], |row| row.get(0))
            .expect("page_size")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let new = dir.path().join("new.db");
    drop(SqliteCatalog::open(&new).expect("open"));
    assert_eq!(page_size(&new), PAGE_SIZE);

    let older = dir.path().join("older.db");
    {
        let conn = rusqlite::Connection::open(&older).expect("open");
        conn.pragma_update(None, "page_size", 4096)
            .expect("page_size");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("WAL");
    }
    {
        let store: Arc<dyn CatalogStore> = Arc::new(SqliteCatalog::open(&older).expect("open"));
        seeded(&store, 3).await;
        store.apply(local(), sell("o1", 2)).await.expect("sell");
    }
    let store: Arc<dyn CatalogStore> = Arc::new(SqliteCatalog::open(&older).expect("reopen"));
    assert_eq!(count(&store, 2).await, 2);
    drop(store);
    assert_eq!(page_size(&older), 4096);
}
