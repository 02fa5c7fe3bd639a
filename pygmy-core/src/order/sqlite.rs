//! The orders in SQLite, with the keys of every order also kept in memory
//! as hashes ([`OrderKeys`]): the check a buy makes first, whether its key
//! has an order already, needs no SQLite read when it has none.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::{OrderCommand, OrderMachine, OrderOutcome, OrderStore};
use crate::error::StoreError;
use crate::journal::sqlite::{SqliteJournal, SqliteMachine};
use crate::types::{IdempotencyKey, ItemId, Order, OrderId};

const COLUMNS: &str = "created, id, item_id, key";

fn order_from_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    let key: String = row.get(3)?;
    Ok(Order {
        created: row.get(0)?,
        id: OrderId(row.get(1)?),
        item_id: ItemId(row.get(2)?),
        key: IdempotencyKey::parse(&key).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?,
    })
}

fn select_by_key(conn: &Connection, key: &IdempotencyKey) -> Result<Option<Order>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM orders WHERE key = ?1"))?;
    Ok(stmt.query_row([key.as_str()], order_from_row).optional()?)
}

/// The keys of every recorded order, as 64-bit hashes: the order service's
/// in-memory view. A key whose hash is not here has no order; one whose
/// hash is may (two keys can share a hash), so it is looked up. Each
/// process hashes with keys of its own: a client cannot choose keys that
/// collide. 10 to 21 bytes an order (see [`OrderKeys::bytes`]; 18.9 at
/// 1,000,000 orders).
#[derive(Debug, Default)]
pub struct OrderKeys {
    hasher: RandomState,
    hashes: HashSet<u64>,
}

impl OrderKeys {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn insert(&mut self, key: &str) {
        let hash = self.hash(key);
        self.hashes.insert(hash);
    }

    /// The bytes the hashes take in memory: the table's slots, each a
    /// 64-bit hash and one control byte. The slots are a power of two, at
    /// most 7 of 8 of them full: 10 to 21 bytes a key, by how full the
    /// table is since it last doubled.
    pub fn bytes(&self) -> usize {
        let slots = (self.hashes.capacity() * 8 / 7).next_power_of_two();
        slots * (std::mem::size_of::<u64>() + 1)
    }

    /// Whether an order may have been recorded under `key`.
    fn may_hold(&self, key: &str) -> bool {
        self.hashes.contains(&self.hash(key))
    }
}

impl SqliteMachine for OrderMachine {
    const SCHEMA: &'static str = "
CREATE TABLE IF NOT EXISTS orders (
    id      INTEGER PRIMARY KEY,
    key     TEXT    NOT NULL UNIQUE,
    item_id INTEGER NOT NULL,
    created TEXT    NOT NULL
);
";

    /// The orders themselves are read from SQLite; only their keys are
    /// kept in memory.
    type View = OrderKeys;

    fn load_view(conn: &Connection) -> Result<OrderKeys, StoreError> {
        let mut keys = OrderKeys::default();
        let mut stmt = conn.prepare_cached("SELECT key FROM orders")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            keys.insert(row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?);
        }
        Ok(keys)
    }

    fn update_view(keys: &mut OrderKeys, outcome: &OrderOutcome) {
        let OrderOutcome::Recorded { order } = outcome;
        keys.insert(order.key.as_str());
    }

    fn execute(tx: &Transaction<'_>, cmd: &OrderCommand) -> Result<OrderOutcome, StoreError> {
        let OrderCommand::Record {
            key,
            item,
            created,
            base,
        } = cmd;
        // The next id and the insert are one statement; a key that has an
        // order already inserts nothing, and its order is answered.
        // (`WHERE true` tells SQLite's parser the ON CONFLICT is the
        // upsert's, not a join's.) Without `RETURNING`: SQLite gathers a
        // returning statement's rows in a temporary b-tree, opened and
        // closed each time (docs/history/benchmarks.md, "The sixth round");
        // the new order's id is its rowid, and the rest is what was
        // inserted.
        let inserted = tx
            .prepare_cached(
                "INSERT INTO orders (id, key, item_id, created)
                 SELECT IFNULL(MAX(id), ?4) + 1, ?1, ?2, ?3 FROM orders WHERE true
                 ON CONFLICT (key) DO NOTHING",
            )?
            .execute(params![key.as_str(), item.0, created, base])?;
        let order = match inserted {
            1 => Order {
                created: created.clone(),
                id: OrderId(tx.last_insert_rowid()),
                item_id: *item,
                key: key.clone(),
            },
            0 => select_by_key(tx, key)?.ok_or_else(|| {
                StoreError::Corrupt(format!("the order of key {key} is neither new nor there"))
            })?,
            n => {
                return Err(StoreError::Corrupt(format!(
                    "the order of key {key} inserted {n} rows"
                )))
            }
        };
        Ok(OrderOutcome::Recorded { order })
    }
}

/// How many keys one lookup of [`OrderStore::keys_with_orders`] binds
/// (SQLite allows 32,766 parameters a statement).
const KEYS_PER_LOOKUP: usize = 500;

/// The SQLite order store.
pub type SqliteOrders = SqliteJournal<OrderMachine>;

