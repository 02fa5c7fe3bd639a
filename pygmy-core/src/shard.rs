//! Shards: which part of a service an item or a buy's key belongs to.
//!
//! A service may be split into shards, each its own raft group
//! (docs/scaling.md, "Shards: the design"):
//!
//! - the catalog by ranges of item ids, given by split points
//!   ([`ItemRanges`]): every id belongs to exactly one shard, by
//!   construction;
//! - the orders by the hash of the buy's idempotency key ([`KeyShards`]),
//!   with a fixed function (FNV-1a, 64 bits), so that a key's shard never
//!   changes between builds.
//!
//! Order shard `i` numbers its orders from [`order_id_base`]`(i) + 1`, so
//! that ids stay unique across the shards.

use std::hash::Hasher;

use crate::types::{IdempotencyKey, ItemId, OrderId};

/// The catalog's shards, as the ranges of item ids they hold: shard 0
/// every id below the first split point, shard `i` the ids from split
/// point `i - 1` to the next one less one, the last every id from its
/// split point up.
///
/// ```
/// use pygmy_core::shard::ItemRanges;
/// use pygmy_core::ItemId;
///
/// let ranges = ItemRanges::new(vec![ItemId(5)]).unwrap();
/// assert_eq!(ranges.shard_of(ItemId(4)), 0);
/// assert_eq!(ranges.shard_of(ItemId(5)), 1);
/// assert_eq!(ranges.shard_of(ItemId(i64::MAX)), 1);
/// assert_eq!(ranges.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRanges {
    /// The first item of each shard after the first, rising.
    splits: Vec<ItemId>,
}

/// Split points that do not rise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the catalog's split points must rise: {0} does not come after {1}")]
pub struct SplitsError(pub ItemId, pub ItemId);

impl ItemRanges {
    /// One shard holding every item.
    pub fn one() -> Self {
        ItemRanges { splits: Vec::new() }
    }

    /// The shards split at `splits`: the first item of each shard after
    /// the first. They must rise strictly.
    pub fn new(splits: Vec<ItemId>) -> Result<Self, SplitsError> {
        if let Some(pair) = splits.windows(2).find(|pair| pair[1] <= pair[0]) {
            return Err(SplitsError(pair[1], pair[0]));
        }
        Ok(ItemRanges { splits })
    }

    /// How many shards.
    pub fn len(&self) -> usize {
        self.splits.len() + 1
    }

    /// Never: there is always one shard at least.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The shard that holds `item`.
    pub fn shard_of(&self, item: ItemId) -> usize {
        self.splits.partition_point(|first| *first <= item)
    }

    /// The first and the last item of `shard` (none: no bound that way).
    pub fn bounds(&self, shard: usize) -> (Option<ItemId>, Option<ItemId>) {
        let first = shard
            .checked_sub(1)
            .and_then(|i| self.splits.get(i))
            .copied();
        let last = self.splits.get(shard).map(|next| ItemId(next.0 - 1));
        (first, last)
    }

    /// Whether `shard` holds `item`.
    pub fn holds(&self, shard: usize, item: ItemId) -> bool {
        self.shard_of(item) == shard
    }
}

/// The order service's shards, by the hash of a buy's idempotency key.
///
/// ```
/// use pygmy_core::shard::KeyShards;
/// use pygmy_core::IdempotencyKey;
///
/// let shards = KeyShards::new(4);
/// let key = IdempotencyKey::parse("buy-42").unwrap();
/// assert_eq!(shards.shard_of(&key), shards.shard_of(&key));
/// assert!(shards.shard_of(&key) < 4);
/// assert_eq!(KeyShards::new(1).shard_of(&key), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyShards {
    shards: u64,
}

impl KeyShards {
    /// `shards` order shards (at least one).
    pub fn new(shards: usize) -> Self {
        KeyShards {
            shards: u64::try_from(shards.max(1)).unwrap_or(u64::MAX),
        }
    }

    /// How many shards.
    pub fn len(&self) -> usize {
        usize::try_from(self.shards).unwrap_or(usize::MAX)
    }

