//! The history checker: every lookup and buy of a run, with when it was
//! sent and when it was answered, checked against what a linearizable store
//! could have answered.
//!
//! Each book's stock is a register that buys decrement (and restocks
//! increment). A lookup answered `count` between its sending `s` and its
//! answer `a` was fresh only if some moment in `[s, a]` had that stock:
//!
//! - at most the initial stock, plus every restock sent before `a`, less
//!   every buy acknowledged before `s` (more: the lookup missed an
//!   acknowledged buy, a stale read: **too many**);
//! - at least the initial stock, plus every restock acknowledged before
//!   `s`, less every buy that may have sold (acknowledged, or failed
//!   without an answer) sent before `a` (fewer: it missed an acknowledged
//!   restock, or saw more sold than was bought: **too few**).
//!
//! A buy answered "sold out" sold nothing; one that failed without a clear
//! answer (timeout, 503) may have sold, at any time after it was sent. The
//! check is sound (a reported anomaly is one) but not complete: it looks at
//! each lookup alone.

use std::collections::BTreeMap;
use std::time::Duration;

use pygmy_core::types::ItemId;
use serde::{Deserialize, Serialize};

/// What an operation did to, or saw of, a book's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// A lookup answered this stock.
    Saw(i64),
    /// A buy was acknowledged: one copy sold.
    Sold,
    /// A buy answered "sold out": nothing sold.
    SoldOut,
    /// A buy failed without a clear answer: it may have sold one copy.
    MaybeSold,
    /// A restock of this many copies was acknowledged.
    Restocked(i64),
    /// A restock of this many copies failed without a clear answer.
    MaybeRestocked(i64),
}

/// One operation of a run on one book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The book.
    pub item: ItemId,
    /// When it was sent, since the start of the run.
    pub sent: Duration,
    /// When it was answered (or failed).
    pub answered: Duration,
    /// What it did or saw.
    pub effect: Effect,
}

/// A lookup no linearizable store could have answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The lookup.
    pub lookup: Event,
    /// The stock it saw.
    pub saw: i64,
    /// The least stock the book could have had while it ran.
    pub low: i64,
    /// The most.
    pub high: i64,
}

impl Anomaly {
    /// `too_many` (it missed an acknowledged buy) or `too_few` (it missed
    /// an acknowledged restock, or saw more sold than was bought).
    pub fn kind(&self) -> &'static str {
        if self.saw > self.high {
            "too_many"
        } else {
            "too_few"
        }
    }
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} copies: a lookup of item {} sent at {:?} and answered at {:?} saw {} copies; the stock was between {} and {} then",
            self.kind(),
            self.lookup.item,
            self.lookup.sent,
            self.lookup.answered,
            self.saw,
            self.low,
            self.high
        )
    }
}

/// Sorted times of one kind of event, to count those before an instant.
struct Times(Vec<(Duration, i64)>);

impl Times {
    fn new(mut times: Vec<(Duration, i64)>) -> Times {
        times.sort_unstable();
        let mut total = 0;
        for (_, amount) in &mut times {
            total += *amount;
            *amount = total;
        }
        Times(times)
    }

    /// The total amount of the events strictly before `at`.
    fn before(&self, at: Duration) -> i64 {
        let n = self.0.partition_point(|(t, _)| *t < at);
        n.checked_sub(1).map_or(0, |i| self.0[i].1)
    }
}

/// Checks every lookup of `events` against the buys and restocks around
/// it, for books whose stock at the start was `initial`. Returns the
/// anomalies, in the order of the lookups.
pub fn check(initial: &BTreeMap<ItemId, i64>, events: &[Event]) -> Vec<Anomaly> {
    let mut by_item: BTreeMap<ItemId, Vec<&Event>> = BTreeMap::new();
    for event in events {
        by_item.entry(event.item).or_default().push(event);
    }
    let mut anomalies = Vec::new();
    for (item, events) in by_item {
        let Some(&start) = initial.get(&item) else {
            continue;
        };
        let times = |pick: &dyn Fn(&Event) -> Option<(Duration, i64)>| {
            Times::new(events.iter().filter_map(|e| pick(e)).collect())
        };
        // Decrements certainly done by their answer, and possibly done from
        // their sending on; increments alike.
        let sold = times(&|e| matches!(e.effect, Effect::Sold).then_some((e.answered, 1)));
        let may_sell =
            times(&|e| matches!(e.effect, Effect::Sold | Effect::MaybeSold).then_some((e.sent, 1)));
        let restocked = times(&|e| match e.effect {
            Effect::Restocked(n) => Some((e.answered, n)),
            _ => None,
        });
        let may_restock = times(&|e| match e.effect {
            Effect::Restocked(n) | Effect::MaybeRestocked(n) => Some((e.sent, n)),
            _ => None,
        });
        for lookup in &events {
            let Effect::Saw(saw) = lookup.effect else {
                continue;
            };
            let high = start + may_restock.before(lookup.answered) - sold.before(lookup.sent);
            let low = start + restocked.before(lookup.sent) - may_sell.before(lookup.answered);
            if saw > high || saw < low {
                anomalies.push(Anomaly {
                    lookup: **lookup,
                    saw,
                    low,
                    high,
                });
            }
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn event(sent: u64, answered: u64, effect: Effect) -> Event {
        Event {
            item: ItemId(1),
            sent: at(sent),
            answered: at(answered),
            effect,
        }
    }

    fn initial() -> BTreeMap<ItemId, i64> {
        [(ItemId(1), 10)].into()
    }

    #[test]
    fn fresh_reads_pass() {
        let history = [
            event(0, 5, Effect::Saw(10)),
            event(6, 10, Effect::Sold),
            // Concurrent with the buy: either value.
            event(7, 12, Effect::Saw(10)),
            event(7, 12, Effect::Saw(9)),
            event(11, 13, Effect::Saw(9)),
            event(14, 20, Effect::MaybeSold),
            event(15, 16, Effect::Saw(9)), // it may not have sold yet
            event(21, 22, Effect::Saw(8)), // or it did
            event(23, 24, Effect::SoldOut),
            event(25, 30, Effect::Restocked(5)),
            event(31, 32, Effect::Saw(13)),
        ];
        assert_eq!(check(&initial(), &history), Vec::new());
    }

    #[test]
    fn a_read_that_misses_an_acknowledged_buy_is_stale() {
        let history = [
            event(0, 4, Effect::Sold),
            event(5, 6, Effect::Saw(10)), // sent after the buy was answered
        ];
        let anomalies = check(&initial(), &history);
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].kind(), "too_many");
        assert_eq!((anomalies[0].low, anomalies[0].high), (9, 9));
    }

    #[test]
    fn a_read_of_more_sales_than_were_sent_is_caught() {
        let history = [
            event(0, 4, Effect::Sold),
            event(1, 2, Effect::Saw(8)), // one buy in flight, two copies gone
            event(5, 6, Effect::SoldOut),
            event(7, 8, Effect::Saw(8)), // a sold-out buy sold nothing
        ];
        let anomalies = check(&initial(), &history);
        assert_eq!(anomalies.len(), 2);
        assert!(anomalies.iter().all(|a| a.kind() == "too_few"));
    }

    #[test]
    fn a_read_that_misses_an_acknowledged_restock_is_caught() {
        let history = [
            event(0, 2, Effect::Restocked(5)),
            event(3, 4, Effect::Saw(10)),
        ];
        let anomalies = check(&initial(), &history);
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].kind(), "too_few");
    }
}
