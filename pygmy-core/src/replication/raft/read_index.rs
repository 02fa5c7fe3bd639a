//! ReadIndex rounds shared by every read waiting for one (as etcd does).
//!
//! A fresh read needs the leader to confirm it still leads (a heartbeat
//! round to a majority) after the read arrived, and the commit index it
//! had then to be applied. openraft's `ensure_linearizable` runs one such
//! round per call; here one round serves every read that was waiting when
//! it started. A read that arrives while a round is under way waits for
//! the next one, which starts after it arrived: its answer is as fresh as
//! a round of its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{LogId, Raft};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::types::{NodeId, RaftTypes};
use crate::journal::Machine;

/// What a round answers: the read index, or why there is none.
type Answer = Result<Option<LogId<NodeId>>, String>;

/// The reads waiting for the next round, and whether rounds are running.
#[derive(Default)]
struct Queue {
    waiting: Vec<oneshot::Sender<Answer>>,
    running: bool,
}

/// The ReadIndex rounds of one replica.
pub(super) struct ReadRounds<M: Machine> {
    raft: Raft<RaftTypes<M>>,
    /// How long one round may take.
    limit: Duration,
    queue: Arc<Mutex<Queue>>,
}

impl<M: Machine> ReadRounds<M> {
    /// Rounds on `raft`, each bounded by `limit`.
    pub(super) fn new(raft: Raft<RaftTypes<M>>, limit: Duration) -> Self {
        ReadRounds {
            raft,
            limit,
            queue: Arc::default(),
        }
    }

    /// The read index of a round that started after this call: once this
    /// replica has confirmed it leads and applied its commit index of
    /// then.
    pub(super) async fn read_index(&self) -> Answer {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = lock(&self.queue);
            queue.waiting.push(answer);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            let queue = Arc::clone(&self.queue);
            let raft = self.raft.clone();
            let limit = self.limit;
            tokio::spawn(run_rounds(raft, queue, limit).in_current_span());
        }
        answered
            .await
            .map_err(|_| "the read round was dropped".to_owned())?
    }
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs rounds while reads wait: each round takes every read waiting when
/// it starts.
async fn run_rounds<M: Machine>(
    raft: Raft<RaftTypes<M>>,
    queue: Arc<Mutex<Queue>>,
    limit: Duration,
) {
    loop {
        let readers = {
            let mut queue = lock(&queue);
            if queue.waiting.is_empty() {
                queue.running = false;
                return;
            }
            std::mem::take(&mut queue.waiting)
        };
        let answer = match tokio::time::timeout(limit, raft.ensure_linearizable()).await {
            Ok(Ok(read)) => Ok(read),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("leadership not confirmed in time".to_owned()),
        };
        for reader in readers {
            let _ = reader.send(answer.clone());
        }
    }
}
