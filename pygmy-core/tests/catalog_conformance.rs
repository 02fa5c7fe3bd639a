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
