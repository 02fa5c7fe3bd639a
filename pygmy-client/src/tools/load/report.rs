//! What a run measured ([`LoadReport`]), made from the merged tallies, and
//! the table of it that the command prints and the plot draws
//! ([`table`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::config::{LoadConfig, Operation};
use super::tally::{OpTally, Tally};
use crate::tools::check::AckedBuy;
use crate::tools::history::Event;

/// Latency percentiles of one operation, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// The figures of one operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperationReport {
    /// Requests sent.
    pub count: u64,
    /// Requests answered with success.
    pub ok: u64,
    /// Failures by kind (`out_of_stock`, `unavailable`, `transport`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Requests per second over the run.
    pub throughput: f64,
    /// Latency of every request, failures included.
    pub latency_ms: Latency,
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the start.
    pub second: u64,
    /// Requests completed in it.
    pub requests: u64,
    /// Of which failed (sold out included).
    pub errors: u64,
    /// Their median latency.
    pub p50_ms: f64,
    /// Their 99th percentile latency.
    pub p99_ms: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests per second.
    pub throughput: f64,
    /// `closed` or `open (N/s)`.
    pub mode: String,
    /// Workers.
    pub concurrency: usize,
    /// Figures by operation.
    pub operations: BTreeMap<Operation, OperationReport>,
    /// Figures by second.
    pub timeline: Vec<Second>,
    /// The buys answered with success.
    pub acked_buys: Vec<AckedBuy>,
    /// The longest time without an acknowledged buy, in milliseconds: from
    /// the start to the first one, and between any two (the availability
    /// figure of a run under faults; 0 without buys).
    #[serde(default)]
    pub longest_buy_gap_ms: f64,
    /// Every time without an acknowledged buy longer than half a second:
    /// `[start, length]` in milliseconds from the start of the run (when
    /// under faults, which fault cost what).
    #[serde(default)]
    pub buy_gaps_ms: Vec<[f64; 2]>,
    /// Every lookup and buy, when [`LoadConfig::history`] asked for it.
    #[serde(skip)]
    pub history: Vec<Event>,
}

fn millis(hist: &Histogram<u64>, quantile: f64) -> f64 {
    hist.value_at_quantile(quantile) as f64 / 1000.0
}

/// The report of a run of `config` with `concurrency` workers that took
/// `elapsed`, from its merged `tally`.
pub(super) fn report(
    config: &LoadConfig,
    concurrency: usize,
    elapsed: Duration,
    tally: Tally,
) -> LoadReport {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let gaps = tally.buy_gaps();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let longest_buy_gap_ms = gaps.iter().map(|(_, len)| ms(*len)).fold(0.0, f64::max);
    let buy_gaps_ms = gaps
        .iter()
        .filter(|(_, len)| *len > Duration::from_millis(500))
        .map(|(start, len)| [ms(*start), ms(*len)])
        .collect();
    let operations: BTreeMap<Operation, OperationReport> = tally
        .ops
        .into_iter()
        .map(
            |(
                op,
                OpTally {
                    latency: hist,
                    ok,
                    errors,
                },
            )| {
                let report = OperationReport {
                    count: hist.len(),
                    ok,
                    errors,
                    throughput: hist.len() as f64 / secs,
                    latency_ms: Latency {
                        p50: millis(&hist, 0.5),
                        p90: millis(&hist, 0.9),
                        p99: millis(&hist, 0.99),
                        p999: millis(&hist, 0.999),
                        max: hist.max() as f64 / 1000.0,
                    },
                };
                (op, report)
            },
        )
        .collect();
    let requests = operations.values().map(|o| o.count).sum();
    LoadReport {
        elapsed_s: secs,
        requests,
        throughput: requests as f64 / secs,
        mode: match config.rate {
            Some(rate) => format!("open ({rate}/s)"),
            None => "closed".to_owned(),
        },
        concurrency,
        operations,
        timeline: tally
            .seconds
            .into_iter()
            .enumerate()
            .map(|(second, (requests, errors, hist))| Second {
                second: second as u64,
                requests,
                errors,
                p50_ms: millis(&hist, 0.5),
                p99_ms: millis(&hist, 0.99),
            })
            .collect(),
        acked_buys: tally.acked,
        longest_buy_gap_ms,
        buy_gaps_ms,
        history: tally.history,
    }
}

