//! A cache backend of your own, checked by the conformance suite that
//! `pygmy-core` exports (feature `testing`), the way a third-party store
//! would be.
//!
//! `cargo run -p pygmy-examples --example custom_backend`

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use pygmy_core::cache::{Cache, CacheStats};

/// An unbounded cache: a map under one lock. Each key remembers the
/// generation it was last invalidated at, and a clear raises a floor, so a
/// fill that began before either is refused.
#[derive(Default)]
struct MapCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    values: HashMap<String, Bytes>,
    invalidated: HashMap<String, u64>,
    floor: u64,
    generation: u64,
    stats: CacheStats,
}

impl MapCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Cache for MapCache {
    fn get(&self, key: &str) -> Option<Bytes> {
        let mut inner = self.lock();
        let value = inner.values.get(key).cloned();
        match value {
            Some(_) => inner.stats.hits += 1,
            None => inner.stats.misses += 1,
        }
        value
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn fill(&self, key: &str, value: Bytes, generation: u64) -> bool {
        let mut inner = self.lock();
        let invalidated = inner.invalidated.get(key).copied().unwrap_or(0);
        if generation < inner.floor || generation < invalidated {
            inner.stats.stale_fills += 1;
            return false;
        }
        inner.values.insert(key.to_owned(), value);
        true
    }

    fn invalidate(&self, key: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        let now = inner.generation;
        inner.values.remove(key);
        inner.invalidated.insert(key.to_owned(), now);
    }

    fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.floor = inner.generation;
        inner.values.clear();
    }

    fn stats(&self) -> CacheStats {
        self.lock().stats
    }
}

fn main() {
    // Panics with what is wrong if the backend breaks the contract.
    pygmy_core::testing::cache::run(|| Box::new(MapCache::default()));
    println!("MapCache passes pygmy-core's cache conformance suite");
}
