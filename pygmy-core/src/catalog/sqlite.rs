//! The catalog in SQLite, with every book also kept in memory ([`Books`]):
//! a read after the replicator's read index needs neither SQLite nor a
//! hand-off to the blocking pool.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::{checked_stock, CatalogCommand, CatalogMachine, CatalogOutcome, CatalogStore};
use crate::error::StoreError;
use crate::journal::sqlite::{SqliteJournal, SqliteMachine};
use crate::types::{Book, Cost, ItemId};

const COLUMNS: &str = "cost_cents, count, id, title, topic";

fn book_from_row(row: &Row<'_>) -> rusqlite::Result<Book> {
    let cents: i64 = row.get(0)?;
    Ok(Book {
        cost: Cost::from_cents(cents)
            .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(0, cents))?,
        count: row.get(1)?,
        id: ItemId(row.get(2)?),
        title: row.get(3)?,
        topic: row.get(4)?,
    })
}

fn select_book(conn: &Connection, id: ItemId) -> Result<Option<Book>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM books WHERE id = ?1"))?;
    Ok(stmt.query_row([id.0], book_from_row).optional()?)
}

fn sell(tx: &Transaction<'_>, item: ItemId) -> Result<CatalogOutcome, StoreError> {
    // The check and the decrement are one statement: no copy is taken that
    // is not there, whatever runs beside it. Without `RETURNING`: SQLite
    // gathers a returning statement's rows in a temporary b-tree, opened
    // and closed each time, a quarter of a sale's instructions
    // (docs/history/benchmarks.md, "The sixth round"); the row is read back
    // by its key instead, in the same transaction.
    let sold = tx
        .prepare_cached("UPDATE books SET count = count - 1 WHERE id = ?1 AND count > 0")?
        .execute([item.0])?;
    Ok(match (sold, select_book(tx, item)?) {
        (1, Some(book)) => CatalogOutcome::Sold { book },
        (0, Some(_)) => CatalogOutcome::SoldOut { item },
        (0, None) => CatalogOutcome::NoSuchItem { item },
        (sold, _) => {
            return Err(StoreError::Corrupt(format!(
                "a sale of item {item} changed {sold} rows"
            )))
        }
    })
}

fn update(
    tx: &Transaction<'_>,
    item: ItemId,
    count: Option<i64>,
    cost: Option<Cost>,
) -> Result<CatalogOutcome, StoreError> {
    // One writer transaction (IMMEDIATE): nothing changes the row between
    // this read and the write below.
    let Some(mut book) = select_book(tx, item)? else {
        return Ok(CatalogOutcome::NoSuchItem { item });
    };
    book.count = match checked_stock(book.count, count.unwrap_or(0)) {
        Ok(next) => next,
        Err(reason) => return Ok(CatalogOutcome::Refused { item, reason }),
    };
    if let Some(cost) = cost {
        book.cost = cost;
    }
    tx.prepare_cached("UPDATE books SET count = ?2, cost_cents = ?3 WHERE id = ?1")?
        .execute(params![item.0, book.count, book.cost.cents()])?;
    Ok(CatalogOutcome::Updated { book })
}

/// Every book, by id and by topic: the catalog's in-memory view.
#[derive(Debug, Default)]
pub struct Books {
    by_id: BTreeMap<ItemId, Book>,
    by_topic: HashMap<String, BTreeSet<ItemId>>,
}

impl Books {
    fn put(&mut self, book: Book) {
        if let Some(old) = self.by_id.get(&book.id) {
            if old.topic != book.topic {
                let old_topic = old.topic.clone();
                self.unfile(&old_topic, book.id);
            }
        }
        self.by_topic
            .entry(book.topic.clone())
            .or_default()
            .insert(book.id);
        self.by_id.insert(book.id, book);
    }

