//! An in-memory journal, for tests and for a node that needs no durability.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Applied, AppliedOp, Entry, HighWater, Journal, Machine, Op, OpId, Source};
use crate::error::StoreError;

/// A service's state kept in memory, with the command semantics on it.
pub trait MemoryState: Default + Send + 'static {
    /// The service this is the state of.
    type Machine: Machine;

    /// Applies `cmd`; must match the SQLite backend's semantics exactly
    /// (the conformance suite checks that it does).
    fn execute(
        &mut self,
        cmd: &<Self::Machine as Machine>::Command,
    ) -> <Self::Machine as Machine>::Outcome;
}

type Command<S> = <<S as MemoryState>::Machine as Machine>::Command;
type Outcome<S> = <<S as MemoryState>::Machine as Machine>::Outcome;

struct Inner<S: MemoryState> {
    state: S,
    outcomes: HashMap<OpId, Outcome<S>>,
    log: BTreeMap<(String, u64), Op<Command<S>>>,
    /// Op ids in apply order (`seq` is the position, from 1).
    order: Vec<OpId>,
    high_waters: BTreeMap<String, u64>,
}

/// A [`Journal`] whose state and log live in memory behind one mutex.
pub struct MemoryJournal<S: MemoryState> {
    inner: Mutex<Inner<S>>,
    incarnation: String,
}

impl<S: MemoryState> Default for MemoryJournal<S> {
    fn default() -> Self {
        MemoryJournal {
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            inner: Mutex::new(Inner {
                state: S::default(),
                outcomes: HashMap::new(),
                log: BTreeMap::new(),
                order: Vec::new(),
                high_waters: BTreeMap::new(),
            }),
        }
    }
}

impl<S: MemoryState> MemoryJournal<S> {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` over the state (a short read, under the lock).
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.lock().state)
    }

    /// Runs `f` over the state to change it outside the journal (seeding).
    pub fn write<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.lock().state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<S>> {
        // A panic while holding the lock leaves the state as the last
        // complete step left it (every step below is all-or-nothing).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl<S: MemoryState> Journal<S::Machine> for MemoryJournal<S> {
    async fn apply(
        &self,
        source: Source,
        op: Op<Command<S>>,
    ) -> Result<Applied<Outcome<S>>, StoreError> {
        apply_locked(&mut self.lock(), source, op)
    }

    async fn apply_entries(&self, entries: Vec<Entry<Command<S>>>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        // All or none: find a collision before changing anything.
        let mut seen = std::collections::HashSet::new();
        for entry in &entries {
            let key = (entry.origin.clone(), entry.origin_seq);
            let taken = inner.log.get(&key).is_some_and(|op| op.id != entry.op.id);
            if taken || !seen.insert(key) {
                return Err(StoreError::Corrupt(format!(
                    "op {} of {} is already recorded under another op id",
                    entry.origin_seq, entry.origin
                )));
            }
        }
        for entry in entries {
            let source = Source::Peer {
                origin: entry.origin,
                origin_seq: entry.origin_seq,
            };
            apply_locked(&mut inner, source, entry.op)?;
        }
        Ok(())
    }

    async fn entries(
        &self,
        origin: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry<Command<S>>>, StoreError> {
        let inner = self.lock();
        let start = (origin.to_owned(), after.saturating_add(1));
        let end = (origin.to_owned(), u64::MAX);
        Ok(inner
            .log
            .range(start..=end)
            .take(limit)
            .map(|((origin, origin_seq), op)| Entry {
                origin: origin.clone(),
                origin_seq: *origin_seq,
                op: op.clone(),
            })
            .collect())
    }

    async fn applied(
        &self,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AppliedOp<Outcome<S>>>, StoreError> {
        let inner = self.lock();
        let skip = usize::try_from(after).unwrap_or(usize::MAX);
        Ok(inner
            .order
            .iter()
            .enumerate()
            .skip(skip)
            .filter(|(_, id)| id.0.starts_with(prefix))
            .take(limit)
            .filter_map(|(i, id)| {
                Some(AppliedOp {
                    seq: i as u64 + 1,
                    id: id.clone(),
                    outcome: inner.outcomes.get(id)?.clone(),
                })
            })
            .collect())
    }

    async fn high_waters(&self) -> Result<Vec<HighWater>, StoreError> {
        Ok(self
            .lock()
            .high_waters
            .iter()
            .map(|(origin, &seq)| HighWater {
                origin: origin.clone(),
                seq,
            })
            .collect())
    }

    async fn outcome(&self, id: &OpId) -> Result<Option<Outcome<S>>, StoreError> {
        Ok(self.lock().outcomes.get(id).cloned())
    }

    fn incarnation(&self) -> &str {
        &self.incarnation
    }
}

/// [`Journal::apply`] with the lock held.
fn apply_locked<S: MemoryState>(
    inner: &mut Inner<S>,
    source: Source,
    op: Op<Command<S>>,
) -> Result<Applied<Outcome<S>>, StoreError> {
    let (origin, origin_seq, local) = match source {
        Source::Local { node } => {
            let next = inner.high_waters.get(&node).copied().unwrap_or(0) + 1;
            (node, next, true)
        }
        Source::Peer { origin, origin_seq } => (origin, origin_seq, false),
    };
    let high = inner.high_waters.entry(origin.clone()).or_insert(0);
    if let Some(outcome) = inner.outcomes.get(&op.id).cloned() {
        if !local {
            *high = (*high).max(origin_seq);
        }
        return Ok(Applied {
            outcome,
            fresh: false,
            origin_seq: None,
        });
    }
    let key = (origin, origin_seq);
    if inner.log.contains_key(&key) {
        return Err(StoreError::Corrupt(format!(
            "op {} of {} is already recorded under another op id",
            key.1, key.0
        )));
    }
    *high = (*high).max(origin_seq);
    let outcome = inner.state.execute(&op.cmd);
    inner.outcomes.insert(op.id.clone(), outcome.clone());
    inner.order.push(op.id.clone());
    inner.log.insert(key, op);
    Ok(Applied {
        outcome,
        fresh: true,
        origin_seq: local.then_some(origin_seq),
    })
}
