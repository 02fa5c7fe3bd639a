//! Group commit: the ops proposed to the leader while it writes are
//! written together, as one raft entry.
//!
//! openraft 0.9's core appends each `client_write` by itself and waits
//! for its fsync before it takes the next, so one op per entry makes
//! every write pay a whole fsync on the leader, its own replication round
//! and its own apply transaction on every replica. Here a writer takes
//! every op that is waiting (up to [`MAX_OPS`]), proposes them as one
//! [`Proposal`], and answers each op with its own outcome. At most
//! [`IN_FLIGHT`] entries are under way at once: while they are, the next
//! ops gather, and are taken as one burst ([`crate::burst`]: the ops woken
//! together go together, with no timer to wait out, which gives more buys
//! a second than a 1 ms linger: docs/history/benchmarks.md, "The seventh
//! round").
//!
//! A leader that wrote nothing for a tick ([`TICK`] by default) writes an
//! empty entry: its
//! stamp moves the journal's clock on, which ages the op records (see
//! `crate::journal::sqlite`, `MAX_CLOCK_STEP`).
//!
//! Entries are written in the service's [format](mod@super::format): while it
//! is [`ONE_OP`] (some member may read nothing newer), each op is an entry
//! of its own and an idle leader writes no tick (that format has no empty
//! entry; the op records then age only as ops are written).
//!
//! Nothing changes for a caller: an op is answered once it is committed
//! and applied on the leader, in the order the leader took it. A write
//! that fails (the leader stepped down, the entry was not committed in
//! time) fails every op of its entry; each caller retries its own op,
//! which its op id makes harmless.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::Instrument;

use super::format::{Written, ONE_OP};
use super::types::{Proposal, RaftTypes, MAX_OPS_PER_ENTRY};
use crate::journal::{Machine, Op};

/// The most ops written as one entry: with
/// [`super::config::MAX_APPEND_ENTRIES`] entries per append, an append of
/// the largest ops still fits in a replication call (tested below).
pub const MAX_OPS: usize = 256;

/// Entries under way at once: one, so that the next ops gather while it is
/// replicated and applied (two make smaller entries and no more buys a
/// second: docs/history/benchmarks.md, "The fifth round" and "The ninth
/// round").
pub const IN_FLIGHT: usize = 1;

/// Ops waiting for a writer, at most: a proposer waits for room beyond.
const QUEUE: usize = 8192;

/// How long a leader goes without writing before it writes an empty entry
/// (a tick), stamped with its clock, by default
/// ([`super::RaftConfig::tick`]): the journal's clock moves on by at most
/// [`crate::journal::sqlite::MAX_CLOCK_STEP`] between two stamps, so an
/// idle service stamps more often than that for its op records to age as
/// time passes.
pub const TICK: Duration = Duration::from_secs(10);

// An entry never holds more ops than the state machine takes.
const _: () = assert!(MAX_OPS <= MAX_OPS_PER_ENTRY);

/// Why an op was not written.
#[derive(Debug, Clone)]
pub(super) enum NotWritten {
    /// Not written now (this replica no longer leads, or the entry was not
    /// committed in time): the op may be proposed again.
    Retry(String),
    /// The raft replica has stopped.
    Stopped(String),
}

type Answer<M> = Result<<M as Machine>::Outcome, NotWritten>;

struct Waiting<M: Machine> {
    op: Op<M::Command>,
    answer: oneshot::Sender<Answer<M>>,
}

/// Where the ops proposed on this replica wait for their entry.
pub(super) struct Batcher<M: Machine> {
    queue: mpsc::Sender<Waiting<M>>,
}

impl<M: Machine> Batcher<M> {
    /// Starts the writer of `raft`: it runs until the batcher is dropped.
    /// A write waits at most `limit` for its commit; a leader that wrote
    /// nothing for `tick` writes an empty entry. Entries are written in
    /// the format `written` says.
    pub(super) fn start(
        raft: Raft<RaftTypes<M>>,
        written: Arc<Written>,
        limit: Duration,
        tick: Duration,
    ) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let writer = Writer {
            raft,
            written,
            limit,
        };
        tokio::spawn(write_forever(writer, waiting, tick).in_current_span());
        Batcher { queue }
    }

    /// Writes `op` with the ops waiting beside it; answers its outcome
    /// once its entry is committed and applied here.
    pub(super) async fn write(&self, op: Op<M::Command>) -> Answer<M> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Waiting { op, answer })
            .await
            .map_err(|_| NotWritten::Stopped("the raft writer has stopped".to_owned()))?;
        answered
            .await
            .map_err(|_| NotWritten::Stopped("the raft writer has stopped".to_owned()))?
    }
}

/// What writes the entries: the raft replica, the format the service
/// writes, and how long a write may wait for its commit.
struct Writer<M: Machine> {
    raft: Raft<RaftTypes<M>>,
    written: Arc<Written>,
    limit: Duration,
}

