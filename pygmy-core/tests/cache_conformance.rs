//! The cache contract (`pygmy_core::testing::cache`), run against every
//! backend where it applies, and what is the LRU's own.

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
fn the_lru_cache_passes_the_suite() {
    pygmy_core::testing::cache::run(|| Box::new(lru(8)));
}

#[test]
fn keys_name_the_request() {
    assert_eq!(lookup_key(ItemId(3)), "lookup:3");
    assert_eq!(search_key("graduate school"), "search:graduate school");
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
