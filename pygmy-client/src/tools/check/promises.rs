//! The promises of a Pygmy store, checked over the states collected from
//! every replica ([`check`]): a plain function with no I/O, so that the
//! load generator's `--check`, the tests and the fault tests judge alike.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use pygmy_core::shard::order_shard_of;
use pygmy_core::types::{Book, ItemId, Order, OrderId};
use serde::{Deserialize, Serialize};

/// What every replica held at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Each catalog replica's books, by replica name.
    pub catalogs: BTreeMap<String, Vec<Book>>,
    /// Each order replica's orders, by replica name.
    pub orders: BTreeMap<String, Vec<Order>>,
    /// The shard of each replica of a sharded service (its index among
    /// its service's shards), by replica name; a replica not named here
    /// is of shard 0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shards: BTreeMap<String, usize>,
}

impl ClusterState {
    /// The shard of replica `name`.
    fn shard(&self, name: &str) -> usize {
        self.shards.get(name).copied().unwrap_or(0)
    }

    /// `replicas` grouped by shard: each shard's replicas, in shard order.
    fn by_shard<'a, R>(
        &self,
        replicas: &'a BTreeMap<String, Vec<R>>,
    ) -> BTreeMap<usize, BTreeMap<&'a str, &'a [R]>> {
        let mut shards: BTreeMap<usize, BTreeMap<&str, &[R]>> = BTreeMap::new();
        for (name, records) in replicas {
            shards
                .entry(self.shard(name))
                .or_default()
                .insert(name, records);
        }
        shards
    }

    /// The views of the whole order service: view `r` takes the `r`-th
    /// replica of each order shard (the last one, for a shard with fewer),
    /// as `(names joined by +, every order of those replicas)`. With one
    /// order shard, one view per order replica.
    fn order_views(&self) -> Vec<(String, Vec<&Order>)> {
        let shards = self.by_shard(&self.orders);
        let most = shards.values().map(BTreeMap::len).max().unwrap_or(0);
        (0..most)
            .map(|r| {
                let picked: Vec<(&str, &[Order])> = shards
                    .values()
                    .filter_map(|replicas| {
                        let (name, orders) = replicas.iter().nth(r).or(replicas.iter().last())?;
                        Some((*name, *orders))
                    })
                    .collect();
                let names: Vec<&str> = picked.iter().map(|(name, _)| *name).collect();
                let orders = picked
                    .iter()
                    .flat_map(|(_, orders)| orders.iter())
                    .collect();
                (names.join("+"), orders)
            })
            .collect()
    }
}

/// A buy the store answered with success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckedBuy {
    /// The book bought.
    pub item: ItemId,
    /// The order id the store answered.
    pub order: OrderId,
}

/// What the store should hold for each item: `initial + restocks`, to be
/// found as stock plus orders on every replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// Stock plus orders of each item before the run.
    pub initial: BTreeMap<ItemId, i64>,
    /// Stock added during the run (by `PUT /item`), per item.
    pub restocks: BTreeMap<ItemId, i64>,
}

