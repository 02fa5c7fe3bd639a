//! No cache: every read goes to a backend.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{Cache, CacheStats};

/// A cache that holds nothing (every get is a miss).
#[derive(Debug, Default)]
pub struct NoCache {
    misses: AtomicU64,
}

impl Cache for NoCache {
    fn get(&self, _key: &str) -> Option<Bytes> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn generation(&self) -> u64 {
        0
    }

    fn fill(&self, _key: &str, _value: Bytes, _generation: u64) -> bool {
        false
    }

    fn invalidate(&self, _key: &str) {}

    fn clear(&self) {}

    fn stats(&self) -> CacheStats {
        CacheStats {
            misses: self.misses.load(Ordering::Relaxed),
            ..CacheStats::default()
        }
    }
}
