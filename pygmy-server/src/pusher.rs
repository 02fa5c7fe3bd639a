//! A catalog replica's invalidation pushes to one frontend, coalesced.
//!
//! Every change pushes its invalidation before it is answered (the lease
//! rule of [`pygmy_core::cache::lease`]). Under load, one call per change
//! would cost the catalog and the frontend a request each per sale; here
//! the invalidations that wait while a push is under way go together in
//! the next one (`POST /invalidate` with a list), and a push first lets
//! the changes answered with the first one queue theirs
//! ([`pygmy_core::burst`]), so that the changes of one raft entry take one
//! push. Each change still waits for its own invalidation: answered once
//! the push that carried it was taken, or failed, exactly as a push of its
//! own would be.

use pygmy_client::InternalClient;
use pygmy_core::api::internal::Invalidation;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The most invalidations one push carries (`POST /invalidate` takes a
/// replication call's body, far more than this many).
pub const MOST_PER_PUSH: usize = 512;

/// Invalidations waiting for a push, at most: a change waits for room
/// beyond.
const QUEUE: usize = 4096;

struct Waiting {
    invalidation: Invalidation,
    /// When the change may be answered anyway (its frontend's lease has
    /// surely run out).
    deadline: Instant,
    taken: oneshot::Sender<Result<(), String>>,
}

/// The pushes to one frontend.
pub struct Pusher {
    queue: mpsc::Sender<Waiting>,
}

impl Pusher {
    /// A pusher to `client`, and the task that pushes (not started: the
    /// node starts it with its other background work). The task ends when
    /// the pusher is dropped.
    pub fn new(client: InternalClient) -> (Self, impl std::future::Future<Output = ()> + Send) {
        let (queue, waiting) = mpsc::channel(QUEUE);
        (Pusher { queue }, push_forever(client, waiting))
    }

    /// Pushes `invalidation`, with those waiting beside it: `Ok` once the
    /// frontend took it, an error if the push failed. Gives up at
    /// `deadline` (an error too).
    pub async fn push(&self, invalidation: Invalidation, deadline: Instant) -> Result<(), String> {
        let (taken, answer) = oneshot::channel();
        let waiting = Waiting {
            invalidation,
            deadline,
            taken,
        };
        let pushed = async {
            self.queue
                .send(waiting)
                .await
                .map_err(|_| "the pusher has stopped".to_owned())?;
            answer
                .await
                .map_err(|_| "the pusher has stopped".to_owned())?
        };
        tokio::time::timeout_at(deadline, pushed)
            .await
            .map_err(|_| "not taken before the frontend's lease ran out".to_owned())?
    }
}

/// One push at a time, of every invalidation waiting (up to
/// [`MOST_PER_PUSH`]).
async fn push_forever(client: InternalClient, mut waiting: mpsc::Receiver<Waiting>) {
    while let Some(first) = waiting.recv().await {
        // The changes of one raft entry are answered at once, and each
        // queues its invalidation when its task next runs: taken as one
        // burst, or the first push carries the first change alone and the
        // rest wait for a second push.
        let mut batch = pygmy_core::burst::take(first, &mut waiting, MOST_PER_PUSH).await;
        // Those whose change gave up waiting need no push.
        batch.retain(|w| !w.taken.is_closed());
        let Some(latest) = batch.iter().map(|w| w.deadline).max() else {
            continue;
        };
        let invalidations: Vec<Invalidation> =
            batch.iter().map(|w| w.invalidation.clone()).collect();
        let pushed = tokio::time::timeout_at(latest, client.invalidate_all(&invalidations)).await;
        let result = match pushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("not taken before the frontend's lease ran out".to_owned()),
        };
        for w in batch {
            let _ = w.taken.send(result.clone());
        }
    }
}
