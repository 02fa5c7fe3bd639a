//! An order replica's sales, asked of the catalog together.
//!
//! Every buy first has the catalog sell one copy under its key. Under load,
//! one call per sale would cost the order replica and the catalog a
//! request each per buy; here the sales that come together go in one call
//! (`POST /sales`, at most [`SalesRequest::MOST`]), to the catalog leader
//! first and then the other replicas, exactly as one sale's call goes. A
//! sale never waits for another call to come back: the seller only lets
//! the tasks woken with the first sale queue theirs, then calls (gathering
//! sales while calls were under way made each buy wait for a free call,
//! and cost more buys per second than the requests saved:
//! docs/benchmarks.md, the seventh round).
//!
//! Each sale is answered with its own result. One the catalog could not
//! make (a replica failure for that sale alone), or every sale of a call
//! the catalog refused as a whole (a replica of another version, which
//! does not know `POST /sales`), is made alone ([`Sold::Alone`]): a sale
//! is keyed, so asking again never sells a second copy. A call that no
//! replica took answers each of its sales that no replica could serve
//! (503), as a call of its own would have.

use std::sync::Arc;

use pygmy_client::{CatalogClient, ClientError};
use pygmy_core::api::{SaleRequest, SalesRequest};
use pygmy_core::balance::{CallError, ReplicaSet};
use pygmy_core::types::{Book, IdempotencyKey, ItemId};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::http::ApiError;

/// Sales waiting for a call, at most: a buy waits for room beyond.
const QUEUE: usize = 4096;

/// Times the seller lets the other tasks run before it takes the sales
/// waiting (a timer would wait tokio's tick, a millisecond).
const SETTLE: usize = 3;

/// What became of a sale asked of the [`Seller`].
#[derive(Debug)]
pub enum Sold {
    /// The catalog's answer: the book after the sale, or the error the sale
    /// met (as a call of its own would have met it).
    Made(Result<Book, ApiError>),
    /// Not made with the others: make it alone.
    Alone,
}

struct Waiting {
    sale: SaleRequest,
    answer: oneshot::Sender<Sold>,
}

/// The sales of one order replica.
pub struct Seller {
    queue: mpsc::Sender<Waiting>,
}

impl Seller {
    /// Starts selling through `catalogs`; the selling stops when the seller
    /// is dropped.
    pub fn start(catalogs: Arc<ReplicaSet<CatalogClient>>) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(sell_forever(catalogs, waiting).in_current_span());
        Seller { queue }
    }

    /// Sells one copy of `item` under `key`, with the sales waiting beside
    /// it.
    pub async fn sell(&self, item: ItemId, key: IdempotencyKey) -> Sold {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            sale: SaleRequest { item, key },
            answer,
        };
        if self.queue.send(waiting).await.is_err() {
            return Sold::Alone;
        }
        answered.await.unwrap_or(Sold::Alone)
    }
}

/// Takes the waiting sales, as many as there are (up to
/// [`SalesRequest::MOST`]), and asks for them in one call, without
/// waiting for the calls under way.
async fn sell_forever(
    catalogs: Arc<ReplicaSet<CatalogClient>>,
    mut waiting: mpsc::Receiver<Waiting>,
) {
    while let Some(first) = waiting.recv().await {
        // Buys come in bursts (the answers of one raft entry let as many
        // clients go on at once), each queueing its sale when its task
        // runs: let them, before taking what waits.
        for _ in 0..SETTLE {
            tokio::task::yield_now().await;
        }
        let mut batch = vec![first];
        while batch.len() < SalesRequest::MOST {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let catalogs = Arc::clone(&catalogs);
        tokio::spawn(async move { sell_together(&catalogs, batch).await }.in_current_span());
    }
}

/// Asks the catalog for the sales of `batch` in one call, and answers each.
async fn sell_together(catalogs: &ReplicaSet<CatalogClient>, batch: Vec<Waiting>) {
    let (sales, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|w| (w.sale, w.answer)).unzip();
    let request = SalesRequest { sales };
    match catalogs
        .call_leader_first(|catalog| catalog.sell_many(&request))
        .await
    {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(sold(result));
            }
        }
        Err(err @ CallError::NoReplica { .. }) => {
            // No replica took the call: none would take one sale either.
            let message = err.to_string();
            for answer in answers {
                let _ = answer.send(Sold::Made(Err(ApiError::unavailable(message.clone()))));
            }
        }
        Err(CallError::Answered(err)) => {
            tracing::debug!(%err, "the catalog refused a call of many sales; each is made alone");
            for answer in answers {
                let _ = answer.send(Sold::Alone);
            }
        }
    }
}

/// One sale's result: a replica failure for it alone is made again alone
/// (it then goes to the other replicas, as a call of its own would).
fn sold(result: Result<Book, ClientError>) -> Sold {
    match result {
        Ok(book) => Sold::Made(Ok(book)),
        Err(err) if err.is_replica_failure() => Sold::Alone,
        Err(err) => Sold::Made(Err(ApiError::from(CallError::Answered(err)))),
    }
}

#[cfg(test)]
mod tests {
    use pygmy_core::types::Book;
    use pygmy_core::ErrorKind;

    use super::*;

    fn book() -> Book {
        serde_json::from_str(r#"{"id":1,"title":"t","topic":"x","count":0,"cost":1.5}"#)
            .expect("a book")
    }

    #[test]
    fn a_sale_the_replica_could_not_make_is_made_alone() {
        let transport = ClientError::Transport {
            url: "http://127.0.0.1:1".to_owned(),
            reason: "refused".to_owned(),
            connect: true,
        };
        assert!(matches!(sold(Err(transport)), Sold::Alone));
        let unavailable = ClientError::of_kind(ErrorKind::Unavailable, "no leader".to_owned());
        assert!(matches!(sold(Err(unavailable)), Sold::Alone));
        let internal = ClientError::of_kind(ErrorKind::Internal, "disk".to_owned());
        assert!(matches!(sold(Err(internal)), Sold::Alone));
    }

    #[test]
    fn a_sale_made_or_refused_is_answered_as_a_call_of_its_own() {
        assert!(matches!(sold(Ok(book())), Sold::Made(Ok(b)) if b.id == ItemId(1)));
        for kind in [
            ErrorKind::OutOfStock,
            ErrorKind::NotFound,
            ErrorKind::Unprocessable,
        ] {
            let refused = ClientError::of_kind(kind, "no".to_owned());
            assert!(
                matches!(sold(Err(refused)), Sold::Made(Err(err)) if err.kind() == kind),
                "{kind:?}"
            );
        }
    }
}
