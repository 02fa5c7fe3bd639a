//! The cache contract, run against every backend where it applies.

use std::num::NonZeroUsize;
use std::time::Duration;

use bytes::Bytes;
use pygmy_core::cache::{lookup_key, search_key, Cache, LruCache, NoCache};
use pygmy_core::types::ItemId;

fn lru(capacity: usize) -> LruCache {
    LruCache::new(
        NonZeroUsize::new(capacity).expect("non-zero"),
        Duration::from_secs(60),
    )
}

#[test]
fn keys_name_the_request() {
    assert_eq!(lookup_key(ItemId(3)), "lookup:3");
    assert_eq!(search_key("graduate school"), "search:graduate school");
}

#[test]
fn a_fill_is_served_until_invalidated() {
    let cache = lru(8);
    assert_eq!(cache.get("lookup:1"), None);
    let generation = cache.generation();
    assert!(cache.fill("lookup:1", Bytes::from_static(b"v1"), generation));
    assert_eq!(cache.get("lookup:1"), Some(Bytes::from_static(b"v1")));
    cache.invalidate("lookup:1");
    assert_eq!(cache.get("lookup:1"), None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));
}

#[test]
fn a_fill_that_began_before_an_invalidation_is_dropped() {
    let cache = lru(8);
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

#[test]
fn a_clear_drops_every_key_and_every_fill_begun_before_it() {
    let cache = lru(8);
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

#[test]
fn a_forgotten_invalidation_still_refuses_older_fills() {
    let cache = lru(2);
    let before = cache.generation();
    cache.invalidate("lookup:1");
    // Push the tombstone of lookup:1 out of the bounded cache.
    let now = cache.generation();
    assert!(cache.fill("a", Bytes::from_static(b"a"), now));
    assert!(cache.fill("b", Bytes::from_static(b"b"), now));
    assert!(!cache.fill("lookup:1", Bytes::from_static(b"old"), before));
}

#[test]
fn the_size_bound_evicts_the_least_recent() {
    let cache = lru(2);
    let g = cache.generation();
    assert!(cache.fill("a", Bytes::from_static(b"a"), g));
    assert!(cache.fill("b", Bytes::from_static(b"b"), g));
    assert!(cache.get("a").is_some());
    assert!(cache.fill("c", Bytes::from_static(b"c"), g));
    assert_eq!(cache.get("b"), None);
    assert!(cache.get("a").is_some() && cache.get("c").is_some());
    assert_eq!(cache.stats().evictions, 1);
}

#[test]
fn the_ttl_is_a_backstop() {
    let cache = LruCache::new(NonZeroUsize::new(4).expect("non-zero"), Duration::ZERO);
    let g = cache.generation();
    assert!(cache.fill("a", Bytes::from_static(b"a"), g));
    assert_eq!(cache.get("a"), None);
    assert_eq!(cache.stats().evictions, 1);
}

#[test]
fn no_cache_holds_nothing() {
    let cache = NoCache::default();
    assert!(!cache.fill("a", Bytes::from_static(b"a"), cache.generation()));
    assert_eq!(cache.get("a"), None);
    cache.invalidate("a");
    assert_eq!(cache.stats().misses, 1);
}
