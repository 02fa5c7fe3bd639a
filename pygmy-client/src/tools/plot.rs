//! `load --plot FILE.svg`: a run's latency percentiles and throughput over
//! time, as a self-contained SVG to paste in a report.
//!
//! Two panels share the time axis: p50 and p99 latency per second (top),
//! requests and failures per second (bottom); a line per operation with its
//! percentiles sits under them. Plain SVG 1.1, no scripts, no fonts to embed.

use std::fmt::Write;

use crate::tools::load::{table, LoadReport};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 30.0;
const PANEL: f64 = 200.0;
const TOP: f64 = 60.0;
const GAP: f64 = 60.0;

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_max(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * power)
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Panel {
    top: f64,
    y_max: f64,
    x_max: f64,
}

impl Panel {
    fn x(&self, second: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * second / self.x_max
    }

    fn y(&self, value: f64) -> f64 {
        self.top + PANEL - PANEL * (value / self.y_max).min(1.0)
    }

    /// The frame, the grid and the axis labels.
    fn axes(&self, out: &mut String, title: &str, unit: &str) {
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{:.1}" class="title">{}</text>"##,
            self.top - 10.0,
            escape(title)
        );
        for i in 0..=4 {
            let value = self.y_max * f64::from(i) / 4.0;
            let y = self.y(value);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{} {unit}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                format_value(value)
            );
        }
        let ticks = (self.x_max.ceil() as u64).clamp(1, 10);
        for i in 0..=ticks {
            let second = self.x_max * i as f64 / ticks as f64;
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{}s</text>"##,
                self.x(second),
                self.top + PANEL + 16.0,
                format_value(second)
            );
        }
    }

    fn line(&self, out: &mut String, points: &[(f64, f64)], class: &str) {
        if points.is_empty() {
            return;
        }
        let coords: Vec<String> = points
            .iter()
            .map(|(s, v)| format!("{:.1},{:.1}", self.x(*s), self.y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline class="{class}" points="{}"/>"##,
            coords.join(" ")
        );
    }
}

fn format_value(value: f64) -> String {
    if value >= 100.0 || value == value.round() {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The SVG of `report`.
pub fn svg(report: &LoadReport) -> String {
    // Each point is plotted at the middle of its second. A last second the
    // run covered less than half of holds a few stragglers: it would draw a
    // cliff that is not there, so it is left out.
    let at = |second: u64| second as f64 + 0.5;
    let whole = report.elapsed_s.floor();
    let keep_last = report.elapsed_s - whole >= 0.5;
    let timeline: Vec<&crate::tools::load::Second> = report
        .timeline
        .iter()
        .filter(|s| (s.second as f64) < whole || keep_last)
        .collect();
    let x_max = report.elapsed_s.max(1.0);
    let latency_max = nice_max(timeline.iter().map(|s| s.p99_ms).fold(0.0, f64::max));
    let rate_max = nice_max(
        timeline
            .iter()
            .map(|s| s.requests as f64)
            .fold(0.0, f64::max),
    );
    let latency = Panel {
        top: TOP,
        y_max: latency_max,
        x_max,
    };
    let rate = Panel {
        top: TOP + PANEL + GAP,
        y_max: rate_max,
        x_max,
    };
    let table_top = rate.top + PANEL + 50.0;
    let height = table_top + 22.0 * (report.operations.len() as f64 + 1.0) + 20.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif">"##
    );
    out.push_str(concat!(
        "<style>.title{font-size:14px;font-weight:bold}.tick{font-size:11px;fill:#555}",
        ".grid{stroke:#ddd;stroke-width:1}polyline{fill:none;stroke-width:1.8}",
        ".p50{stroke:#1f77b4}.p99{stroke:#d62728}.rate{stroke:#2ca02c}.errors{stroke:#ff7f0e}",
        ".row{font-size:12px;font-family:monospace}</style>\n",
        r##"<rect width="100%" height="100%" fill="white"/>"##,
        "\n"
    ));
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="24" class="title" font-size="16">Pygmy load: {} requests in {:.1} s, {:.0} req/s ({} loop, {} workers)</text>"##,
        report.requests,
        report.elapsed_s,
        report.throughput,
        escape(&report.mode),
        report.concurrency
    );

    latency.axes(&mut out, "Latency per second (blue p50, red p99)", "ms");
    let points = |f: &dyn Fn(&crate::tools::load::Second) -> f64| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter(|s| s.requests > 0)
            .map(|s| (at(s.second), f(s)))
            .collect()
    };
    latency.line(&mut out, &points(&|s| s.p50_ms), "p50");
    latency.line(&mut out, &points(&|s| s.p99_ms), "p99");

    rate.axes(
        &mut out,
        "Requests per second (green all, orange failed)",
        "/s",
    );
    let all: Vec<(f64, f64)> = timeline
        .iter()
        .map(|s| (at(s.second), s.requests as f64))
        .collect();
    let failed: Vec<(f64, f64)> = timeline
        .iter()
        .map(|s| (at(s.second), s.errors as f64))
        .collect();
    rate.line(&mut out, &all, "rate");
    rate.line(&mut out, &failed, "errors");

    for (row, line) in table(report).iter().enumerate() {
        let weight = if row == 0 {
            r#" font-weight="bold""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{:.1}" class="row"{weight} xml:space="preserve">{}</text>"##,
            table_top + 22.0 * row as f64,
            escape(line)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::load::{Latency, Operation, OperationReport, Second};

    fn report() -> LoadReport {
        LoadReport {
            elapsed_s: 3.0,
            requests: 300,
            throughput: 100.0,
            mode: "closed".to_owned(),
            concurrency: 4,
            operations: [(
                Operation::Buy,
                OperationReport {
                    count: 300,
                    ok: 290,
                    errors: [("out_of_stock".to_owned(), 10)].into(),
                    throughput: 100.0,
                    latency_ms: Latency {
                        p50: 1.0,
                        p90: 2.0,
                        p99: 3.0,
                        p999: 4.0,
                        max: 5.0,
                    },
                },
            )]
            .into(),
            timeline: (0..3)
                .map(|second| Second {
                    second,
                    requests: 100,
                    errors: 3,
                    p50_ms: 1.0,
                    p99_ms: 3.0,
                })
                .collect(),
            acked_buys: Vec::new(),
            longest_buy_gap_ms: 0.0,
            buy_gaps_ms: Vec::new(),
            history: Vec::new(),
        }
    }

    #[test]
    fn the_plot_has_both_panels_and_the_table() {
        let svg = svg(&report());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("300 requests in 3.0 s"));
        let report = report();
        for line in table(&report) {
            assert!(svg.contains(&escape(&line)), "the table's line {line:?}");
        }
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn axes_are_nice() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
    }

    #[test]
    fn an_empty_run_still_plots() {
        let svg = svg(&LoadReport::default());
        assert!(svg.contains("0 requests"));
    }
}
