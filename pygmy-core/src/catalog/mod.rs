//! The catalog: books and their stock.
//!
//! Changes are [`CatalogCommand`]s applied through the journal (so they
//! replicate); reads are the [`CatalogStore`] methods. A sale is one
//! conditional step at the store: a copy is taken only if one is there, so
//! stock never goes below zero however many buys race.

pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::journal::{Journal, Machine, OpId};
use crate::types::{Book, Cost, IdempotencyKey, ItemId};

/// The most copies of one book the store holds (a bound that keeps every
/// sum exact).
pub const MAX_COUNT: i64 = 1_000_000_000_000;

/// The prefix of every sale's op id (see [`CatalogCommand::sale_op_id`]),
/// by which the journal lists the sales.
pub const SALE_PREFIX: &str = "sale:";

/// The prefix of the op id of an update made under an idempotency key.
pub const UPDATE_PREFIX: &str = "update:";

/// The prefix of the op id of a [`CatalogCommand::Reconciled`].
pub const RECONCILED_PREFIX: &str = "reconciled:";

/// A change to the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogCommand {
    /// Sell one copy of `item` if there is one in stock.
    Sell {
        /// The book.
        item: ItemId,
    },
    /// Change the stock of `item` by `count` (a delta) and/or set its cost.
    /// Both or neither: a change that would take stock below 0 changes
    /// nothing.
    Update {
        /// The book.
        item: ItemId,
        /// Stock delta.
        count: Option<i64>,
        /// New price.
        cost: Option<Cost>,
    },
    /// The order service has recorded the order of every sale up to
    /// `upto` (their place in the apply order, as `GET /sales` lists
    /// them): the reconciler's progress, kept with the sales so that the
    /// next order leader resumes from it, and so that the records of the
    /// sales after it are never pruned. It only moves forward. Each order
    /// shard's reconciler keeps a progress of its own (its sales are
    /// those of its keys), and the records of the sales after the least
    /// of them are kept.
    Reconciled {
        /// The last sale whose order is recorded, and every one before it.
        upto: u64,
        /// The order shard whose reconciler it is: 0, and not written, in
        /// a store of one order shard.
        #[serde(default, skip_serializing_if = "is_zero")]
        shard: u32,
        /// The order shards of the store (1, and not written, for one):
        /// until each has kept a progress, its progress counts as 0.
        #[serde(default = "one", skip_serializing_if = "is_one")]
        shards: u32,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl CatalogCommand {
    /// The op id of the sale made for the buy of `key`: one sale per key,
    /// so a retried buy never sells a second copy.
    ///
    /// ```
    /// use pygmy_core::catalog::CatalogCommand;
    /// use pygmy_core::IdempotencyKey;
    ///
    /// let key = IdempotencyKey::parse("buy-42").unwrap();
    /// let id = CatalogCommand::sale_op_id(&key);
    /// assert_eq!(CatalogCommand::sale_key(&id), Some(key));
    /// ```
    pub fn sale_op_id(key: &IdempotencyKey) -> OpId {
        OpId(format!("{SALE_PREFIX}{key}"))
    }

    /// The buy's key of a sale's op id; `None` for any other op.
    pub fn sale_key(id: &OpId) -> Option<IdempotencyKey> {
        IdempotencyKey::parse(id.0.strip_prefix(SALE_PREFIX)?).ok()
    }

    /// The op id of the update (`PUT /item`) made under `key`: a retried
    /// update with the same key is applied once.
    ///
    /// ```
    /// use pygmy_core::catalog::CatalogCommand;
    /// use pygmy_core::IdempotencyKey;
    ///
    /// let key = IdempotencyKey::parse("restock-7").unwrap();
    /// assert_eq!(CatalogCommand::update_op_id(&key).0, "update:restock-7");
    /// // Never the id of a sale, whatever the key.
    /// assert_eq!(CatalogCommand::sale_key(&CatalogCommand::update_op_id(&key)), None);
    /// ```
    pub fn update_op_id(key: &IdempotencyKey) -> OpId {
        OpId(format!("{UPDATE_PREFIX}{key}"))
    }

    /// The op id of the progress of order shard `shard`'s reconciler up
    /// to sale `upto` (`reconciled:<upto>` for shard 0, the id of a store
    /// of one order shard).
    pub fn reconciled_op_id(shard: u32, upto: u64) -> OpId {
        if shard == 0 {
            OpId(format!("{RECONCILED_PREFIX}{upto}"))
        } else {
            OpId(format!("{RECONCILED_PREFIX}{shard}:{upto}"))
        }
    }
}

/// What a catalog command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogOutcome {
    /// One copy was taken; the book as it is after the sale.
    Sold {
        /// The book after the sale.
        book: Book,
    },
    /// No copy in stock: nothing changed.
    SoldOut {
        /// The book.
        item: ItemId,
    },
    /// There is no book with this id: nothing changed.
    NoSuchItem {
        /// The id asked for.
        item: ItemId,
    },
    /// The update was made; the book as it is after it.
    Updated {
        /// The book after the update.
        book: Book,
    },
    /// The update was impossible (stock below zero or past [`MAX_COUNT`]):
    /// nothing changed.
    Refused {
        /// The book.
        item: ItemId,
        /// Why, for a person.
        reason: String,
    },
    /// The reconciler's progress, as it is after the command (never back).
    Reconciled {
        /// The last sale whose order is recorded, and every one before it.
        upto: u64,
    },
}

