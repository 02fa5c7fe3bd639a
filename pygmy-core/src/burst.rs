//! Taking what waits in a queue as one burst.
//!
//! Work comes in bursts: the answers of one raft entry let as many callers
//! go on at once, and each queues its next request when its task runs, one
//! task after another. A taker that took only what had queued by the time
//! it woke would take the burst's first item alone, and the rest would wait
//! for its next turn (a whole raft round, or a whole request). [`take`]
//! first lets the other tasks run [`SETTLE`] times, so that those woken
//! with the first item queue theirs, and takes them together. No timer: a
//! timer would wait tokio's tick, a millisecond, and an item alone is taken
//! at once (docs/history/benchmarks.md, "The seventh round").
//!
//! Used by the raft batcher (ops into one entry) and by the server's
//! gathered calls and invalidation pushes.

use tokio::sync::mpsc;

/// Times [`take`] lets the other tasks run before it takes what waits.
pub const SETTLE: usize = 3;

/// `first`, and after letting the tasks woken with it queue theirs,
/// whatever waits in `queue` beside it, up to `most` in all.
pub async fn take<T>(first: T, queue: &mut mpsc::Receiver<T>, most: usize) -> Vec<T> {
    for _ in 0..SETTLE {
        tokio::task::yield_now().await;
    }
    let mut burst = vec![first];
    while burst.len() < most {
        match queue.try_recv() {
            Ok(next) => burst.push(next),
            Err(_) => break,
        }
    }
    burst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_queued_by_tasks_woken_together_is_taken_whole_up_to_the_most() {
        let (sender, mut queue) = mpsc::channel(64);
        for n in 0..10 {
            let sender = sender.clone();
            // Spawned, not sent: on this one-thread runtime they queue only
            // when the taker lets them run.
            tokio::spawn(async move { sender.send(n).await });
        }
        let burst = take(100, &mut queue, 8).await;
        assert_eq!(burst, vec![100, 0, 1, 2, 3, 4, 5, 6]);
        let rest = take(200, &mut queue, 8).await;
        assert_eq!(rest, vec![200, 7, 8, 9]);
    }
}
