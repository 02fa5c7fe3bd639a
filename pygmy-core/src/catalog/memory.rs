//! The catalog in memory.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{checked_stock, CatalogCommand, CatalogMachine, CatalogOutcome, CatalogStore};
use crate::error::StoreError;
use crate::journal::memory::{MemoryJournal, MemoryState};
use crate::types::{Book, ItemId};

/// The books, by id, and the reconciler's progress.
#[derive(Debug, Default)]
pub struct CatalogState {
    books: BTreeMap<ItemId, Book>,
    /// Each order shard's reconciler's progress, by shard.
    reconciled: BTreeMap<u32, u64>,
}

impl MemoryState for CatalogState {
    type Machine = CatalogMachine;

    fn execute(&mut self, cmd: &CatalogCommand) -> CatalogOutcome {
        match cmd {
            CatalogCommand::Sell { item } => match self.books.get_mut(item) {
                None => CatalogOutcome::NoSuchItem { item: *item },
                Some(book) if book.count > 0 => {
                    book.count -= 1;
                    CatalogOutcome::Sold { book: book.clone() }
                }
                Some(_) => CatalogOutcome::SoldOut { item: *item },
            },
            CatalogCommand::Update { item, count, cost } => {
                let Some(book) = self.books.get_mut(item) else {
                    return CatalogOutcome::NoSuchItem { item: *item };
                };
                let next = match checked_stock(book.count, count.unwrap_or(0)) {
                    Ok(next) => next,
                    Err(reason) => {
                        return CatalogOutcome::Refused {
                            item: *item,
                            reason,
                        }
                    }
                };
                book.count = next;
                if let Some(cost) = cost {
                    book.cost = *cost;
                }
                CatalogOutcome::Updated { book: book.clone() }
            }
            CatalogCommand::Reconciled {
                upto,
                shard,
                shards,
            } => {
                for other in 0..*shards {
                    self.reconciled.entry(other).or_insert(0);
                }
                let known = self.reconciled.entry(*shard).or_insert(0);
                *known = (*known).max(*upto);
                CatalogOutcome::Reconciled { upto: *known }
            }
        }
    }
}

/// The in-memory catalog store.
pub type MemoryCatalog = MemoryJournal<CatalogState>;

#[async_trait]
impl CatalogStore for MemoryCatalog {
    async fn seed(&self, books: Vec<Book>) -> Result<bool, StoreError> {
        Ok(self.write(|state| {
            if !state.books.is_empty() {
                return false;
            }
            state.books = books.into_iter().map(|b| (b.id, b)).collect();
            true
        }))
    }

    async fn book(&self, id: ItemId) -> Result<Option<Book>, StoreError> {
        Ok(self.read(|state| state.books.get(&id).cloned()))
    }

    async fn reconciled(&self, shard: u32) -> Result<Option<u64>, StoreError> {
        Ok(self.read(|state| {
            (!state.reconciled.is_empty())
                .then(|| state.reconciled.get(&shard).copied().unwrap_or(0))
        }))
    }

    async fn books(&self, topic: Option<String>) -> Result<Vec<Book>, StoreError> {
        Ok(self.read(|state| {
            state
                .books
                .values()
                .filter(|b| topic.as_deref().is_none_or(|t| b.topic == t))
                .cloned()
                .collect()
        }))
    }
}