impl Expected {
    /// The baseline of a state taken before a run: for each item, its
    /// stock plus its orders, on the first catalog replica of each
    /// catalog shard and the first order replica of each order shard.
    pub fn baseline(before: &ClusterState) -> Expected {
        let mut initial: BTreeMap<ItemId, i64> = BTreeMap::new();
        for replicas in before.by_shard(&before.catalogs).values() {
            for book in replicas.values().next().copied().unwrap_or_default() {
                initial.insert(book.id, book.count);
            }
        }
        for replicas in before.by_shard(&before.orders).values() {
            for order in replicas.values().next().copied().unwrap_or_default() {
                *initial.entry(order.item_id).or_insert(0) += 1;
            }
        }
        Expected {
            initial,
            restocks: BTreeMap::new(),
        }
    }
}

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// Stock below zero on a replica.
    Oversell {
        /// The catalog replica.
        replica: String,
        /// The book.
        item: ItemId,
        /// Its stock there.
        count: i64,
    },
    /// Stock plus orders is not initial stock plus restocks.
    Conservation {
        /// The catalog replica whose stock was used.
        catalog: String,
        /// The order replica whose orders were used.
        order: String,
        /// The book.
        item: ItemId,
        /// Initial stock plus restocks.
        expected: i64,
        /// Stock plus orders found.
        found: i64,
    },
    /// Two catalog replicas hold different books.
    CatalogDivergence {
        /// One replica.
        a: String,
        /// The other.
        b: String,
        /// The items on which they differ.
        items: Vec<ItemId>,
    },
    /// Two order replicas hold different orders.
    OrderDivergence {
        /// One replica.
        a: String,
        /// The other.
        b: String,
        /// The order ids on which they differ.
        orders: Vec<OrderId>,
    },
    /// A buy answered with success is missing from a replica.
    LostAck {
        /// The order replica.
        replica: String,
        /// The buy.
        buy: AckedBuy,
    },
    /// Two orders with one idempotency key, or two acknowledged buys with
    /// one order id.
    Duplicate {
        /// Where.
        replica: String,
        /// What is duplicated.
        what: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Oversell { replica, item, count } => {
                write!(f, "oversell: item {item} has stock {count} on {replica}")
            }
            Violation::Conservation { catalog, order, item, expected, found } => write!(
                f,
                "conservation: item {item}: initial + restocks = {expected}, but stock on {catalog} + orders on {order} = {found}"
            ),
            Violation::CatalogDivergence { a, b, items } => {
                write!(f, "divergence: catalog replicas {a} and {b} differ on items {items:?}")
            }
            Violation::OrderDivergence { a, b, orders } => {
                write!(f, "divergence: order replicas {a} and {b} differ on orders {orders:?}")
            }
            Violation::LostAck { replica, buy } => write!(
                f,
                "lost acknowledgement: order {} (item {}) was answered with success but is not on {replica}",
                buy.order, buy.item
            ),
            Violation::Duplicate { replica, what } => write!(f, "duplicate on {replica}: {what}"),
        }
    }
}

/// Checks every promise that a state can show; returns the violations
/// found (none: the state keeps them all).
pub fn check(expected: &Expected, state: &ClusterState, acked: &[AckedBuy]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (replica, books) in &state.catalogs {
        for book in books.iter().filter(|b| b.count < 0) {
            violations.push(Violation::Oversell {
                replica: replica.clone(),
                item: book.id,
                count: book.count,
            });
        }
    }
    check_catalogs_agree(state, &mut violations);
    check_orders_agree(state, &mut violations);
    check_conservation(expected, state, &mut violations);
    check_acknowledged(state, acked, &mut violations);
    violations
}

/// For each replica after the first of a shard, the keys on which its
/// records differ from the first replica's: `(first, other, keys)`, only
/// where some differ.
fn divergences<R, K: Ord + Copy>(
    replicas: &BTreeMap<&str, &[R]>,
    key: impl Fn(&R) -> K,
) -> Vec<(String, String, Vec<K>)>
where
    R: PartialEq,
{
    let index = |records: &'_ [R]| -> BTreeMap<K, usize> {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| (key(r), i))
            .collect()
    };
    let mut replicas = replicas.iter();
    let Some((first, reference)) = replicas.next() else {
        return Vec::new();
    };
    let by_key = index(reference);
    let mut found = Vec::new();
    for (name, records) in replicas {
        let other = index(records);
        let keys: BTreeSet<K> = by_key.keys().chain(other.keys()).copied().collect();
        let differing: Vec<K> = keys
            .into_iter()
            .filter(|k| by_key.get(k).map(|&i| &reference[i]) != other.get(k).map(|&i| &records[i]))
            .collect();
        if !differing.is_empty() {
            found.push((first.to_string(), name.to_string(), differing));
        }
    }
    found
}

fn check_catalogs_agree(state: &ClusterState, violations: &mut Vec<Violation>) {
    for replicas in state.by_shard(&state.catalogs).values() {
        for (a, b, items) in divergences(replicas, |book: &Book| book.id) {
            violations.push(Violation::CatalogDivergence { a, b, items });
        }
    }
}

fn check_orders_agree(state: &ClusterState, violations: &mut Vec<Violation>) {
    for (name, orders) in &state.orders {
        let mut keys = BTreeSet::new();
        for order in orders {
            if !keys.insert(&order.key) {
                violations.push(Violation::Duplicate {
                    replica: name.clone(),
                    what: format!("two orders under the key {}", order.key),
                });
            }
        }
    }
    for replicas in state.by_shard(&state.orders).values() {
        for (a, b, orders) in divergences(replicas, |order: &Order| order.id) {
            violations.push(Violation::OrderDivergence { a, b, orders });
        }
    }
}

