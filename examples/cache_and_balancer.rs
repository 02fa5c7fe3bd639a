//! The frontend's building blocks on their own: the cache with its
//! generation check, and the balancers over a replica set's health. Each
//! step prints what it shows and asserts it (CI runs this program).
//!
//! `cargo run -p pygmy-examples --example cache_and_balancer`

use std::num::NonZeroUsize;
use std::time::Duration;

use bytes::Bytes;
use pygmy_core::balance::{Balancer, Endpoints, HealthPolicy, LeastLoaded, Preferred, RoundRobin};
use pygmy_core::cache::{lookup_key, Cache, LruCache};
use pygmy_core::ItemId;

fn main() {
    // A miss takes the generation before it asks a backend; an
    // invalidation that lands meanwhile makes its fill a no-op, so a slow
    // read cannot put an old value back after a buy.
    let capacity = NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN);
    let cache = LruCache::new(capacity, Duration::from_secs(30));
    let key = lookup_key(ItemId(1));
    let before = cache.generation();
    cache.invalidate(&key); // a buy of item 1, while the read is out
    let stored = cache.fill(&key, Bytes::from_static(b"{\"count\":100}"), before);
    println!("a fill that began before the invalidation stored: {stored}");
    assert!(!stored, "an old value was put back after the invalidation");
    let after = cache.generation();
    let stored = cache.fill(&key, Bytes::from_static(b"{\"count\":99}"), after);
    println!("a fill that began after it stored: {stored}");
    assert!(stored);
    assert_eq!(cache.get(&key).as_deref(), Some(&b"{\"count\":99}"[..]));
    let stats = cache.stats();
    println!("cache: {stats:?}");
    assert_eq!((stats.stale_fills, stats.hits), (1, 1));

    // Three replicas; the second fails and is ejected for the cool-down.
    let replicas = Endpoints::new(
        ["a", "b", "c"].map(|n| (n.to_owned(), format!("http://{n}.invalid"))),
        HealthPolicy::default(),
    );
    replicas.record_failure(1);
    let _busy = replicas.start(0); // one request in flight on "a"
    let name = |plan: Vec<usize>| -> Vec<&str> {
        plan.into_iter()
            .map(|i| replicas.all()[i].name.as_str())
            .collect()
    };
    // Each plan tries every replica once; the ejected "b" comes last.
    let round_robin = RoundRobin::default();
    let rotations: Vec<Vec<&str>> = (0..3).map(|_| name(round_robin.plan(&replicas))).collect();
    for plan in &rotations {
        println!("round robin:  {plan:?}");
    }
    assert_eq!(
        rotations,
        [["a", "c", "b"], ["c", "a", "b"], ["c", "a", "b"]],
        "round robin starts one further each time, the ejected replica last"
    );
    let least_loaded = name(LeastLoaded::default().plan(&replicas));
    println!("least loaded: {least_loaded:?}");
    assert_eq!(
        least_loaded,
        ["c", "a", "b"],
        "\"a\" has a request in flight"
    );
    let preferred = name(Preferred::new(1).plan(&replicas));
    println!("preferred b:  {preferred:?}");
    assert_eq!(
        preferred,
        ["a", "c", "b"],
        "even the preferred is tried last while ejected"
    );
}
