//! The frontend's cache of serialized read responses.
//!
//! Keys are `lookup:<id>` and `search:<topic>` ([`lookup_key`],
//! [`search_key`]); values are the response bodies, ready to send. A fill
//! is guarded by a generation: take [`Cache::generation`] *before* asking a
//! backend, pass it to [`Cache::fill`], and the fill is dropped if the key
//! was invalidated in between. So a slow miss cannot put old data back after
//! a buy.

pub mod lease;
mod lru;
mod none;

use bytes::Bytes;

pub use self::lru::LruCache;
pub use self::none::NoCache;
use crate::types::ItemId;

/// Hit, miss and eviction counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Gets that found a value.
    pub hits: u64,
    /// Gets that found none.
    pub misses: u64,
    /// Values pushed out by the size bound or expired by the TTL.
    pub evictions: u64,
    /// Fills dropped because their key was invalidated during the miss.
    pub stale_fills: u64,
}

/// A cache of response bodies. Synchronous: every call is short and never
/// waits on I/O.
///
/// A miss takes the generation first, reads the backend, then fills; a buy
/// that invalidates the key in between makes the fill a no-op:
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
///
/// use bytes::Bytes;
/// use pygmy_core::cache::{lookup_key, Cache, LruCache};
/// use pygmy_core::types::ItemId;
///
/// let cache = LruCache::new(NonZeroUsize::new(1024).unwrap(), Duration::from_secs(30));
/// let key = lookup_key(ItemId(1));
/// assert_eq!(cache.get(&key), None);
///
/// // A slow miss: the generation is taken before the backend read ...
/// let before = cache.generation();
/// let old = Bytes::from_static(br#"{"count":10}"#);
/// // ... a buy lands and invalidates the key while the read is under way ...
/// cache.invalidate(&key);
/// // ... so the read's old answer is not put back.
/// assert!(!cache.fill(&key, old, before));
/// assert_eq!(cache.get(&key), None);
///
/// // The next miss fills, and is then served from the cache.
/// let fresh = Bytes::from_static(br#"{"count":9}"#);
/// assert!(cache.fill(&key, fresh.clone(), cache.generation()));
/// assert_eq!(cache.get(&key), Some(fresh));
/// assert_eq!((cache.stats().hits, cache.stats().stale_fills), (1, 1));
/// ```
pub trait Cache: Send + Sync {
    /// The value of `key`, if cached and not expired.
    fn get(&self, key: &str) -> Option<Bytes>;

    /// A token to take before the backend read whose result will fill.
    fn generation(&self) -> u64;

    /// Stores `value` under `key` unless `key` was invalidated after
    /// `generation` was taken; returns whether it stored.
    fn fill(&self, key: &str, value: Bytes, generation: u64) -> bool;

    /// Drops `key`; a fill that began before this call will be refused.
    fn invalidate(&self, key: &str);

    /// Drops every key; a fill that began before this call will be refused.
    fn clear(&self);

    /// Counts since start.
    fn stats(&self) -> CacheStats;
}

/// The cache key of `GET /lookup?id=<id>`.
pub fn lookup_key(id: ItemId) -> String {
    format!("lookup:{id}")
}

/// The cache key of `GET /search?topic=<topic>`.
pub fn search_key(topic: &str) -> String {
    format!("search:{topic}")
}
