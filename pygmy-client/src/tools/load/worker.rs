//! One worker of a load run: it picks each request (a session's next
//! step, or a weighted draw), sends it on its own connection, and says
//! what became of it.

use pygmy_core::api::routes::{FrontendRoute, Route};
use pygmy_core::types::{ItemId, OrderId};
use pygmy_core::ErrorKind;

use super::config::{LoadConfig, Mix, Operation};
use crate::error::ClientError;
use crate::tools::check::AckedBuy;
use crate::tools::engine::{decode, Bought, Connection, Items};
use crate::tools::history::Effect;

/// Where a session-mix worker is in its session: search a topic, look up
/// one of the books found, buy it if the lookup showed stock.
enum Step {
    Search,
    Lookup(ItemId),
    Buy(ItemId),
}

/// What became of one request.
pub(super) struct Sent {
    /// What it was.
    pub(super) op: Operation,
    /// Its failure's kind, if it failed.
    pub(super) error: Option<&'static str>,
    /// The buy it acknowledged, if it was one.
    pub(super) acked: Option<AckedBuy>,
    /// For the history (when the run records it): the book, and what the
    /// request saw of it or did to it.
    pub(super) seen: Option<(ItemId, Effect)>,
}

/// One worker: its connection, its random draws, and its session's step.
pub(super) struct Worker<'a> {
    conn: Connection,
    config: &'a LoadConfig,
    /// `/search?topic=...` of each topic, encoded once.
    search_paths: &'a [String],
    rng: fastrand::Rng,
    step: Step,
}

impl<'a> Worker<'a> {
    /// Worker `index` of a run of `config`, on `conn`.
    pub(super) fn new(
        conn: Connection,
        config: &'a LoadConfig,
        search_paths: &'a [String],
        index: u64,
    ) -> Self {
        Worker {
            conn,
            config,
            search_paths,
            rng: fastrand::Rng::with_seed(config.seed.wrapping_add(index)),
            step: Step::Search,
        }
    }

    /// Sends the next request and says what became of it.
    pub(super) async fn send(&mut self) -> Sent {
        let op = self.next_operation();
        let (result, acked, seen) = match op {
            Operation::Search => (self.search().await, None, None),
            Operation::Lookup => {
                let (result, seen) = self.lookup().await;
                (result, None, seen)
            }
            Operation::Buy => self.buy().await,
        };
        if result.is_err() && self.in_session() {
            self.step = Step::Search;
        }
        Sent {
            op,
            error: result.err().as_ref().map(ClientError::label),
            acked,
            seen: seen.filter(|_| self.config.history),
        }
    }

    fn in_session(&self) -> bool {
        matches!(self.config.mix, Mix::Session)
    }

    /// The session's next step, or a draw with the mix's weights.
    fn next_operation(&mut self) -> Operation {
        match (&self.config.mix, &self.step) {
            (Mix::Session, Step::Search) => Operation::Search,
            (Mix::Session, Step::Lookup(_)) => Operation::Lookup,
            (Mix::Session, Step::Buy(_)) => Operation::Buy,
            (
                Mix::Weighted {
                    lookup,
                    search,
                    buy,
                },
                _,
            ) => {
                let draw = self.rng.u32(..lookup + search + buy);
                if draw < *lookup {
                    Operation::Lookup
                } else if draw < lookup + search {
                    Operation::Search
                } else {
                    Operation::Buy
                }
            }
        }
    }

    /// A random item of the run's.
    fn pick_item(&mut self) -> ItemId {
        let items = &self.config.items;
        items[self.rng.usize(..items.len())]
    }

    /// A search of a random topic; in a session, the next step looks up
    /// one of the books found.
    async fn search(&mut self) -> Result<(), ClientError> {
        let path = &self.search_paths[self.rng.usize(..self.search_paths.len())];
        let body = self.conn.get(path).await?;
        if self.in_session() {
            let found: Items = decode(&body)?;
            if !found.item.is_empty() {
                let pick = &found.item[self.rng.usize(..found.item.len())];
                self.step = Step::Lookup(ItemId(pick.id));
            }
        }
        Ok(())
    }

    /// A lookup (the session's book, or a random one), with the count it
    /// saw; in a session, the next step buys the book if it is in stock.
    async fn lookup(&mut self) -> (Result<(), ClientError>, Option<(ItemId, Effect)>) {
        let id = match self.step {
            Step::Lookup(id) if self.in_session() => id,
            _ => self.pick_item(),
        };
        let path = format!("{}?id={id}", FrontendRoute::Lookup.path());
        let body = match self.conn.get(&path).await {
            Ok(body) => body,
            Err(err) => return (Err(err), None),
        };
        // Decoded only when a session or the history needs it.
        if !self.in_session() && !self.config.history {
            return (Ok(()), None);
        }
        let found: Items = match decode(&body) {
            Ok(found) => found,
            Err(err) => return (Err(err), None),
        };
        let count = found.item.first().map(|b| b.count);
        if self.in_session() {
            let in_stock = count.is_some_and(|c| c > 0);
            self.step = if in_stock {
                Step::Buy(id)
            } else {
                Step::Search
            };
        }
        (Ok(()), count.map(|count| (id, Effect::Saw(count))))
    }

    /// A buy (the session's book, or a random one), with what it did; in a
    /// session, the next step searches again.
    async fn buy(
        &mut self,
    ) -> (
        Result<(), ClientError>,
        Option<AckedBuy>,
        Option<(ItemId, Effect)>,
    ) {
        let id = match self.step {
            Step::Buy(id) if self.in_session() => id,
            _ => self.pick_item(),
        };
        let path = format!("{}?id={id}", FrontendRoute::Buy.path());
        let body = self.conn.get(&path).await;
        let seen = match &body {
            Ok(_) => Some((id, Effect::Sold)),
            Err(err) if err.kind() == ErrorKind::OutOfStock => Some((id, Effect::SoldOut)),
            // No such book: nothing to check.
            Err(err) if err.kind() == ErrorKind::NotFound => None,
            // It may have sold (a lost answer, a time limit).
            Err(_) => Some((id, Effect::MaybeSold)),
        };
        let bought = body.and_then(|body| decode::<Bought>(&body));
        match bought {
            Ok(bought) => {
                if self.in_session() {
                    self.step = Step::Search;
                }
                let acked = AckedBuy {
                    item: id,
                    order: OrderId(bought.order.id),
                };
                (Ok(()), Some(acked), seen)
            }
            Err(err) => (Err(err), None, seen),
        }
    }
}