impl CatalogOutcome {
    /// The book as the command left it, if it changed.
    pub fn changed_book(&self) -> Option<&Book> {
        match self {
            CatalogOutcome::Sold { book } | CatalogOutcome::Updated { book } => Some(book),
            _ => None,
        }
    }
}

/// The catalog as a replicated state machine.
#[derive(Debug, Clone, Copy)]
pub struct CatalogMachine;

impl Machine for CatalogMachine {
    type Command = CatalogCommand;
    type Outcome = CatalogOutcome;
}

/// The new stock after `delta`, or why it is impossible. Shared by both
/// backends, so that they refuse the same updates.
pub(crate) fn checked_stock(count: i64, delta: i64) -> Result<i64, String> {
    match count.checked_add(delta) {
        Some(next) if next < 0 => Err(format!(
            "stock cannot go below 0 (it is {count}, the change is {delta})"
        )),
        Some(next) if next <= MAX_COUNT => Ok(next),
        _ => Err(format!("stock cannot exceed {MAX_COUNT}")),
    }
}

/// A catalog replica's storage: the journal of changes, and the reads.
///
/// Reads see every change whose `apply` returned before the read began.
///
/// ```
/// use pygmy_core::catalog::memory::MemoryCatalog;
/// use pygmy_core::catalog::{CatalogCommand, CatalogOutcome, CatalogStore};
/// use pygmy_core::journal::{Journal, Op, Source};
/// use pygmy_core::types::{default_books, IdempotencyKey, ItemId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), pygmy_core::StoreError> {
/// let store = MemoryCatalog::new();
/// store.seed(default_books()).await?;
/// let key = IdempotencyKey::parse("buy-1").unwrap();
/// let sale = Op { id: CatalogCommand::sale_op_id(&key), cmd: CatalogCommand::Sell { item: ItemId(7) } };
/// let here = Source::Local { node: "catalog-a".into() };
/// let first = store.apply(here.clone(), sale.clone()).await?;
/// let again = store.apply(here, sale).await?; // the same op id: applied once
/// assert!(first.fresh && !again.fresh);
/// assert!(matches!(again.outcome, CatalogOutcome::Sold { ref book } if book.count == 99));
/// assert_eq!(store.book(ItemId(7)).await?.map(|b| b.count), Some(99));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait CatalogStore: Journal<CatalogMachine> {
    /// Inserts `books` if the catalog has none yet (a new replica); returns
    /// whether it did. Not journaled: every replica seeds the same books
    /// from the same configuration. Durable when it returns.
    async fn seed(&self, books: Vec<Book>) -> Result<bool, StoreError>;

    /// The book with this id.
    async fn book(&self, id: ItemId) -> Result<Option<Book>, StoreError>;

    /// Every book, or those of `topic` (exact match), by id.
    async fn books(&self, topic: Option<String>) -> Result<Vec<Book>, StoreError>;

    /// The progress of order shard `shard`'s reconciler
    /// ([`CatalogCommand::Reconciled`]): every sale of its keys up to it
    /// has its order; `None` until the first of any shard.
    async fn reconciled(&self, shard: u32) -> Result<Option<u64>, StoreError>;
}
