//! A bounded LRU cache (the `lru` crate) with a TTL backstop.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Cache, CacheStats};

/// A key's slot: its value, or a tombstone that remembers when the key was
/// last invalidated (so an older fill is refused).
struct Slot {
    value: Option<(Bytes, Instant)>,
    invalidated_at: u64,
}

struct Inner {
    slots: lru::LruCache<String, Slot>,
    generation: u64,
    /// The newest invalidation among slots the size bound pushed out: a fill
    /// older than it is refused for any key we no longer remember.
    forgotten_floor: u64,
    stats: CacheStats,
}

/// An LRU cache of at most `capacity` keys (values and tombstones alike),
/// each value kept at most `ttl`.
pub struct LruCache {
    inner: Mutex<Inner>,
    ttl: Duration,
}

impl LruCache {
    /// A cache of `capacity` keys, each value living at most `ttl`.
    pub fn new(capacity: NonZeroUsize, ttl: Duration) -> Self {
        LruCache {
            inner: Mutex::new(Inner {
                slots: lru::LruCache::new(capacity),
                generation: 0,
                forgotten_floor: 0,
                stats: CacheStats::default(),
            }),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every method leaves the state whole between statements.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn put(&mut self, key: String, slot: Slot) {
        if let Some((old_key, old)) = self.slots.push(key.clone(), slot) {
            if old_key != key {
                self.forgotten_floor = self.forgotten_floor.max(old.invalidated_at);
                if old.value.is_some() {
                    self.stats.evictions += 1;
                }
            }
        }
    }
}

impl Cache for LruCache {
    fn get(&self, key: &str) -> Option<Bytes> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let found = match inner.slots.get_mut(key) {
            Some(Slot {
                value: value @ Some(_),
                ..
            }) => match value {
                Some((bytes, at)) if at.elapsed() < self.ttl => Some(bytes.clone()),
                _ => {
                    *value = None;
                    inner.stats.evictions += 1;
                    None
                }
            },
            _ => None,
        };
        match found {
            Some(_) => inner.stats.hits += 1,
            None => inner.stats.misses += 1,
        }
        found
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn fill(&self, key: &str, value: Bytes, generation: u64) -> bool {
        let mut inner = self.lock();
        let last_invalidated = match inner.slots.peek(key) {
            Some(slot) => slot.invalidated_at,
            None => inner.forgotten_floor,
        };
        if last_invalidated > generation {
            inner.stats.stale_fills += 1;
            return false;
        }
        inner.put(
            key.to_owned(),
            Slot {
                value: Some((value, Instant::now())),
                invalidated_at: last_invalidated,
            },
        );
        true
    }

    fn invalidate(&self, key: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        inner.put(
            key.to_owned(),
            Slot {
                value: None,
                invalidated_at: generation,
            },
        );
    }

    fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.forgotten_floor = inner.generation;
        let dropped = inner
            .slots
            .iter()
            .filter(|(_, s)| s.value.is_some())
            .count();
        inner.stats.evictions += dropped as u64;
        inner.slots.clear();
    }

    fn stats(&self) -> CacheStats {
        self.lock().stats
    }
}