/// For each catalog replica and each view of the order service (one
/// replica of each order shard), each of the catalog replica's books:
/// its stock plus its orders over the order shards is its initial stock
/// plus its restocks.
fn check_conservation(expected: &Expected, state: &ClusterState, violations: &mut Vec<Violation>) {
    let views = state.order_views();
    for (catalog, books) in &state.catalogs {
        for (order_replica, orders) in &views {
            let mut sold: BTreeMap<ItemId, i64> = BTreeMap::new();
            for order in orders {
                *sold.entry(order.item_id).or_insert(0) += 1;
            }
            for book in books {
                let Some(initial) = expected.initial.get(&book.id) else {
                    continue;
                };
                let want = initial + expected.restocks.get(&book.id).copied().unwrap_or(0);
                let found = book.count + sold.get(&book.id).copied().unwrap_or(0);
                if want != found {
                    violations.push(Violation::Conservation {
                        catalog: catalog.clone(),
                        order: order_replica.clone(),
                        item: book.id,
                        expected: want,
                        found,
                    });
                }
            }
        }
    }
}

fn check_acknowledged(state: &ClusterState, acked: &[AckedBuy], violations: &mut Vec<Violation>) {
    let mut seen = BTreeSet::new();
    for buy in acked {
        if !seen.insert(buy.order) {
            violations.push(Violation::Duplicate {
                replica: "(answers)".to_owned(),
                what: format!("order id {} was answered to two buys", buy.order),
            });
        }
    }
    for (name, orders) in &state.orders {
        let held: BTreeMap<OrderId, ItemId> = orders.iter().map(|o| (o.id, o.item_id)).collect();
        // Each acknowledged buy on every replica of the order shard its id
        // is of.
        let shard = state.shard(name);
        let of_shard = acked
            .iter()
            .filter(|buy| order_shard_of(buy.order) == shard);
        for buy in of_shard {
            if held.get(&buy.order) != Some(&buy.item) {
                violations.push(Violation::LostAck {
                    replica: name.clone(),
                    buy: *buy,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pygmy_core::types::{default_books, IdempotencyKey};

    fn order(id: i64, item: i64) -> Order {
        Order {
            created: "2026-11-24T00:00:00Z".to_owned(),
            id: OrderId(id),
            item_id: ItemId(item),
            key: IdempotencyKey::parse(&format!("k{id}")).expect("key"),
        }
    }

    /// Two catalog and two order replicas after two buys of item 1
    /// (stock 100 -> 98), both acknowledged.
    fn clean() -> (Expected, ClusterState, Vec<AckedBuy>) {
        let before = ClusterState {
            catalogs: [("c0".to_owned(), default_books())].into(),
            orders: [("o0".to_owned(), Vec::new())].into(),
            shards: BTreeMap::new(),
        };
        let expected = Expected::baseline(&before);
        let mut books = default_books();
        books[0].count = 98;
        let orders = vec![order(1, 1), order(2, 1)];
        let state = ClusterState {
            catalogs: [("c0".to_owned(), books.clone()), ("c1".to_owned(), books)].into(),
            orders: [("o0".to_owned(), orders.clone()), ("o1".to_owned(), orders)].into(),
            shards: BTreeMap::new(),
        };
        let acked = vec![
            AckedBuy {
                item: ItemId(1),
                order: OrderId(1),
            },
            AckedBuy {
                item: ItemId(1),
                order: OrderId(2),
            },
        ];
        (expected, state, acked)
    }

    fn kinds(violations: &[Violation]) -> Vec<&'static str> {
        violations
            .iter()
            .map(|v| match v {
                Violation::Oversell { .. } => "oversell",
                Violation::Conservation { .. } => "conservation",
                Violation::CatalogDivergence { .. } => "catalog_divergence",
                Violation::OrderDivergence { .. } => "order_divergence",
                Violation::LostAck { .. } => "lost_ack",
                Violation::Duplicate { .. } => "duplicate",
            })
            .collect()
    }

    #[test]
    fn a_clean_state_passes() {
        let (expected, state, acked) = clean();
        assert_eq!(check(&expected, &state, &acked), Vec::new());
    }

    #[test]
    fn negative_stock_is_an_oversell() {
        let (expected, mut state, acked) = clean();
        for books in state.catalogs.values_mut() {
            books[2].count = -1;
        }
        let found = check(&expected, &state, &acked);
        assert!(kinds(&found).contains(&"oversell"), "{found:?}");
    }

    #[test]
    fn a_sale_without_an_order_breaks_conservation() {
        let (expected, mut state, acked) = clean();
        for books in state.catalogs.values_mut() {
            books[0].count = 97;
        }
        assert_eq!(
            kinds(&check(&expected, &state, &acked)),
            vec!["conservation"; 2 * 2]
        );
    }

    #[test]
    fn restocks_are_counted() {
        let (mut expected, mut state, acked) = clean();
        for books in state.catalogs.values_mut() {
            books[0].count += 5;
        }
        assert!(!check(&expected, &state, &acked).is_empty());
        expected.restocks.insert(ItemId(1), 5);
        assert_eq!(check(&expected, &state, &acked), Vec::new());
    }

    #[test]
    fn replicas_that_differ_are_caught() {
        let (expected, mut state, acked) = clean();
        if let Some(books) = state.catalogs.get_mut("c1") {
            books[4].cost = pygmy_core::types::Cost::whole(1).expect("cost");
        }
        let found = check(&expected, &state, &acked);
        assert_eq!(kinds(&found), vec!["catalog_divergence"]);

        let (expected, mut state, acked) = clean();
        if let Some(orders) = state.orders.get_mut("o1") {
            orders[1].item_id = ItemId(2);
        }
        let found = kinds(&check(&expected, &state, &acked));
        assert!(
            found.contains(&"order_divergence") && found.contains(&"lost_ack"),
            "{found:?}"
        );
    }

    #[test]
    fn a_lost_acknowledged_buy_is_caught() {
        let (expected, state, mut acked) = clean();
        acked.push(AckedBuy {
            item: ItemId(3),
            order: OrderId(3),
        });
        assert_eq!(
            kinds(&check(&expected, &state, &acked)),
            vec!["lost_ack", "lost_ack"]
        );
    }

    #[test]
    fn duplicates_are_caught() {
        let (expected, mut state, acked) = clean();
        for orders in state.orders.values_mut() {
            let mut twin = order(3, 2);
            twin.key = orders[0].key.clone();
            orders.push(twin);
        }
        let found = kinds(&check(&expected, &state, &acked));
        assert!(found.contains(&"duplicate"), "{found:?}");

        let (expected, state, mut acked) = clean();
        acked.push(acked[0]);
        assert!(kinds(&check(&expected, &state, &acked)).contains(&"duplicate"));
    }

    /// Two catalog shards (items 1-4 and 5-7) and two order shards, one
    /// replica each, after a buy of item 1 recorded in shard 0 and a buy
    /// of item 6 recorded in shard 1.
    fn sharded() -> (Expected, ClusterState, Vec<AckedBuy>) {
        let books = default_books();
        let (low, high) = books.split_at(4);
        let shards: BTreeMap<String, usize> = [("c1", 1), ("o1", 1)]
            .map(|(n, s)| (n.to_owned(), s))
            .into();
        let before = ClusterState {
            catalogs: [
                ("c0".to_owned(), low.to_vec()),
                ("c1".to_owned(), high.to_vec()),
            ]
            .into(),
            orders: [("o0".to_owned(), Vec::new()), ("o1".to_owned(), Vec::new())].into(),
            shards: shards.clone(),
        };
        let expected = Expected::baseline(&before);
        let (mut low, mut high) = (low.to_vec(), high.to_vec());
        low[0].count -= 1;
        high[1].count -= 1;
        let second = pygmy_core::shard::order_id_base(1) + 1;
        let state = ClusterState {
            catalogs: [("c0".to_owned(), low), ("c1".to_owned(), high)].into(),
            orders: [
                ("o0".to_owned(), vec![order(1, 1)]),
                ("o1".to_owned(), vec![order(second, 6)]),
            ]
            .into(),
            shards,
        };
        let acked = vec![
            AckedBuy {
                item: ItemId(1),
                order: OrderId(1),
            },
            AckedBuy {
                item: ItemId(6),
                order: OrderId(second),
            },
        ];
        (expected, state, acked)
    }

    /// Over shards, each promise is checked where it holds: replicas agree
    /// within their shard, stock and orders add up over the shards, and an
    /// acknowledged buy is on each replica of its order shard.
    #[test]
    fn a_sharded_state_is_checked_shard_by_shard() {
        let (expected, state, acked) = sharded();
        assert_eq!(check(&expected, &state, &acked), Vec::new());

        let (expected, mut state, acked) = sharded();
        state.orders.insert("o1".to_owned(), Vec::new());
        let found = kinds(&check(&expected, &state, &acked));
        assert_eq!(found, vec!["conservation", "lost_ack"], "{found:?}");

        let (expected, mut state, acked) = sharded();
        if let Some(books) = state.catalogs.get_mut("c1") {
            books[1].count -= 1;
        }
        let found = kinds(&check(&expected, &state, &acked));
        assert_eq!(found, vec!["conservation"], "{found:?}");
    }
}