#[async_trait]
impl OrderStore for SqliteOrders {
    async fn order_by_key(&self, key: &IdempotencyKey) -> Result<Option<Order>, StoreError> {
        // Most keys a buy brings are new: answered from memory.
        if !self.view().may_hold(key.as_str()) {
            return Ok(None);
        }
        let key = key.clone();
        self.read(move |conn| select_by_key(conn, &key)).await
    }

    async fn keys_with_orders(
        &self,
        keys: &[IdempotencyKey],
    ) -> Result<HashSet<IdempotencyKey>, StoreError> {
        // Only the keys the view may hold are looked up, a page at a time.
        let maybe: Vec<IdempotencyKey> = {
            let view = self.view();
            keys.iter()
                .filter(|key| view.may_hold(key.as_str()))
                .cloned()
                .collect()
        };
        if maybe.is_empty() {
            return Ok(HashSet::new());
        }
        self.read(move |conn| {
            let mut found = HashSet::new();
            for chunk in maybe.chunks(KEYS_PER_LOOKUP) {
                let marks = vec!["?"; chunk.len()].join(", ");
                let mut stmt =
                    conn.prepare(&format!("SELECT key FROM orders WHERE key IN ({marks})"))?;
                let params = rusqlite::params_from_iter(chunk.iter().map(IdempotencyKey::as_str));
                let there = stmt
                    .query_map(params, |row| row.get::<_, String>(0))?
                    .collect::<Result<HashSet<_>, _>>()?;
                found.extend(
                    chunk
                        .iter()
                        .filter(|key| there.contains(key.as_str()))
                        .cloned(),
                );
            }
            Ok(found)
        })
        .await
    }

    async fn orders(&self) -> Result<Vec<Order>, StoreError> {
        self.read(|conn| {
            let orders = conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM orders ORDER BY id"))?
                .query_map([], order_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(orders)
        })
        .await
    }

    async fn orders_after(&self, after: OrderId, limit: usize) -> Result<Vec<Order>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let orders = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM orders WHERE id > ?1 ORDER BY id LIMIT ?2"
                ))?
                .query_map(params![after.0, limit], order_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(orders)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What docs/scaling.md says an order costs in memory: 10 to 21
    /// bytes, 18.9 at a million orders.
    #[test]
    fn a_million_orders_keys_take_under_21_bytes_each() {
        let mut keys = OrderKeys::default();
        let orders = 1_000_000;
        for n in 0..orders {
            keys.insert(&format!("key-{n}"));
        }
        let per_order = keys.bytes() as f64 / orders as f64;
        println!("{per_order:.1} bytes per order at {orders} orders");
        assert!((10.0..=21.0).contains(&per_order), "{per_order}");
    }

    #[test]
    fn the_keys_hold_every_key_put_in() {
        let mut keys = OrderKeys::default();
        for n in 0..1000 {
            keys.insert(&format!("key-{n}"));
        }
        assert!((0..1000).all(|n| keys.may_hold(&format!("key-{n}"))));
        // 64-bit hashes: a thousand other keys sharing one is a one in
        // 10^13 event.
        assert!((0..1000).all(|n| !keys.may_hold(&format!("other-{n}"))));
    }

    #[tokio::test]
    async fn keys_are_looked_up_a_page_at_a_time() {
        use crate::journal::{Entry, Journal, Op};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteOrders::open(dir.path().join("orders.db")).expect("open");
        let key = |n: usize| IdempotencyKey::parse(&format!("k{n}")).expect("key");
        // Every other key of more than two pages has an order.
        let count = 2 * KEYS_PER_LOOKUP + 10;
        let entries = (0..count)
            .step_by(2)
            .enumerate()
            .map(|(seq, n)| Entry {
                origin: "test".to_owned(),
                origin_seq: seq as u64 + 1,
                op: Op {
                    id: OrderCommand::op_id(&key(n)),
                    cmd: OrderCommand::Record {
                        key: key(n),
                        item: ItemId(1),
                        created: "2026-11-26T00:00:00Z".to_owned(),
                        base: 0,
                    },
                },
            })
            .collect();
        store.apply_entries(entries).await.expect("apply");
        let asked: Vec<IdempotencyKey> = (0..count).map(key).collect();
        let found = store.keys_with_orders(&asked).await.expect("read");
        assert_eq!(found.len(), count / 2);
        assert!((0..count).all(|n| found.contains(&key(n)) == (n % 2 == 0)));
    }

    #[tokio::test]
    async fn a_key_is_found_after_any_write_that_put_its_order_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteOrders::open(dir.path().join("orders.db")).expect("open");
        let key = IdempotencyKey::parse("from-a-snapshot").expect("key");
        assert_eq!(store.order_by_key(&key).await.expect("read"), None);
        // As a snapshot installed would: a row put in by a write.
        store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO orders (id, key, item_id, created)
                     VALUES (7, 'from-a-snapshot', 3, '2026-11-26T00:00:00Z')",
                    [],
                )?;
                Ok(())
            })
            .await
            .expect("write");
        let found = store.order_by_key(&key).await.expect("read");
        assert_eq!(found.map(|o| o.id), Some(OrderId(7)));
    }
}