/// The table of a run's operations: a header line, then a line per
/// operation (count, successes, failures, rate, latency percentiles), in
/// fixed-width columns. The command prints it; the plot draws it.
pub fn table(report: &LoadReport) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "op", "count", "ok", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    )];
    for (op, r) in &report.operations {
        let l = &r.latency_ms;
        lines.push(format!(
            "{:<8} {:>8} {:>8} {:>8} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            op.to_string(),
            r.count,
            r.ok,
            r.count - r.ok,
            r.throughput,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        ));
    }
    lines
}

impl fmt::Display for LoadReport {
    /// The summary printed at the end of a run: the totals, the table, the
    /// failures by kind, and the longest times without an acknowledged buy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} requests in {:.2} s: {:.0} req/s ({} loop, {} workers)",
            self.requests, self.elapsed_s, self.throughput, self.mode, self.concurrency
        )?;
        for line in table(self) {
            writeln!(f, "{line}")?;
        }
        for (op, r) in self.operations.iter().filter(|(_, r)| !r.errors.is_empty()) {
            let kinds: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
            writeln!(f, "{op} errors: {}", kinds.join(", "))?;
        }
        if !self.acked_buys.is_empty() {
            writeln!(
                f,
                "longest time without an acknowledged buy: {:.0} ms",
                self.longest_buy_gap_ms
            )?;
            if !self.buy_gaps_ms.is_empty() {
                let gaps: Vec<String> = self
                    .buy_gaps_ms
                    .iter()
                    .map(|[start, len]| format!("{:.0} ms at {:.1} s", len, start / 1000.0))
                    .collect();
                writeln!(
                    f,
                    "times without an acknowledged buy over 0.5 s: {}",
                    gaps.join(", ")
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge() {
        let mut a = Tally::new();
        a.record(Operation::Buy, 0, Duration::from_millis(2), None);
        let mut b = Tally::new();
        b.record(
            Operation::Buy,
            1,
            Duration::from_millis(4),
            Some("out_of_stock"),
        );
        a.merge(b);
        let report = report(&LoadConfig::default(), 2, Duration::from_secs(2), a);
        let buy = &report.operations[&Operation::Buy];
        assert_eq!((buy.count, buy.ok), (2, 1));
        assert_eq!(buy.errors.get("out_of_stock"), Some(&1));
        assert!((buy.latency_ms.max - 4.0).abs() < 0.01);
        assert_eq!(report.timeline.len(), 2);
        assert_eq!(report.requests, 2);
    }

    #[test]
    fn the_table_has_a_line_per_operation_under_its_header() {
        let mut tally = Tally::new();
        tally.record(Operation::Buy, 0, Duration::from_millis(2), None);
        tally.record(
            Operation::Lookup,
            0,
            Duration::from_millis(1),
            Some("unavailable"),
        );
        let report = report(&LoadConfig::default(), 1, Duration::from_secs(1), tally);
        let lines = table(&report);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("op ") && lines[0].ends_with("max ms"));
        let columns = |line: &str| line.split_whitespace().count();
        assert!(lines[1].starts_with("lookup") && lines[2].starts_with("buy"));
        // "p50 ms" and the like are two words each in the header.
        assert_eq!(columns(&lines[1]), 10);
        assert_eq!(columns(&lines[1]), columns(&lines[2]));
        assert_eq!(lines[1].split_whitespace().nth(3), Some("1"), "one failure");
        assert!(report.to_string().contains(&lines[2]));
    }
}
