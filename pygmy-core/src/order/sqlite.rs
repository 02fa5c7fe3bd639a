//! The orders in SQLite.

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

impl SqliteMachine for OrderMachine {
    const SCHEMA: &'static str = "
CREATE TABLE IF NOT EXISTS orders (
    id      INTEGER PRIMARY KEY,
    key     TEXT    NOT NULL UNIQUE,
    item_id INTEGER NOT NULL,
    created TEXT    NOT NULL
);
";

    /// Orders are read from SQLite: none kept in memory.
    type View = ();

    fn load_view(_: &Connection) -> Result<(), StoreError> {
        Ok(())
    }

    fn update_view(_: &mut (), _: &OrderOutcome) {}

    fn execute(tx: &Transaction<'_>, cmd: &OrderCommand) -> Result<OrderOutcome, StoreError> {
        let OrderCommand::Record { key, item, created } = cmd;
        if let Some(order) = select_by_key(tx, key)? {
            return Ok(OrderOutcome::Recorded { order });
        }
        let id: i64 = tx
            .prepare_cached("SELECT IFNULL(MAX(id), 0) + 1 FROM orders")?
            .query_row([], |r| r.get(0))?;
        tx.prepare_cached(
            "INSERT INTO orders (id, key, item_id, created) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![id, key.as_str(), item.0, created])?;
        Ok(OrderOutcome::Recorded {
            order: Order {
                created: created.clone(),
                id: OrderId(id),
                item_id: *item,
                key: key.clone(),
            },
        })
    }
}

/// The SQLite order store.
pub type SqliteOrders = SqliteJournal<OrderMachine>;

#[async_trait]
impl OrderStore for SqliteOrders {
    async fn order_by_key(&self, key: &IdempotencyKey) -> Result<Option<Order>, StoreError> {
        let key = key.clone();
        self.read(move |conn| select_by_key(conn, &key)).await
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
