//! The load generator: drives a store's frontend with a mix of lookups,
//! searches and buys, and measures each request's latency in HDR
//! histograms.
//!
//! Closed loop by default: `concurrency` workers, each sending its next
//! request when the last one is answered. With a `rate`, open loop: request
//! `i` is due at `start + i / rate`, and its latency counts from that
//! intended start, so a stall of the store shows in the figures instead of
//! slowing the generator down (no coordinated omission).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pygmy_core::types::{ItemId, OrderId};
use pygmy_core::ErrorKind;
use serde::{Deserialize, Serialize};

use crate::tools::check::AckedBuy;
use crate::tools::engine::{decode, Bought, Connection, Items};
use crate::tools::history::{Effect, Event};
use pygmy_core::api::routes::{FrontendRoute, Route};

use crate::error::ClientError;
use crate::store::Client;

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `GET /lookup?id=`.
    Lookup,
    /// `GET /search?topic=`.
    Search,
    /// `GET /buy?id=`.
    Buy,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Lookup => "lookup",
            Operation::Search => "search",
            Operation::Buy => "buy",
        })
    }
}

/// What the workers send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mix {
    /// The seed client's session: search a topic, look up one of the books
    /// found, buy it if the lookup shows stock; again.
    Session,
    /// Each request drawn at random with these weights.
    Weighted {
        /// Weight of lookups (of a random item).
        lookup: u32,
        /// Weight of searches (of a random topic).
        search: u32,
        /// Weight of buys (of a random item).
        buy: u32,
    },
}

impl FromStr for Mix {
    type Err = String;

    /// `session`, or weights like `lookup=45,search=45,buy=10`.
    fn from_str(text: &str) -> Result<Mix, String> {
        if text == "session" {
            return Ok(Mix::Session);
        }
        let (mut lookup, mut search, mut buy) = (0, 0, 0);
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected name=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the weight must be a whole number"))?;
            match name.trim() {
                "lookup" => lookup = weight,
                "search" => search = weight,
                "buy" => buy = weight,
                other => {
                    return Err(format!(
                        "unknown operation {other:?}: lookup, search or buy"
                    ))
                }
            }
        }
        if lookup + search + buy == 0 {
            return Err("the weights add up to 0".to_owned());
        }
        Ok(Mix::Weighted {
            lookup,
            search,
            buy,
        })
    }
}

/// How to run the load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Requests in flight at most (workers).
    pub concurrency: usize,
    /// Requests per second for an open loop; none for a closed loop.
    pub rate: Option<f64>,
    /// What to send.
    pub mix: Mix,
    /// Seed of the random choices (the same seed sends the same requests
    /// from each worker, answers permitting).
    pub seed: u64,
    /// Items to look up and buy.
    pub items: Vec<ItemId>,
    /// Topics to search.
    pub topics: Vec<String>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Record every lookup and buy with its times and what it saw or did,
    /// for [`crate::tools::history::check`] (in [`LoadReport::history`]).
    pub history: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            requests: Some(1000),
            duration: None,
            concurrency: 16,
            rate: None,
            mix: Mix::Session,
            seed: 677,
            items: (1..=7).map(ItemId).collect(),
            topics: vec![
                "distributed systems".to_owned(),
                "graduate school".to_owned(),
            ],
            progress: false,
            history: false,
        }
    }
}

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

const SIGFIG: u8 = 3;

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h: any latency a request can have.
    Histogram::new_with_bounds(1, 3_600_000_000, SIGFIG).unwrap_or_else(|_| {
        Histogram::new(SIGFIG).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
    })
}