    fn unfile(&mut self, topic: &str, id: ItemId) {
        if let Some(ids) = self.by_topic.get_mut(topic) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_topic.remove(topic);
            }
        }
    }

    fn book(&self, id: ItemId) -> Option<Book> {
        self.by_id.get(&id).cloned()
    }

    fn books(&self, topic: Option<&str>) -> Vec<Book> {
        match topic {
            None => self.by_id.values().cloned().collect(),
            Some(topic) => self.by_topic.get(topic).map_or_else(Vec::new, |ids| {
                ids.iter()
                    .filter_map(|id| self.by_id.get(id).cloned())
                    .collect()
            }),
        }
    }
}

impl SqliteMachine for CatalogMachine {
    const SCHEMA: &'static str = "
CREATE TABLE IF NOT EXISTS books (
    id         INTEGER PRIMARY KEY,
    title      TEXT    NOT NULL,
    topic      TEXT    NOT NULL,
    cost_cents INTEGER NOT NULL CHECK (cost_cents >= 0),
    count      INTEGER NOT NULL CHECK (count >= 0)
);
CREATE INDEX IF NOT EXISTS books_topic ON books (topic);
CREATE TABLE IF NOT EXISTS sales_reconciled (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    upto INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sales_reconciled_shards (
    shard INTEGER PRIMARY KEY CHECK (shard >= 1),
    upto  INTEGER NOT NULL
);
";

    type View = Books;

    fn load_view(conn: &Connection) -> Result<Books, StoreError> {
        let mut books = Books::default();
        let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM books"))?;
        for book in stmt.query_map([], book_from_row)? {
            books.put(book?);
        }
        Ok(books)
    }

    fn update_view(books: &mut Books, outcome: &CatalogOutcome) {
        if let Some(book) = outcome.changed_book() {
            books.put(book.clone());
        }
    }

    fn execute(tx: &Transaction<'_>, cmd: &CatalogCommand) -> Result<CatalogOutcome, StoreError> {
        match cmd {
            CatalogCommand::Sell { item } => sell(tx, *item),
            CatalogCommand::Update { item, count, cost } => update(tx, *item, *count, *cost),
            CatalogCommand::Reconciled {
                upto,
                shard,
                shards,
            } => reconciled(tx, *upto, *shard, *shards),
        }
    }

    /// The records of the sales the reconciler of some order shard has not
    /// passed are kept, whatever their age: a sale whose order is not
    /// recorded yet is never forgotten.
    fn keep_from(tx: &Transaction<'_>) -> Result<Option<u64>, StoreError> {
        let least: Option<i64> = tx
            .prepare_cached(
                "SELECT MIN(upto) FROM (SELECT upto FROM sales_reconciled
                 UNION ALL SELECT upto FROM sales_reconciled_shards)",
            )?
            .query_row([], |r| r.get(0))?;
        Ok(least.map(|upto| u64::try_from(upto).unwrap_or(0).saturating_add(1)))
    }

    /// The reconciler starts again from the first sale kept: a backup of
    /// the order service taken before this one's lacks the orders of the
    /// sales between the two, and the reconciler's progress had passed
    /// them.
    fn restored(tx: &Transaction<'_>) -> Result<(), StoreError> {
        tx.execute("DELETE FROM sales_reconciled", [])?;
        tx.execute("DELETE FROM sales_reconciled_shards", [])?;
        Ok(())
    }
}

/// Order shard `shard`'s reconciler's progress: none before the first of
/// any shard's, then 0 until its own. Shard 0's is the one row of
/// `sales_reconciled` (the table of a store of one order shard), the
/// others' in
/// `sales_reconciled_shards`.
fn select_reconciled(conn: &Connection, shard: u32) -> Result<Option<u64>, StoreError> {
    let any: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM sales_reconciled)
                 OR EXISTS (SELECT 1 FROM sales_reconciled_shards)",
        )?
        .query_row([], |r| r.get(0))?;
    if !any {
        return Ok(None);
    }
    let upto: Option<i64> = if shard == 0 {
        conn.prepare_cached("SELECT upto FROM sales_reconciled WHERE id = 1")?
            .query_row([], |r| r.get(0))
            .optional()?
    } else {
        conn.prepare_cached("SELECT upto FROM sales_reconciled_shards WHERE shard = ?1")?
            .query_row([shard], |r| r.get(0))
            .optional()?
    };
    Ok(Some(
        upto.map_or(0, |upto| u64::try_from(upto).unwrap_or(0)),
    ))
}