impl<M: Machine> Clone for Writer<M> {
    fn clone(&self) -> Self {
        Writer {
            raft: self.raft.clone(),
            written: Arc::clone(&self.written),
            limit: self.limit,
        }
    }
}

/// Takes the waiting ops, as many as there are (up to [`MAX_OPS`], or one
/// while the service writes [`ONE_OP`]), each time an entry can be under
/// way, and writes them as one entry; on a leader that wrote nothing for
/// `tick`, writes an empty entry (none in [`ONE_OP`]).
async fn write_forever<M: Machine>(
    writer: Writer<M>,
    mut waiting: mpsc::Receiver<Waiting<M>>,
    tick: Duration,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // A slot first: while every slot is taken, ops gather.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match tokio::time::timeout(tick, waiting.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(_) => {
                if leads(&writer.raft) && writer.written.get() != ONE_OP {
                    let writer = writer.clone();
                    tokio::spawn(
                        async move {
                            writer.write_entry(Vec::new()).await;
                            drop(slot);
                        }
                        .in_current_span(),
                    );
                }
                continue;
            }
        };
        let most = if writer.written.get() == ONE_OP {
            1
        } else {
            MAX_OPS
        };
        let batch = crate::burst::take(first, &mut waiting, most).await;
        let writer = writer.clone();
        tokio::spawn(
            async move {
                writer.write_entry(batch).await;
                drop(slot);
            }
            .in_current_span(),
        );
    }
}

/// Whether this replica leads now.
fn leads<M: Machine>(raft: &Raft<RaftTypes<M>>) -> bool {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    metrics.current_leader == Some(metrics.id)
}

impl<M: Machine> Writer<M> {
    /// Writes `batch` as one entry, in the service's format, and answers
    /// each op of it.
    async fn write_entry(&self, batch: Vec<Waiting<M>>) {
        let (ops, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|w| (w.op, w.answer)).unzip();
        let count = ops.len();
        let proposal = Proposal::written(self.written.get(), ops);
        let written = tokio::time::timeout(self.limit, self.raft.client_write(proposal)).await;
        let failure = match written {
            Ok(Ok(response)) if response.data.len() == count => {
                for (answer, outcome) in answers.into_iter().zip(response.data) {
                    // The proposer may have given up waiting: nothing to do.
                    let _ = answer.send(Ok(outcome));
                }
                return;
            }
            Ok(Ok(response)) => NotWritten::Stopped(format!(
                "an entry of {count} ops applied with {} outcomes",
                response.data.len()
            )),
            Ok(Err(RaftError::APIError(err))) => NotWritten::Retry(err.to_string()),
            Ok(Err(RaftError::Fatal(err))) => NotWritten::Stopped(err.to_string()),
            Err(_) => NotWritten::Retry("not committed in time".to_owned()),
        };
        for answer in answers {
            let _ = answer.send(Err(failure.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::raft::AppendEntriesRequest;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    use super::*;
    use crate::order::{OrderCommand, OrderMachine};
    use crate::replication::raft::config::MAX_APPEND_ENTRIES;
    use crate::replication::raft::messages::Addressed;
    use crate::types::{IdempotencyKey, ItemId};

    /// The largest op a user can cause: an order under the longest key.
    fn largest_op(n: usize) -> Op<OrderCommand> {
        let raw = format!("{n:08}{}", "k".repeat(IdempotencyKey::MAX_LEN - 8));
        let key = IdempotencyKey::parse(&raw).expect("a valid key");
        Op {
            id: OrderCommand::op_id(&key),
            cmd: OrderCommand::Record {
                key,
                item: ItemId(i64::MAX),
                created: "2026-11-25T22:22:22.222Z".to_owned(),
                base: 0,
            },
        }
    }

    #[test]
    fn the_largest_append_fits_in_a_replication_call() {
        let leader = CommittedLeaderId::new(u64::MAX, u64::MAX);
        let entries: Vec<Entry<RaftTypes<OrderMachine>>> = (0..MAX_APPEND_ENTRIES)
            .map(|index| Entry {
                log_id: LogId::new(leader, u64::MAX - index),
                payload: EntryPayload::Normal(Proposal::now(
                    (0..MAX_OPS).map(largest_op).collect(),
                )),
            })
            .collect();
        let append = Addressed {
            cluster: "c".repeat(64),
            to: u64::MAX,
            request: AppendEntriesRequest::<RaftTypes<OrderMachine>> {
                vote: Vote::new_committed(u64::MAX, u64::MAX),
                prev_log_id: Some(LogId::new(leader, u64::MAX)),
                leader_commit: Some(LogId::new(leader, u64::MAX)),
                entries,
            },
        };
        let bytes = crate::replication::rpc::encode(&append)
            .expect("encode")
            .len();
        eprintln!("the largest append: {bytes} bytes");
        assert!(
            bytes < crate::replication::MAX_CALL_BYTES * 3 / 4,
            "{bytes} bytes: too close to the limit of a call"
        );
    }
}
