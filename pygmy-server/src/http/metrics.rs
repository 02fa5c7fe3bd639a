//! `GET /metrics`: Prometheus text, each sample labelled with the node.

use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

/// Prometheus text being written, each line labelled with the node.
#[derive(Debug)]
pub struct Metrics {
    node: String,
    text: String,
}

impl Metrics {
    /// An empty page for node `node`.
    pub(crate) fn new(node: &str) -> Self {
        Metrics {
            node: node.to_owned(),
            text: String::new(),
        }
    }

    /// A counter (a total since start).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.sample(name, help, "counter", "", value);
    }

    /// A gauge (a value now).
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.sample(name, help, "gauge", "", value);
    }

    fn sample(&mut self, name: &str, help: &str, kind: &str, labels: &str, value: u64) {
        use std::fmt::Write;
        if !self.text.contains(&format!("# TYPE {name} ")) {
            let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        let _ = writeln!(
            self.text,
            "{name}{{node=\"{}\"{labels}}} {value}",
            self.node
        );
    }

    /// The text written.
    pub(crate) fn into_text(self) -> String {
        self.text
    }
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
            let labels = format!(",code=\"{}xx\"", i + 1);
            out.sample(
                "pygmy_requests_total",
                "Requests answered, by status class.",
                "counter",
                &labels,
                count.load(Ordering::Relaxed),
            );
        }
    }
}