/// Order shard `shard`'s reconciler's progress: moves on to `upto`, never
/// back; every other of the `shards` order shards gets a progress of 0
/// if it has none yet, so that the sales it has not looked at are kept.
fn reconciled(
    tx: &Transaction<'_>,
    upto: u64,
    shard: u32,
    shards: u32,
) -> Result<CatalogOutcome, StoreError> {
    let set = |shard: u32, upto: i64| -> Result<(), StoreError> {
        if shard == 0 {
            tx.prepare_cached(
                "INSERT INTO sales_reconciled (id, upto) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET upto = MAX(upto, excluded.upto)",
            )?
            .execute([upto])?;
        } else {
            tx.prepare_cached(
                "INSERT INTO sales_reconciled_shards (shard, upto) VALUES (?1, ?2)
                 ON CONFLICT (shard) DO UPDATE SET upto = MAX(upto, excluded.upto)",
            )?
            .execute(params![shard, upto])?;
        }
        Ok(())
    };
    for other in 0..shards.max(shard + 1) {
        set(other, 0)?;
    }
    set(shard, i64::try_from(upto).unwrap_or(i64::MAX))?;
    let upto = select_reconciled(tx, shard)?.unwrap_or(0);
    Ok(CatalogOutcome::Reconciled { upto })
}

/// The SQLite catalog store.
pub type SqliteCatalog = SqliteJournal<CatalogMachine>;

#[async_trait]
impl CatalogStore for SqliteCatalog {
    async fn seed(&self, books: Vec<Book>) -> Result<bool, StoreError> {
        self.write(move |tx| {
            let existing: i64 = tx.query_row("SELECT COUNT(*) FROM books", [], |r| r.get(0))?;
            if existing > 0 {
                return Ok(false);
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO books (id, title, topic, cost_cents, count) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for book in &books {
                insert.execute(params![
                    book.id.0,
                    book.title,
                    book.topic,
                    book.cost.cents(),
                    book.count
                ])?;
            }
            Ok(true)
        })
        .await
    }

    async fn book(&self, id: ItemId) -> Result<Option<Book>, StoreError> {
        Ok(self.view().book(id))
    }

    async fn books(&self, topic: Option<String>) -> Result<Vec<Book>, StoreError> {
        Ok(self.view().books(topic.as_deref()))
    }

    async fn reconciled(&self, shard: u32) -> Result<Option<u64>, StoreError> {
        self.read(move |conn| select_reconciled(conn, shard)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(id: i64, topic: &str, count: i64) -> Book {
        Book {
            cost: Cost::from_cents(100).expect("cost"),
            count,
            id: ItemId(id),
            title: format!("book {id}"),
            topic: topic.to_owned(),
        }
    }

    #[test]
    fn the_view_finds_books_by_id_and_topic_in_id_order() {
        let mut books = Books::default();
        books.put(book(3, "a", 1));
        books.put(book(1, "a", 1));
        books.put(book(2, "b", 1));
        let ids = |found: Vec<Book>| found.iter().map(|b| b.id.0).collect::<Vec<_>>();
        assert_eq!(ids(books.books(None)), vec![1, 2, 3]);
        assert_eq!(ids(books.books(Some("a"))), vec![1, 3]);
        assert_eq!(ids(books.books(Some("c"))), Vec::<i64>::new());
        // A book put again replaces the old copy, under its topic of now.
        books.put(book(3, "b", 0));
        assert_eq!(books.book(ItemId(3)).map(|b| b.count), Some(0));
        assert_eq!(ids(books.books(Some("a"))), vec![1]);
        assert_eq!(ids(books.books(Some("b"))), vec![2, 3]);
        books.put(book(1, "b", 1));
        assert!(books.books(Some("a")).is_empty());
        assert!(
            !books.by_topic.contains_key("a"),
            "an empty topic is dropped"
        );
    }
}