/// The measurements of one operation.
struct OpTally {
    latency: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
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
struct Tally {
    ops: BTreeMap<Operation, OpTally>,
    seconds: Vec<(u64, u64, Histogram<u64>)>,
    acked: Vec<AckedBuy>,
    /// When each acknowledged buy was answered, since the start.
    acked_at: Vec<Duration>,
    /// Every lookup and buy, if the run records its history.
    history: Vec<Event>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            ops: BTreeMap::new(),
            seconds: Vec::new(),
            acked: Vec::new(),
            acked_at: Vec::new(),
            history: Vec::new(),
        }
    }

    fn record(
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

    fn merge(&mut self, other: Tally) {
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
    fn buy_gaps(&self) -> Vec<(Duration, Duration)> {
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

/// Where a session-mix worker is in its session.
enum Step {
    Search,
    Lookup(ItemId),
    Buy(ItemId),
}

struct Worker<'a> {
    conn: Connection,
    config: &'a LoadConfig,
    /// `/search?topic=...` of each topic, encoded once.
    search_paths: &'a [String],
    rng: fastrand::Rng,
    step: Step,
}

impl Worker<'_> {
    fn pick_item(&mut self) -> ItemId {
        let items = &self.config.items;
        items[self.rng.usize(..items.len())]
    }

    /// Sends one request; returns what it was, its failure if any, and for
    /// a lookup or a buy, the book and what it saw or did.
    async fn send(
        &mut self,
        tally: &mut Tally,
    ) -> (Operation, Option<&'static str>, Option<(ItemId, Effect)>) {
        let mut seen = None;
        let session = matches!(self.config.mix, Mix::Session);
        let op = match (&self.config.mix, &self.step) {
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
        };
        let result = match op {
            Operation::Search => {
                let path = &self.search_paths[self.rng.usize(..self.search_paths.len())];
                let body = self.conn.get(path).await;
                body.and_then(|body| {
                    if session {
                        let found: Items = decode(&body)?;
                        if !found.item.is_empty() {
                            let pick = &found.item[self.rng.usize(..found.item.len())];
                            self.step = Step::Lookup(ItemId(pick.id));
                        }
                    }
                    Ok(())
                })
            }
            Operation::Lookup => {
                let id = match self.step {
                    Step::Lookup(id) if session => id,
                    _ => self.pick_item(),
                };
                let body = self
                    .conn
                    .get(&format!("{}?id={id}", FrontendRoute::Lookup.path()))
                    .await;
                body.and_then(|body| {
                    // Decoded only when a session or the history needs it.
                    if !session && !self.config.history {
                        return Ok(());
                    }
                    let found: Items = decode(&body)?;
                    let count = found.item.first().map(|b| b.count);
                    if let Some(count) = count {
                        seen = Some((id, Effect::Saw(count)));
                    }
                    if session {
                        let in_stock = count.is_some_and(|c| c > 0);
                        self.step = if in_stock {
                            Step::Buy(id)
                        } else {
                            Step::Search
                        };
                    }
                    Ok(())
                })
            }
            Operation::Buy => {
                let id = match self.step {
                    Step::Buy(id) if session => id,
                    _ => self.pick_item(),
                };
                let body = self
                    .conn
                    .get(&format!("{}?id={id}", FrontendRoute::Buy.path()))
                    .await;
                seen = match &body {
                    Ok(_) => Some((id, Effect::Sold)),
                    Err(err) if err.kind() == ErrorKind::OutOfStock => Some((id, Effect::SoldOut)),
                    // No such book: nothing to check.
                    Err(err) if err.kind() == ErrorKind::NotFound => None,
                    // It may have sold (a lost answer, a time limit).
                    Err(_) => Some((id, Effect::MaybeSold)),
                };
                body.and_then(|body| {
                    let bought: Bought = decode(&body)?;
                    tally.acked.push(AckedBuy {
                        item: id,
                        order: OrderId(bought.order.id),
                    });
                    if session {
                        self.step = Step::Search;
                    }
                    Ok(())
                })
            }
        };
        if result.is_err() && session {
            self.step = Step::Search;
        }
        if !self.config.history {
            seen = None;
        }
        (op, result.err().as_ref().map(ClientError::label), seen)
    }
}

/// What the workers of one run share.
struct Run {
    config: LoadConfig,
    search_paths: Vec<String>,
    next: AtomicU64,
    start: Instant,
    deadline: Option<Instant>,
    bar: Option<indicatif::ProgressBar>,
}

/// Runs the load against the store behind `client` and returns its figures.
/// Each worker is its own task, so the generator uses every core.
pub async fn run(client: &Client, config: &LoadConfig) -> LoadReport {
    let concurrency = config.concurrency.max(1);
    let start = Instant::now();
    let search_paths = config
        .topics
        .iter()
        .map(|topic| {
            let encoded: String = url::form_urlencoded::byte_serialize(topic.as_bytes()).collect();
            format!("{}?topic={encoded}", FrontendRoute::Search.path())
        })
        .collect();
    let run = Arc::new(Run {
        config: config.clone(),
        search_paths,
        next: AtomicU64::new(0),
        start,
        deadline: config.duration.map(|d| start + d),
        bar: progress_bar(config),
    });
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..concurrency {
        let conn = match Connection::new(client.url()) {
            Ok(conn) => conn,
            Err(err) => {
                eprintln!("cannot load {}: {err}", client.url());
                break;
            }
        };
        workers.spawn(work(conn, Arc::clone(&run), index as u64));
    }
    let mut total = Tally::new();
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(tally) => total.merge(tally),
            Err(err) => eprintln!("a load worker failed: {err}"),
        }
    }
    if let Some(bar) = &run.bar {
        bar.finish_and_clear();
    }
    report(config, concurrency, start.elapsed(), total)
}

