//! The one-command demo: brings up the default local store (a frontend on
//! 127.0.0.1:8010, three catalog and three order replicas, SQLite, `raft`)
//! in this process, with its data in a fresh temporary directory, drives
//! `pygmy-client load` against it, checks the store's promises on every
//! replica, and stops it.
//!
//! `cargo run --release -p pygmy-server --example demo -- --requests 1000`

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pygmy_client::tools::check::{Checker, ReplicaUrls};
use pygmy_client::tools::load::{self, LoadConfig, Mix};
use pygmy_client::{Client, ClientOptions};
use pygmy_core::topology::Topology;
use pygmy_server::Cluster;

/// Runs the default store and drives load against it.
#[derive(Debug, Parser)]
struct Args {
    /// Requests to send.
    #[arg(long, default_value_t = 1000)]
    requests: u64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// `session`, or weights like `lookup=45,search=45,buy=10`.
    #[arg(long, default_value = "session")]
    mix: Mix,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("demo: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("demo: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut topology = Topology::default_local();
    topology.log_dir = dir.path().join("logs");
    topology.token_file = Some(dir.path().join(topology.token_file()));
    for node in &mut topology.nodes {
        if let Some(data) = &node.data_dir {
            node.data_dir = Some(dir.path().join(data));
        }
    }
    println!(
        "starting the default store (frontend http://127.0.0.1:8010; data in {})",
        dir.path().display()
    );
    let cluster = Cluster::start(topology).await.map_err(|e| e.to_string())?;
    cluster.wait_ready(Duration::from_secs(10)).await?;

    let store = Client::new("http://127.0.0.1:8010").map_err(|e| e.to_string())?;
    // The checker reads every replica through internal endpoints, with the
    // token the cluster generated at its start.
    let options = ClientOptions {
        token: cluster.topology().token.clone(),
        ..ClientOptions::default()
    };
    let checker = Checker::before(&ReplicaUrls::of(cluster.topology()), &options)
        .await
        .map_err(|e| e.to_string())?;
    let config = LoadConfig {
        requests: Some(args.requests),
        concurrency: args.concurrency,
        mix: args.mix,
        progress: true,
        history: true,
        ..LoadConfig::default()
    };
    println!(
        "driving {} requests ({} in flight)...",
        args.requests, args.concurrency
    );
    let report = load::run(&store, &config).await;
    print!("{report}");

    let verdict = checker.verdict(&report.acked_buys, &report.history).await;
    cluster.shutdown().await.map_err(|e| e.to_string())?;
    let verdict = verdict.map_err(|e| e.to_string())?;
    print!("{verdict}");
    if verdict.passed() {
        Ok(())
    } else {
        Err(format!(
            "{} violations",
            verdict.violations.len() + verdict.anomalies.len()
        ))
    }
}
