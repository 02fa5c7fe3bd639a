//! The load generator: drives a store's frontend with a mix of lookups,
//! searches and buys, and measures each request's latency in HDR
//! histograms.
//!
//! Closed loop by default: `concurrency` workers, each sending its next
//! request when the last one is answered. With a `rate`, open loop: request
//! `i` is due at `start + i / rate`, and its latency counts from that
//! intended start, so a stall of the store shows in the figures instead of
//! slowing the generator down (no coordinated omission).
//!
//! - this file: a run ([`run`]), its workers and their schedule;
//! - `config.rs`: what a run sends ([`LoadConfig`], [`Mix`], [`Operation`]);
//! - `worker.rs`: one worker's requests, and a session's steps;
//! - `tally.rs`: a worker's measurements, merged at the end;
//! - `report.rs`: what a run measured ([`LoadReport`]) and its [`table`].

mod config;
mod report;
mod tally;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pygmy_core::api::routes::{FrontendRoute, Route};

pub use self::config::{LoadConfig, Mix, Operation};
use self::report::report;
pub use self::report::{table, Latency, LoadReport, OperationReport, Second};
use self::tally::Tally;
use self::worker::Worker;
use crate::store::Client;
use crate::tools::engine::Connection;
use crate::tools::history::Event;

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
        let conn = match Connection::new(client.url(), client.tls()) {
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

/// Worker `index`'s loop: takes the next request's ticket, waits until it
/// is due (an open loop), sends it and tallies it, until the run's
/// requests or time are spent.
async fn work(conn: Connection, run: Arc<Run>, index: u64) -> Tally {
    let config = &run.config;
    let mut worker = Worker::new(conn, config, &run.search_paths, index);
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
        let started = Instant::now();
        let sent = worker.send().await;
        let done = Instant::now();
        if let Some((item, effect)) = sent.seen {
            tally.history.push(Event {
                item,
                sent: started.duration_since(run.start),
                answered: done.duration_since(run.start),
                effect,
            });
        }
        if let Some(acked) = sent.acked {
            tally.acked.push(acked);
            tally.acked_at.push(done.duration_since(run.start));
        }
        let second = done.duration_since(run.start).as_secs();
        tally.record(sent.op, second, done.duration_since(due), sent.error);
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