async fn work(conn: Connection, run: Arc<Run>, index: u64) -> Tally {
    let config = &run.config;
    let mut worker = Worker {
        conn,
        config,
        search_paths: &run.search_paths,
        rng: fastrand::Rng::with_seed(config.seed.wrapping_add(index)),
        step: Step::Search,
    };
    let mut tally = Tally::new();
    loop {
        let ticket = run.next.fetch_add(1, Ordering::Relaxed);
        if config.requests.is_some_and(|limit| ticket >= limit) {
            break;
        }
        let due = match config.rate {
            Some(rate) => run.start + Duration::from_secs_f64(ticket as f64 / rate),
            None => Instant::now(),
        };
        if run
            .deadline
            .is_some_and(|d| due >= d || Instant::now() >= d)
        {
            break;
        }
        // Only an open loop waits, and only for a request not yet due:
        // tokio's timer ticks in milliseconds, so even a sleep until "now"
        // would cost each request about a millisecond.
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let sent = Instant::now();
        let (op, error, seen) = worker.send(&mut tally).await;
        let done = Instant::now();
        if let Some((item, effect)) = seen {
            tally.history.push(Event {
                item,
                sent: sent.duration_since(run.start),
                answered: done.duration_since(run.start),
                effect,
            });
        }
        if op == Operation::Buy && error.is_none() {
            tally.acked_at.push(done.duration_since(run.start));
        }
        let second = done.duration_since(run.start).as_secs();
        tally.record(op, second, done.duration_since(due), error);
        if let Some(bar) = &run.bar {
            bar.inc(1);
        }
    }
    tally
}

fn progress_bar(config: &LoadConfig) -> Option<indicatif::ProgressBar> {
    if !config.progress || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = match (config.requests, config.duration) {
        (Some(n), _) => indicatif::ProgressBar::new(n),
        (None, _) => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos}/{len} requests [{elapsed}] {per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn millis(hist: &Histogram<u64>, quantile: f64) -> f64 {
    hist.value_at_quantile(quantile) as f64 / 1000.0
}

fn report(config: &LoadConfig, concurrency: usize, elapsed: Duration, tally: Tally) -> LoadReport {
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

impl fmt::Display for LoadReport {
    /// The table printed at the end of a run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} requests in {:.2} s: {:.0} req/s ({} loop, {} workers)",
            self.requests, self.elapsed_s, self.throughput, self.mode, self.concurrency
        )?;
        writeln!(
            f,
            "{:<8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "op",
            "count",
            "ok",
            "errors",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        )?;
        for (op, r) in &self.operations {
            let l = &r.latency_ms;
            writeln!(
                f,
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
            )?;
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
    fn mixes_parse() {
        assert_eq!("session".parse::<Mix>(), Ok(Mix::Session));
        assert_eq!(
            "lookup=45,search=45,buy=10".parse::<Mix>(),
            Ok(Mix::Weighted {
                lookup: 45,
                search: 45,
                buy: 10
            })
        );
        assert_eq!(
            "buy=1".parse::<Mix>(),
            Ok(Mix::Weighted {
                lookup: 0,
                search: 0,
                buy: 1
            })
        );
        assert!("lookup=0".parse::<Mix>().is_err());
        assert!("sell=3".parse::<Mix>().is_err());
        assert!("lookup=x".parse::<Mix>().is_err());
        assert!("lookup".parse::<Mix>().is_err());
    }

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
}
