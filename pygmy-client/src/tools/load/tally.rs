//! A worker's measurements ([`Tally`]): per operation, a latency
//! histogram and the count of each outcome; per second, the same; and the
//! acknowledged buys. The workers' tallies are merged at the end of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::config::Operation;
use crate::tools::check::AckedBuy;
use crate::tools::history::Event;

const SIGFIG: u8 = 3;

/// A histogram of latencies in microseconds.
pub(super) fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h: any latency a request can have.
    Histogram::new_with_bounds(1, 3_600_000_000, SIGFIG).unwrap_or_else(|_| {
        Histogram::new(SIGFIG).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
    })
}

/// The measurements of one operation.
pub(super) struct OpTally {
    pub(super) latency: Histogram<u64>,
    pub(super) ok: u64,
    pub(super) errors: BTreeMap<String, u64>,
}

impl OpTally {
    fn new() -> OpTally {
        OpTally {
            latency: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

/// A worker's measurements, merged at the end.
pub(super) struct Tally {
    pub(super) ops: BTreeMap<Operation, OpTally>,
    /// Per second of the run: requests, failures, and their latencies.
    pub(super) seconds: Vec<(u64, u64, Histogram<u64>)>,
    pub(super) acked: Vec<AckedBuy>,
    /// When each acknowledged buy was answered, since the start.
    pub(super) acked_at: Vec<Duration>,
    /// Every lookup and buy, if the run records its history.
    pub(super) history: Vec<Event>,
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            ops: BTreeMap::new(),
            seconds: Vec::new(),
            acked: Vec::new(),
            acked_at: Vec::new(),
            history: Vec::new(),
        }
    }

    /// Counts one request of `op`, answered in `second` of the run after
    /// `latency`, failed with `error` if it did.
    pub(super) fn record(
        &mut self,
        op: Operation,
        second: u64,
        latency: Duration,
        error: Option<&'static str>,
    ) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let tally = self.ops.entry(op).or_insert_with(OpTally::new);
        tally.latency.saturating_record(micros);
        match error {
            None => tally.ok += 1,
            Some(kind) => *tally.errors.entry(kind.to_owned()).or_insert(0) += 1,
        }
        let index = usize::try_from(second).unwrap_or(usize::MAX);
        if self.seconds.len() <= index {
            self.seconds
                .resize_with(index.saturating_add(1), || (0, 0, histogram()));
        }
        if let Some((requests, failed, hist)) = self.seconds.get_mut(index) {
            *requests += 1;
            *failed += u64::from(error.is_some());
            hist.saturating_record(micros);
        }
    }

    /// Adds `other`'s measurements to these.
    pub(super) fn merge(&mut self, other: Tally) {
        for (op, theirs) in other.ops {
            let mine = self.ops.entry(op).or_insert_with(OpTally::new);
            // Same bounds on both sides, so adding cannot fail.
            let _ = mine.latency.add(&theirs.latency);
            mine.ok += theirs.ok;
            for (kind, n) in theirs.errors {
                *mine.errors.entry(kind).or_insert(0) += n;
            }
        }
        if self.seconds.len() < other.seconds.len() {
            self.seconds
                .resize_with(other.seconds.len(), || (0, 0, histogram()));
        }
        for (mine, (requests, failed, hist)) in self.seconds.iter_mut().zip(other.seconds) {
            mine.0 += requests;
            mine.1 += failed;
            let _ = mine.2.add(&hist);
        }
        self.acked.extend(other.acked);
        self.acked_at.extend(other.acked_at);
        self.history.extend(other.history);
    }

    /// The times without an acknowledged buy, `(start, length)`: from the
    /// start to the first, and between any two (after the last, the stock
    /// may be gone).
    pub(super) fn buy_gaps(&self) -> Vec<(Duration, Duration)> {
        let mut times = self.acked_at.clone();
        times.sort_unstable();
        let mut last = Duration::ZERO;
        let mut gaps = Vec::with_capacity(times.len());
        for at in times {
            gaps.push((last, at.saturating_sub(last)));
            last = at;
        }
        gaps
    }
}
