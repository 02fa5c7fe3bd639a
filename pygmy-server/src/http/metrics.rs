//! `GET /metrics`: Prometheus text, each sample labelled with the node; and
//! the figures the server keeps of every request (counts by status class,
//! latency histograms by route).

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use http::StatusCode;

/// Prometheus text being written, each line labelled with the node.
#[derive(Debug)]
pub struct Metrics {
    node: String,
    text: String,
    declared: HashSet<String>,
}

impl Metrics {
    /// An empty page for node `node`.
    pub(crate) fn new(node: &str) -> Self {
        Metrics {
            node: escape(node),
            text: String::new(),
            declared: HashSet::new(),
        }
    }

    /// A counter (a total since start).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.sample(name, help, "counter", &[], value);
    }

    /// A gauge (a value now).
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.sample(name, help, "gauge", &[], value);
    }

    /// A gauge with labels beside the node's (`labels`: name and value).
    pub fn gauge_with(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.sample(name, help, "gauge", labels, value);
    }

    /// A histogram of durations in seconds, with labels beside the node's.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        histogram: &Histogram,
    ) {
        self.declare(name, help, "histogram");
        let labels = self.labels(labels);
        let (buckets, sum_us) = histogram.totals();
        let mut cumulative = 0;
        for (bound, count) in Histogram::BOUNDS_US.iter().zip(&buckets) {
            cumulative += count;
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                self.text,
                "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let count: u64 = buckets.iter().sum();
        let sum = sum_us as f64 / 1e6;
        let _ = writeln!(self.text, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(self.text, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(self.text, "{name}_count{{{labels}}} {count}");
    }

    fn sample(&mut self, name: &str, help: &str, kind: &str, labels: &[(&str, &str)], value: u64) {
        self.declare(name, help, kind);
        let labels = self.labels(labels);
        let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
    }

    /// Writes `# HELP` and `# TYPE` the first time `name` is written (the
    /// samples of one name must follow each other).
    fn declare(&mut self, name: &str, help: &str, kind: &str) {
        if self.declared.insert(name.to_owned()) {
            let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
    }

    fn labels(&self, labels: &[(&str, &str)]) -> String {
        let mut text = format!("node=\"{}\"", self.node);
        for (name, value) in labels {
            let _ = write!(text, ",{name}=\"{}\"", escape(value));
        }
        text
    }

    /// The text written.
    pub(crate) fn into_text(self) -> String {
        self.text
    }
}

/// A label value as Prometheus text takes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Requests answered by a node, by status class.
#[derive(Debug, Default)]
pub(crate) struct RequestCounts {
    by_class: [AtomicU64; 5],
}

impl RequestCounts {
    pub(crate) fn record(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn write(&self, out: &mut Metrics) {
        for (i, count) in self.by_class.iter().enumerate() {
            let class = format!("{}xx", i + 1);
            out.sample(
                "pygmy_requests_total",
                "Requests answered, by status class.",
                "counter",
                &[("code", &class)],
                count.load(Ordering::Relaxed),
            );
        }
    }
}

/// Durations counted in fixed buckets. Every request of a node counts in
/// one: the counts are kept in shards, each thread writing mostly its own
/// (its own cache line), so that the cores serving requests do not pass
/// one counter back and forth; a scrape adds the shards up.
#[derive(Debug, Default)]
pub struct Histogram {
    shards: [Shard; SHARDS],
}

/// How many shards a histogram has: a few per core of a small machine.
const SHARDS: usize = 8;

/// One shard: a count per bucket (the last for durations over every
/// bound), and the sum, on cache lines of their own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; Histogram::BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

thread_local! {
    /// This thread's shard, given out in turn at its first count.
    static SHARD: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        usize::try_from(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS as u64).unwrap_or(0)
    };
}

impl Histogram {
    /// The buckets' upper bounds, in microseconds: 0.25 ms to 30 s.
    const BOUNDS_US: [u64; 16] = [
        250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
        1_000_000, 2_000_000, 5_000_000, 10_000_000, 30_000_000,
    ];

    /// Counts one duration.
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = Self::BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(Self::BOUNDS_US.len());
        let shard = &self.shards[SHARD.with(|s| *s)];
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The count of each bucket (not cumulative; the last past every
    /// bound), and the sum in microseconds, over every shard.
    fn totals(&self) -> ([u64; Histogram::BOUNDS_US.len() + 1], u64) {
        let mut buckets = [0; Histogram::BOUNDS_US.len() + 1];
        let mut sum = 0;
        for shard in &self.shards {
            for (total, count) in buckets.iter_mut().zip(&shard.buckets) {
                *total += count.load(Ordering::Relaxed);
            }
            sum += shard.sum_us.load(Ordering::Relaxed);
        }
        (buckets, sum)
    }
}

/// Request latency by route: one [`Histogram`] per route label, made at
/// its first request, in slots that are only ever filled (a request finds
/// its route's with plain loads, no lock).
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    slots: [OnceLock<(&'static str, Histogram)>; ROUTES],
}

/// More than any role has routes (the frontend has 8, with `unmatched`).
const ROUTES: usize = 32;

impl Latencies {
    pub(crate) fn record(&self, route: &'static str, took: Duration) {
        for slot in &self.slots {
            let (label, histogram) = slot.get_or_init(|| (route, Histogram::default()));
            if *label == route {
                histogram.record(took);
                return;
            }
        }
        tracing::warn!(route, "more routes than latency slots; not timed");
    }

    pub(crate) fn write(&self, out: &mut Metrics) {
        for (route, histogram) in self.slots.iter().map_while(OnceLock::get) {
            out.histogram(
                "pygmy_request_duration_seconds",
                "Time from a request's headers to its answer, by route.",
                &[("route", route)],
                histogram,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_and_counts_everything() {
        let latencies = Latencies::default();
        for ms in [0, 1, 3, 3, 40_000] {
            latencies.record("GET /lookup", Duration::from_millis(ms));
        }
        latencies.record("GET /buy", Duration::from_micros(300));
        let mut out = Metrics::new("frontend");
        latencies.write(&mut out);
        let text = out.into_text();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
                .rsplit(' ')
                .next()
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let lookup =
            "pygmy_request_duration_seconds_bucket{node=\"frontend\",route=\"GET /lookup\"";
        assert_eq!(line(&format!("{lookup},le=\"0.00025\"}}")), "1");
        assert_eq!(line(&format!("{lookup},le=\"0.001\"}}")), "2");
        assert_eq!(line(&format!("{lookup},le=\"0.005\"}}")), "4");
        assert_eq!(line(&format!("{lookup},le=\"30\"}}")), "4");
        assert_eq!(line(&format!("{lookup},le=\"+Inf\"}}")), "5");
        assert_eq!(
            line("pygmy_request_duration_seconds_sum{node=\"frontend\",route=\"GET /lookup\"}"),
            "40.007"
        );
        assert_eq!(
            text.matches("# TYPE pygmy_request_duration_seconds ")
                .count(),
            1
        );
        assert!(
            text.contains("route=\"GET /buy\",le=\"0.0005\"} 1"),
            "{text}"
        );
    }
}
