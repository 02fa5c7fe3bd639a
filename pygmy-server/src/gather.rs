//! Calls to a backend that come together, made as one.
//!
//! Under load a node makes the same call for many requests at once: an
//! order replica asks the catalog for a sale per buy, a frontend asks an
//! order replica for each buy and a catalog replica for each lookup its
//! cache misses. One request per call costs both sides a request each; a
//! [`Gatherer`] puts the items asked together into one *call of many*
//! (`POST /sales`, `POST /buys`, `POST /lookups`) and answers each caller
//! with its own item's result. An item with no other under way is asked
//! *alone*, in a call of its own, at once ([`Gatherer::ask`]): a gathered
//! call would only add its wait.
//!
//! A call never waits for another call to come back: the gatherer takes
//! the first item with those woken with it ([`pygmy_core::burst`]), then
//! calls with them at once, so a request never waits for a free call.
//!
//! Each item is answered on its own: with what a call of its own would
//! have answered, or asked again alone when the backend replica failed it
//! (another replica may serve it) or refused the gathered call as a whole
//! (a replica of another version, which does not know it). Only calls safe
//! to repeat are gathered (keyed writes, and reads), so asking one again
//! is harmless. A gathered call that no replica took answers each item
//! that no replica could serve (503), as a call of its own would have.
//!
//! The price: a gathered call is answered when its slowest item is. An
//! item held up past the attempt's time limit (a sale waiting out a frozen
//! catalog leader) holds up the others of its call, and the whole call is
//! then tried on the next replica: harmless by key, but the quick items
//! wait with the slow one, where alone they would have been answered.
//!
//! The serving side of a call of many is here too: [`check_count`] (first,
//! before readiness) and [`serve_each`] (each item made at once, each
//! failure answered as the [`Refusal`] its own call would have met).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::join_all;
use pygmy_client::ClientError;
use pygmy_core::api::internal::Refusal;
use pygmy_core::balance::CallError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::http::ApiError;

/// Items waiting for a call, at most: a caller waits for room beyond.
const QUEUE: usize = 4096;

/// What became of an item asked of a [`Gatherer`].
#[derive(Debug)]
enum Gathered<R> {
    /// The backend's answer to it, as a call of its own would have met it.
    Answered(Result<R, ApiError>),
    /// Not answered with the others: ask it alone.
    Alone,
}

/// What a gathered call answers: each item's result, in order, or an error
/// for the whole call.
pub type CallResult<R> = Result<Vec<Result<R, ClientError>>, CallError<ClientError>>;

struct Waiting<T, R> {
    item: T,
    answer: oneshot::Sender<Gathered<R>>,
}

/// Gathers items of type `T` into calls that answer an `R` for each.
pub struct Gatherer<T, R> {
    queue: mpsc::Sender<Waiting<T, R>>,
    /// The items being made, gathered or alone.
    under_way: AtomicUsize,
}

/// One item counted in [`Gatherer::under_way`] while it is made.
struct UnderWay<'a>(&'a AtomicUsize);

impl<'a> UnderWay<'a> {
    /// Counts one more; whether it is the only one.
    fn enter(count: &'a AtomicUsize) -> (Self, bool) {
        let before = count.fetch_add(1, Ordering::Relaxed);
        (UnderWay(count), before == 0)
    }
}

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T: Send + 'static, R: Send + 'static> Gatherer<T, R> {
    /// A gatherer whose `call` makes one call of up to `most` items, and
    /// the task that gathers them (not started: the node starts it with
    /// its other background work; the items asked wait until it runs).
    /// Dropping the task stops the gathering and the calls under way.
    pub fn new<F, Fut>(most: usize, call: F) -> (Self, impl Future<Output = ()> + Send + 'static)
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CallResult<R>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let gatherer = Gatherer {
            queue,
            under_way: AtomicUsize::new(0),
        };
        (
            gatherer,
            gather_forever(most.max(1), Arc::new(call), waiting),
        )
    }

    /// Asks for `item`: with the others waiting beside it, or with `alone`
    /// (a call of its own) when it is the only one under way (a gathered
    /// call would only add its wait) or the gathered call did not answer
    /// it.
    pub async fn ask<Fut>(&self, item: T, alone: impl FnOnce() -> Fut) -> Result<R, ApiError>
    where
        Fut: Future<Output = Result<R, ApiError>>,
    {
        let (_counted, only) = UnderWay::enter(&self.under_way);
        if only {
            return alone().await;
        }
        match self.ask_gathered(item).await {
            Gathered::Answered(answer) => answer,
            Gathered::Alone => alone().await,
        }
    }

    /// Asks for `item` in the next call, with the others waiting beside
    /// it.
    async fn ask_gathered(&self, item: T) -> Gathered<R> {
        let (answer, answered) = oneshot::channel();
        if self.queue.send(Waiting { item, answer }).await.is_err() {
            return Gathered::Alone;
        }
        answered.await.unwrap_or(Gathered::Alone)
    }
}

