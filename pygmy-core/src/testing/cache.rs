//! The [`Cache`] contract for a backend that holds values: what the
//! frontend relies on to never serve a value older than an invalidation.
//! Run against the LRU cache in this crate's tests, and against yours:
//!
//! ```
//! use std::num::NonZeroUsize;
//! use std::time::Duration;
//! use pygmy_core::cache::LruCache;
//! use pygmy_core::testing::cache;
//!
//! cache::run(|| {
//!     Box::new(LruCache::new(NonZeroUsize::new(8).unwrap(), Duration::from_secs(60)))
//! });
//! ```

use bytes::Bytes;

use crate::cache::Cache;

/// Runs every check, each on a new empty cache from `make` (room for at
/// least 8 values, a TTL of a minute or more); panics at the first that
/// fails.
pub fn run<F>(make: F)
where
    F: Fn() -> Box<dyn Cache>,
{
    a_fill_is_served_until_invalidated(&*make());
    a_fill_that_began_before_an_invalidation_is_dropped(&*make());
    a_clear_drops_every_key_and_every_fill_begun_before_it(&*make());
    a_forgotten_invalidation_still_refuses_older_fills(&*make());
}

/// A check of the suite (see [`run`]).
pub fn a_fill_is_served_until_invalidated(cache: &dyn Cache) {
    assert_eq!(cache.get("lookup:1"), None);
    let generation = cache.generation();
    assert!(cache.fill("lookup:1", Bytes::from_static(b"v1"), generation));
    assert_eq!(cache.get("lookup:1"), Some(Bytes::from_static(b"v1")));
    cache.invalidate("lookup:1");
    assert_eq!(cache.get("lookup:1"), None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));
}

/// A check of the suite (see [`run`]).
pub fn a_fill_that_began_before_an_invalidation_is_dropped(cache: &dyn Cache) {
    let before = cache.generation();
    // A buy lands while the miss is still at the backend...
    cache.invalidate("lookup:1");
    // ...so the old answer the miss brings back must not be cached.
    assert!(!cache.fill("lookup:1", Bytes::from_static(b"old"), before));
    assert_eq!(cache.get("lookup:1"), None);
    assert_eq!(cache.stats().stale_fills, 1);
    // A fill that began after the invalidation is kept.
    let after = cache.generation();
    assert!(cache.fill("lookup:1", Bytes::from_static(b"new"), after));
    // Other keys are not affected by the invalidation of lookup:1.
    assert!(cache.fill("lookup:2", Bytes::from_static(b"two"), before));
}

/// A check of the suite (see [`run`]).
pub fn a_clear_drops_every_key_and_every_fill_begun_before_it(cache: &dyn Cache) {
    let before = cache.generation();
    assert!(cache.fill("lookup:1", Bytes::from_static(b"one"), before));
    assert!(cache.fill("search:x", Bytes::from_static(b"x"), before));
    let under_way = cache.generation();
    cache.clear();
    assert_eq!(cache.get("lookup:1"), None);
    assert_eq!(cache.get("search:x"), None);
    // A miss that was at the backend during the clear brings back what
    // may be old: refused, for keys cached before and never seen alike.
    assert!(!cache.fill("lookup:1", Bytes::from_static(b"old"), under_way));
    assert!(!cache.fill("lookup:9", Bytes::from_static(b"old"), under_way));
    let after = cache.generation();
    assert!(cache.fill("lookup:1", Bytes::from_static(b"new"), after));
    assert_eq!(cache.get("lookup:1"), Some(Bytes::from_static(b"new")));
}

/// A check of the suite (see [`run`]).
pub fn a_forgotten_invalidation_still_refuses_older_fills(cache: &dyn Cache) {
    let before = cache.generation();
    cache.invalidate("lookup:1");
    // Push the tombstone of lookup:1 out of a bounded cache.
    let now = cache.generation();
    for key in 0..64 {
        assert!(cache.fill(&format!("other:{key}"), Bytes::from_static(b"x"), now));
    }
    assert!(!cache.fill("lookup:1", Bytes::from_static(b"old"), before));
}
