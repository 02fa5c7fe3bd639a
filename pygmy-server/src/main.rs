//! `pygmy-server`: runs one node, every node of a topology, or the default
//! local store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pygmy_core::topology::Topology;
use pygmy_server::node::{bind, run_node};
use pygmy_server::Cluster;
use tracing::Instrument;

/// Every node allocates per request and per raft entry; mimalloc costs
/// less than glibc's malloc there (docs/history/benchmarks.md, "Where a
/// buy's time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs Pygmy book store nodes.
///
/// With no options, runs the default local store (a frontend on
/// 127.0.0.1:8010, three catalog and three order `raft` replicas), with data under
/// ./data and logs under ./logs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The topology file (default: the embedded local topology).
    #[arg(long, short, env = "PYGMY_CONFIG")]
    config: Option<PathBuf>,
    /// Run only this node of the topology (default: all of them).
    #[arg(long, short, env = "PYGMY_NODE")]
    node: Option<String>,
    /// Print the topology (the default one, or --config's) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Print the cluster token the nodes use and exit: PYGMY_TOKEN, the
    /// topology's `token`, or the one kept in its `token_file` (generated
    /// now if the cluster has none yet and runs on loopback).
    #[arg(long)]
    print_token: bool,
    /// Ask the node (--node, on its address in the topology) for its
    /// `/ready` and exit 0 if it can serve, 1 if not: a container's health
    /// check, in an image with no other program.
    #[arg(long, requires = "node")]
    probe: bool,
    /// Make a cluster CA, a certificate and key for each node of the
    /// topology and one for the operator's tools (`client.pem`) in DIR,
    /// and exit (docs/operations.md, "TLS"). Name DIR as `cert_dir` and
    /// DIR/ca.pem as `ca` in the topology's `[tls]`.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["node", "probe", "force_new_cluster"])]
    make_certs: Option<PathBuf>,
    /// Make the replica --node, stopped, the only voter of a new cluster
    /// with everything it holds, and exit: for a service that lost its
    /// majority for good (docs/operations.md). Start it as usual
    /// afterwards; replicas started on empty data directories join it.
    #[arg(long, requires = "node")]
    force_new_cluster: bool,
    /// Found a new cluster of --node's service from the backup FILE
    /// (`pygmy-client backup`), in --node's empty data directory, and
    /// exit: --node becomes its only voter (docs/operations.md, "Backup
    /// and restore"). Start it as usual afterwards; replicas started on
    /// empty data directories join it.
    #[arg(
        long,
        value_name = "FILE",
        requires = "node",
        conflicts_with = "force_new_cluster"
    )]
    restore: Option<PathBuf>,
    /// Read no raft entry format newer than N on --node (its topology's
    /// `max_format`): its service writes no newer one while it is a
    /// member, which keeps a way back to an older build during an upgrade
    /// (docs/operations.md, "Rolling upgrades").
    #[arg(long, value_name = "N", requires = "node", env = "PYGMY_MAX_FORMAT")]
    max_format: Option<u32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let topology = match &args.config {
        Some(path) => Topology::load(path),
        None => Ok(Topology::default_local()),
    };
    let mut topology = match topology {
        Ok(topology) => topology,
        Err(err) => {
            eprintln!("pygmy-server: {err}");
            return ExitCode::from(2);
        }
    };
    if let (Some(max), Some(name)) = (args.max_format, &args.node) {
        match topology.nodes.iter_mut().find(|n| &n.name == name) {
            Some(node) => node.max_format = Some(max),
            None => {
                eprintln!("pygmy-server: no node named {name:?} in the topology");
                return ExitCode::from(2);
            }
        }
    }
    if args.print_config {
        print!("{}", topology.to_toml());
        return ExitCode::SUCCESS;
    }
    if args.probe {
        let name = args.node.as_deref().unwrap_or_default();
        let Some(node) = topology.node(name) else {
            eprintln!("pygmy-server: no node named {name:?} in the topology");
            return ExitCode::from(2);
        };
        // A public endpoint: the CA to trust is enough.
        let tls = match topology.tls_files(name) {
            None => None,
            Some(files) => match pygmy_client::tls::client_config(&files.ca, None) {
                Ok(config) => Some(config),
                Err(err) => {
                    eprintln!("pygmy-server: {}", pygmy_core::error::chain(&err));
                    return ExitCode::FAILURE;
                }
            },
        };
        return match pygmy_server::probe::ready(node.addr, std::time::Duration::from_secs(2), tls) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("pygmy-server: {name} at {}: {err}", node.addr);
                ExitCode::FAILURE
            }
        };
    }
    if let Some(dir) = &args.make_certs {
        return match pygmy_server::certs::make_certs(&topology, dir) {
            Ok(written) => {
                for cert in written {
                    println!("{}", cert.display());
                }
                println!(
                    "In the topology: [tls] ca = \"{}\", cert_dir = \"{}\". Keep ca.key \
                     off the nodes; give each node its own .pem and .key.",
                    dir.join("ca.pem").display(),
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("pygmy-server: {}", pygmy_core::error::chain(&err));
                ExitCode::FAILURE
            }
        };
    }
    if let Some(backup) = &args.restore {
        let name = args.node.as_deref().unwrap_or_default();
        return match pygmy_server::recover::restore(&topology, name, backup) {
            Ok(restored) => {
                println!(
                    "{name} is the only voter of a new {} cluster {} with the backup's state \
                     at log index {} (taken at {} s since the epoch). Start it as usual; \
                     start the others on empty data directories: they join it.",
                    restored.header.service,
                    restored.identity.cluster,
                    restored.header.last_log_id.index,
                    restored.header.taken_at_s,
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("pygmy-server: {}", pygmy_core::error::chain(&err));
                ExitCode::FAILURE
            }
        };
    }
    if args.force_new_cluster {
        let name = args.node.as_deref().unwrap_or_default();
        return match pygmy_server::recover::force_new_cluster(&topology, name) {
            Ok(forced) => {
                println!(
                    "{name} is the only voter of a new cluster {} (raft id {}, from log index {}); \
                     dropped: {}. Start it as usual; start the others on empty data \
                     directories: they join it.",
                    forced.identity.cluster,
                    forced.identity.id,
                    forced.index,
                    forced.dropped.join(", "),
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("pygmy-server: {}", pygmy_core::error::chain(&err));
                ExitCode::FAILURE
            }
        };
    }
    if args.print_token {
        let mut topology = topology;
        return match pygmy_server::node::resolve_token(&mut topology) {
            Ok(_) => {
                println!("{}", topology.token.unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("pygmy-server: {err}");
                ExitCode::from(2)
            }
        };
    }
    let nodes: Vec<String> = match &args.node {
        Some(name) if topology.node(name).is_none() => {
            eprintln!("pygmy-server: no node named {name:?} in the topology");
            return ExitCode::from(2);
        }
        Some(name) => vec![name.clone()],
        None => topology.nodes.iter().map(|n| n.name.clone()).collect(),
    };
    let _logs = match pygmy_server::logging::init(&topology.log_dir, &nodes) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!(
                "pygmy-server: cannot set up logs in {}: {err}",
                topology.log_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("pygmy-server: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.node {
            Some(name) => {
                let node = topology.node(&name).map(|n| n.addr);
                let listener = bind(node.unwrap_or_else(|| ([127, 0, 0, 1], 0).into())).await?;
                run_node(&topology, &name, listener, shutdown_signal())
                    .instrument(tracing::info_span!("node", node = %name))
                    .await
            }
            None => {
                let cluster = Cluster::start(topology).await?;
                tracing::info!(
                    frontend = ?cluster.topology().of_role(pygmy_core::topology::Role::Frontend).map(|n| n.addr).collect::<Vec<_>>(),
                    "store running; Ctrl-C stops it"
                );
                cluster.run_until(shutdown_signal()).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "exiting");
            eprintln!("pygmy-server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