/// Takes the items waiting, a burst at a time, and makes a call of each
/// burst at once (calls under way in a set of their own, stopped with this
/// task).
async fn gather_forever<T, R, F, Fut>(
    most: usize,
    call: Arc<F>,
    mut waiting: mpsc::Receiver<Waiting<T, R>>,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = CallResult<R>> + Send + 'static,
{
    let mut calls = JoinSet::new();
    while let Some(first) = waiting.recv().await {
        while calls.try_join_next().is_some() {}
        let burst = pygmy_core::burst::take(first, &mut waiting, most).await;
        let (items, answers): (Vec<_>, Vec<_>) =
            burst.into_iter().map(|w| (w.item, w.answer)).unzip();
        let made = call(items);
        calls.spawn(async move {
            let count = answers.len();
            for (answer, result) in answers.into_iter().zip(answers_of(made.await, count)) {
                let _ = answer.send(result);
            }
        });
    }
}

/// The answer of each of the `count` items of a gathered call, from the
/// call's.
fn answers_of<R>(call: CallResult<R>, count: usize) -> Vec<Gathered<R>> {
    match call {
        // The client checked that each item has its result.
        Ok(results) => results.into_iter().map(answer_of).collect(),
        Err(err @ CallError::NoReplica { .. }) => {
            // No replica took the call: none would take one item either.
            let message = err.to_string();
            (0..count)
                .map(|_| Gathered::Answered(Err(ApiError::unavailable(message.clone()))))
                .collect()
        }
        Err(CallError::Answered(err)) => {
            tracing::debug!(%err, "a gathered call was refused; each item is asked alone");
            (0..count).map(|_| Gathered::Alone).collect()
        }
    }
}

/// Serves a call of many (the other side of a [`Gatherer`]), whose count
/// the handler checked first ([`check_count`]: a bad call is 400 even from
/// a replica that could not serve now): makes each of `items` with
/// `make`, all at once, and answers each one's result, in order, a failure
/// as the [`Refusal`] a call of its own would have answered.
pub async fn serve_each<T, R, Fut>(
    items: Vec<T>,
    make: impl FnMut(T) -> Fut,
) -> Vec<Result<R, Refusal>>
where
    Fut: Future<Output = Result<R, ApiError>>,
{
    as_refusals(join_all(items.into_iter().map(make)).await)
}

/// The results of a call of many, each failure as the [`Refusal`] a call
/// of its own would have answered.
pub fn as_refusals<R>(made: Vec<Result<R, ApiError>>) -> Vec<Result<R, Refusal>> {
    made.into_iter()
        .map(|made| {
            made.map_err(|err| Refusal {
                kind: err.kind().as_str().to_owned(),
                message: err.message().to_owned(),
            })
        })
        .collect()
}

/// Refuses (400) a call of many with none or more than `most` items.
pub fn check_count(count: usize, most: usize) -> Result<(), ApiError> {
    if count == 0 || count > most {
        return Err(ApiError::bad_request(format!(
            "a call makes 1 to {most} items, not {count}"
        )));
    }
    Ok(())
}

/// One item's answer: a replica failure for it alone is asked again alone
/// (it then goes to the other replicas, as a call of its own would).
fn answer_of<R>(result: Result<R, ClientError>) -> Gathered<R> {
    match result {
        Ok(made) => Gathered::Answered(Ok(made)),
        Err(err) if err.is_replica_failure() => Gathered::Alone,
        Err(err) => Gathered::Answered(Err(ApiError::from(CallError::Answered(err)))),
    }
}

#[cfg(test)]
mod tests {
    use pygmy_core::ErrorKind;

    use super::*;

    #[test]
    fn an_item_the_replica_could_not_answer_is_asked_alone() {
        let transport = ClientError::Transport {
            url: "http://127.0.0.1:1".to_owned(),
            reason: "refused".to_owned(),
            connect: true,
        };
        assert!(matches!(answer_of::<u8>(Err(transport)), Gathered::Alone));
        for kind in [ErrorKind::Unavailable, ErrorKind::Internal] {
            let failed = ClientError::of_kind(kind, "no leader".to_owned());
            assert!(
                matches!(answer_of::<u8>(Err(failed)), Gathered::Alone),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn an_item_made_or_refused_is_answered_as_a_call_of_its_own() {
        assert!(matches!(answer_of(Ok(7_u8)), Gathered::Answered(Ok(7))));
        for kind in [
            ErrorKind::OutOfStock,
            ErrorKind::NotFound,
            ErrorKind::Unprocessable,
        ] {
            let refused = ClientError::of_kind(kind, "no".to_owned());
            assert!(
                matches!(answer_of::<u8>(Err(refused)), Gathered::Answered(Err(err)) if err.kind() == kind),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_call_refused_whole_asks_each_alone_and_one_no_replica_took_fails_each() {
        let refused: CallResult<u8> = Err(CallError::Answered(ClientError::of_kind(
            ErrorKind::MethodNotAllowed,
            "an older replica".to_owned(),
        )));
        let each_alone = answers_of(refused, 3);
        assert_eq!(each_alone.len(), 3);
        assert!(each_alone.iter().all(|g| matches!(g, Gathered::Alone)));
        let nobody: CallResult<u8> = Err(CallError::NoReplica { last: None });
        let failed = answers_of(nobody, 2);
        assert_eq!(failed.len(), 2);
        assert!(failed.iter().all(
            |g| matches!(g, Gathered::Answered(Err(err)) if err.kind() == ErrorKind::Unavailable)
        ));
    }

    #[tokio::test]
    async fn an_item_alone_is_asked_alone_and_those_under_way_together_are_gathered() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        let (gatherer, gathering) = Gatherer::new(8, move |items: Vec<u32>| {
            seen.lock().expect("calls").push(items.len());
            async move { Ok(items.into_iter().map(|n| Ok(n * 10)).collect()) }
        });
        let _gathering = tokio::spawn(gathering);
        let gatherer = Arc::new(gatherer);
        let asked_alone = Arc::new(AtomicUsize::new(0));
        // A call of its own, as slow as a network call: it yields.
        let alone = |n: u32, asked_alone: Arc<AtomicUsize>| {
            move || async move {
                tokio::task::yield_now().await;
                asked_alone.fetch_add(1, Ordering::Relaxed);
                Ok(n * 10)
            }
        };
        let one = gatherer.ask(7, alone(7, Arc::clone(&asked_alone))).await;
        assert!(matches!(one, Ok(70)));
        assert_eq!(asked_alone.load(Ordering::Relaxed), 1);
        assert!(
            calls.lock().expect("calls").is_empty(),
            "the one item was gathered"
        );

        let asked: Vec<_> = (0..10_u32)
            .map(|n| {
                let gatherer = Arc::clone(&gatherer);
                let alone = alone(n, Arc::clone(&asked_alone));
                tokio::spawn(async move { gatherer.ask(n, alone).await })
            })
            .collect();
        for (n, asked) in (0..10_u32).zip(asked) {
            let answer = asked.await.expect("the task");
            assert!(matches!(answer, Ok(v) if v == n * 10), "{n}");
        }
        let gathered: usize = calls.lock().expect("calls").iter().sum();
        assert!(gathered >= 8, "only {gathered} of 10 were gathered");
        assert_eq!(gathered + asked_alone.load(Ordering::Relaxed), 11);
        assert_eq!(gatherer.under_way.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn items_that_come_together_go_in_one_call_and_each_gets_its_own_answer() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        let (gatherer, gathering) = Gatherer::new(4, move |items: Vec<u32>| {
            seen.lock().expect("calls").push(items.len());
            async move { Ok(items.into_iter().map(|n| Ok(n * 10)).collect()) }
        });
        let _gathering = tokio::spawn(gathering);
        let gatherer = Arc::new(gatherer);
        let asked: Vec<_> = (0..10_u32)
            .map(|n| {
                let gatherer = Arc::clone(&gatherer);
                tokio::spawn(async move { gatherer.ask_gathered(n).await })
            })
            .collect();
        for (n, asked) in (0..10_u32).zip(asked) {
            let answer = asked.await.expect("the task");
            assert!(
                matches!(answer, Gathered::Answered(Ok(v)) if v == n * 10),
                "{n}"
            );
        }
        let calls = calls.lock().expect("calls").clone();
        assert_eq!(calls.iter().sum::<usize>(), 10);
        assert!(calls.iter().all(|&c| (1..=4).contains(&c)), "{calls:?}");
        assert!(calls.len() < 10, "nothing gathered: {calls:?}");
    }
}
