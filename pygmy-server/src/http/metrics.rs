//! `GET /metrics`: Prometheus text, each sample labelled with the node; and
//! the figures the server keeps of every request (counts by status class,
//! latency histograms by route).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
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
        let mut cumulative = 0;
        for (bound, count) in Histogram::BOUNDS_US.iter().zip(&histogram.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                self.text,
                "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let count = histogram.count.load(Ordering::Relaxed);
        let sum = histogram.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
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

/// Durations counted in fixed buckets, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; Histogram::BOUNDS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// The buckets' upper bounds, in microseconds: 0.25 ms to 10 s.
    const BOUNDS_US: [u64; 16] = [
        250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
        1_000_000, 2_000_000, 5_000_000, 10_000_000, 30_000_000,
    ];

    /// Counts one duration.
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(bucket) = Self::BOUNDS_US.iter().position(|bound| us <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// Request latency by route: one [`Histogram`] per route label, made at
/// its first request.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    by_route: RwLock<BTreeMap<&'static str, Histogram>>,
}

impl Latencies {
    pub(crate) fn record(&self, route: &'static str, took: Duration) {
        if let Ok(routes) = self.by_route.read() {
            if let Some(histogram) = routes.get(route) {
                histogram.record(took);
                return;
            }
        }
        if let Ok(mut routes) = self.by_route.write() {
            routes.entry(route).or_default().record(took);
        }
    }

    pub(crate) fn write(&self, out: &mut Metrics) {
        let Ok(routes) = self.by_route.read() else {
            return;
        };
        for (route, histogram) in routes.iter() {
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