    /// Never: there is always one shard at least.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The shard `key` belongs to: FNV-1a (64 bits) of its bytes, modulo
    /// the shards.
    pub fn shard_of(&self, key: &IdempotencyKey) -> usize {
        // Below `shards`, which came from a usize.
        usize::try_from(fnv1a64(key.as_str().as_bytes()) % self.shards).unwrap_or(0)
    }
}

/// FNV-1a, 64 bits, of `bytes` (the `fnv` crate's, fed the bytes alone:
/// no length prefix, so the function is the published one).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

/// The ids each order shard may use: order shard `i` numbers its orders
/// from `i * 2^40 + 1`. Ids stay below 2^53, exact in JSON, for up to
/// 8,192 shards of a trillion orders each.
pub const ORDER_IDS_PER_SHARD: i64 = 1 << 40;

/// The most order shards a store may have (ids stay below 2^53).
pub const MAX_ORDER_SHARDS: usize = 1 << 13;

/// The id below the first order of order shard `shard`: 0 for the first
/// shard, as a store without shards numbers them.
pub fn order_id_base(shard: usize) -> i64 {
    i64::try_from(shard)
        .unwrap_or(i64::MAX)
        .saturating_mul(ORDER_IDS_PER_SHARD)
}

/// The order shard whose ids `order` is among.
///
/// ```
/// use pygmy_core::shard::{order_id_base, order_shard_of};
/// use pygmy_core::OrderId;
///
/// assert_eq!(order_shard_of(OrderId(1)), 0);
/// assert_eq!(order_shard_of(OrderId(order_id_base(2) + 1)), 2);
/// ```
pub fn order_shard_of(order: OrderId) -> usize {
    usize::try_from(order.0.saturating_sub(1).max(0) / ORDER_IDS_PER_SHARD).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_belongs_to_one_shard_and_its_bounds_hold_it() {
        let ranges = ItemRanges::new(vec![ItemId(0), ItemId(5), ItemId(100)]).expect("rise");
        assert_eq!(ranges.len(), 4);
        for id in [i64::MIN, -1, 0, 1, 4, 5, 6, 99, 100, 101, i64::MAX] {
            let item = ItemId(id);
            let shard = ranges.shard_of(item);
            let holders: Vec<usize> = (0..ranges.len())
                .filter(|s| ranges.holds(*s, item))
                .collect();
            assert_eq!(holders, vec![shard], "item {id}");
            let (first, last) = ranges.bounds(shard);
            assert!(first.is_none_or(|f| f <= item), "item {id} below {first:?}");
            assert!(last.is_none_or(|l| item <= l), "item {id} above {last:?}");
        }
        assert_eq!(ranges.bounds(0), (None, Some(ItemId(-1))));
        assert_eq!(ranges.bounds(3), (Some(ItemId(100)), None));
        assert_eq!(ItemRanges::one().shard_of(ItemId(i64::MIN)), 0);
    }

    #[test]
    fn split_points_that_do_not_rise_are_refused() {
        assert!(ItemRanges::new(vec![ItemId(5), ItemId(5)]).is_err());
        assert!(ItemRanges::new(vec![ItemId(5), ItemId(3)]).is_err());
    }

    /// The published FNV-1a 64 vectors: a key's shard is the data's
    /// place, so the function must never change.
    #[test]
    fn the_key_hash_is_the_published_fnv1a() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let shards = KeyShards::new(4);
        let mut counts = [0usize; 4];
        for i in 0..4_000 {
            let key = IdempotencyKey::parse(&format!("key-{i}")).expect("key");
            counts[shards.shard_of(&key)] += 1;
        }
        assert!(
            counts.iter().all(|n| (800..1_200).contains(n)),
            "{counts:?}"
        );
    }

    #[test]
    fn order_ids_of_shards_do_not_meet() {
        assert_eq!(order_id_base(0), 0);
        assert_eq!(order_id_base(1), 1 << 40);
        let top = order_id_base(MAX_ORDER_SHARDS - 1) + ORDER_IDS_PER_SHARD;
        assert!(top <= 1 << 53);
        assert_eq!(order_shard_of(OrderId(ORDER_IDS_PER_SHARD)), 0);
        assert_eq!(order_shard_of(OrderId(ORDER_IDS_PER_SHARD + 1)), 1);
        assert_eq!(order_shard_of(OrderId(top)), MAX_ORDER_SHARDS - 1);
    }
}
