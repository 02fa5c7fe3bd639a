//! ReadIndex rounds shared by every read waiting for one (as etcd does).
//!
//! A fresh read needs the leader to confirm it still leads (a heartbeat
//! round to a majority) after the read arrived, and the commit index it
//! had then to be applied. openraft's `ensure_linearizable` runs one such
//! round per call, and a follower asks the leader for it once per read;
//! here one round (on the leader) or one call to the leader (on a
//! follower) serves every read that was waiting when it started. A read
//! that arrives while a round is under way waits for the next one, which
//! starts after it arrived: its answer is as fresh as a round of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::LogId;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::types::NodeId;

/// What a round answers: the read index, or why there is none.
pub(super) type Answer = Result<Option<LogId<NodeId>>, String>;

/// One round: a future that answers the read index.
pub(super) type Round = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// What starts a round.
type StartRound = Arc<dyn Fn() -> Round + Send + Sync>;

/// The reads waiting for the next round, and whether rounds are running.
#[derive(Default)]
struct Queue {
    waiting: Vec<oneshot::Sender<Answer>>,
    running: bool,
}

/// ReadIndex rounds: one at a time, each serving the reads that waited.
pub(super) struct ReadRounds {
    round: StartRound,
    /// How long one round may take.
    limit: Duration,
    queue: Arc<Mutex<Queue>>,
}

impl ReadRounds {
    /// Rounds of `round`, each bounded by `limit`.
    pub(super) fn new(round: impl Fn() -> Round + Send + Sync + 'static, limit: Duration) -> Self {
        ReadRounds {
            round: Arc::new(round),
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
            let round = Arc::clone(&self.round);
            tokio::spawn(run_rounds(round, queue, self.limit).in_current_span());
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
async fn run_rounds(round: StartRound, queue: Arc<Mutex<Queue>>, limit: Duration) {
    loop {
        let readers = {
            let mut queue = lock(&queue);
            if queue.waiting.is_empty() {
                queue.running = false;
                return;
            }
            std::mem::take(&mut queue.waiting)
        };
        let answer = match tokio::time::timeout(limit, round()).await {
            Ok(answer) => answer,
            Err(_) => Err("no read index in time".to_owned()),
        };
        for reader in readers {
            let _ = reader.send(answer.clone());
        }
    }
}
