//! `pygmy-client`: look up, search and buy books, and drive load at a store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pygmy_client::tools::check::{Checker, ReplicaUrls};
use pygmy_client::tools::load::{self, LoadConfig, Mix};
use pygmy_client::tools::members::{Admin, Table};
use pygmy_client::{tls, Client, ClientError, ClientOptions, InternalClient};
use pygmy_core::topology::{Role, Topology, CLIENT_CERT_NAME};
use pygmy_core::types::{Book, IdempotencyKey, ItemId};

/// The Pygmy book store's command line.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The store's frontend.
    #[arg(
        long,
        global = true,
        env = "PYGMY_FRONTEND",
        default_value = "http://127.0.0.1:8010"
    )]
    frontend: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The CA certificate (PEM) to trust for an `https://` frontend (a
    /// cluster with TLS; by default the CA of `--topology`, if it names
    /// one).
    #[arg(long, global = true, env = "PYGMY_CA")]
    ca: Option<PathBuf>,
    /// How long a command first waits for the store to be ready (the
    /// frontend's `/ready`; a store just started needs about a second):
    /// past it, `lookup`, `search`, `buy` and `load` fail, `members` goes
    /// on (a forced removal needs no ready replica). `0s`: no wait.
    /// `status` never waits: it shows what is not ready.
    #[arg(
        long,
        global = true,
        env = "PYGMY_WAIT",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    wait: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show one book: `pygmy-client lookup 1`.
    Lookup {
        /// The book's id.
        id: i64,
    },
    /// List the books of a topic: `pygmy-client search "distributed systems"`.
    Search {
        /// The topic.
        topic: String,
    },
    /// Buy one copy: `pygmy-client buy 1`.
    Buy {
        /// The book's id.
        id: i64,
        /// Idempotency key: the same key buys at most once.
        #[arg(long)]
        key: Option<String>,
    },
    /// Drive load at the store and report latency and throughput:
    /// `pygmy-client load --requests 1000`.
    Load(LoadArgs),
    /// List, add or remove the replicas of a raft service while it serves:
    /// `pygmy-client members --service catalog list`.
    Members(MembersArgs),
    /// Every node of a topology at a glance: health, raft role, term,
    /// leader, applied index and lag, cache hit rate, requests per second.
    Status(StatusArgs),
    /// Copy a running raft service's state to a file, consistent at a read
    /// index: `pygmy-client backup --service order orders.backup`
    /// (restore: `pygmy-server --node NAME --restore FILE`).
    Backup(BackupArgs),
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// The service: `catalog` or `order`.
    #[arg(long, value_parser = parse_service)]
    service: Role,
    /// The shard of the service to back up (its name in the topology):
    /// needed when the service has several.
    #[arg(long)]
    shard: Option<String>,
    /// The topology file naming the service's replicas and the cluster
    /// token (default: the default local topology).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// The file to write (first as FILE.partial, renamed once whole).
    file: PathBuf,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The topology file naming the nodes (default: the default local
    /// topology).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// The time between the two samples that give requests per second.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
}

#[derive(Debug, Args)]
struct MembersArgs {
    /// The service: `catalog` or `order`.
    #[arg(long, value_parser = parse_service)]
    service: Role,
    /// The shard of the service (its name in the topology): needed when
    /// the service has several, each its own raft group.
    #[arg(long)]
    shard: Option<String>,
    /// The topology file naming the service's replicas and the cluster
    /// token (default: the default local topology).
    #[arg(long)]
    topology: Option<PathBuf>,
    #[command(subcommand)]
    action: MemberAction,
}

#[derive(Debug, Subcommand)]
enum MemberAction {
    /// Show every member: name, raft id, role, how far it has replicated.
    List,
    /// Add a replica, already running with a topology that names it and
    /// its peers; waits until it is a voter and serves.
    Add {
        /// Its name.
        name: String,
        /// Where its peers reach it: `http://host:port`.
        url: String,
        /// How long to wait for it to catch up and become a voter.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Remove a replica (then stop it, and take it out of the topology).
    /// Refused if fewer than a majority of the voters left would answer.
    Remove {
        /// Its name.
        name: String,
        /// Remove it even so, for a disaster (docs/operations.md): the
        /// change then waits until a majority of the voters left answer.
        #[arg(long)]
        force: bool,
    },
}

fn parse_service(text: &str) -> Result<Role, String> {
    match text {
        "catalog" => Ok(Role::Catalog),
        "order" => Ok(Role::Order),
        other => Err(format!("{other:?}: expected catalog or order")),
    }
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Stop after this many requests (default 1000 unless --duration).
    #[arg(long)]
    requests: Option<u64>,
    /// Stop after this long (`30s`, `2m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Fixed rate in requests per second (open loop); default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// `session` (the seed client's: search, lookup, buy if in stock) or
    /// weights like `lookup=45,search=45,buy=10`.
    #[arg(long, default_value = "session")]
    mix: Mix,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 677)]
    seed: u64,
    /// Item ids to use, as `FIRST-LAST`.
    #[arg(long, default_value = "1-7", value_parser = parse_items)]
    items: Items,
    /// Topics to search, comma-separated.
    #[arg(long, default_value = "distributed systems,graduate school")]
    topics: String,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Draw latency and throughput over time to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// After the run, check the store's promises on every replica (the run
    /// must be the only writer). Replicas: --topology, or the default local
    /// topology's.
    #[arg(long)]
    check: bool,
    /// The topology file naming the replicas, for --check.
    #[arg(long)]
    topology: Option<PathBuf>,
}

/// A range of item ids.
#[derive(Debug, Clone)]
struct Items(Vec<ItemId>);

fn parse_items(text: &str) -> Result<Items, String> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let first: i64 = first
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected FIRST-LAST"))?;
    let last: i64 = last
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected FIRST-LAST"))?;
    if first > last || last - first > 1_000_000 {
        return Err(format!("{text:?}: expected FIRST-LAST with FIRST <= LAST"));
    }
    Ok(Items((first..=last).map(ItemId).collect()))
}

/// A failure of the command, with its exit code.
struct Failure {
    message: String,
    code: u8,
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        Failure {
            message: err.to_string(),
            code: 1,
        }
    }
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("pygmy-client: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("pygmy-client: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn execute(cli: Cli) -> Result<(), Failure> {
    let store = Client::with_options(&cli.frontend, &store_options(&cli)?)?;
    let waits = !matches!(
        cli.command,
        Command::Members(_) | Command::Status(_) | Command::Backup(_)
    );
    if waits && !cli.wait.is_zero() {
        store.wait_ready(cli.wait).await.map_err(|err| {
            fail(format!(
                "the store at {} is not ready after {}: {err}",
                store.url(),
                humantime::format_duration(cli.wait)
            ))
        })?;
    }
    match cli.command {
        Command::Lookup { id } => {
            let book = store.lookup(ItemId(id)).await?;
            print_books(&[book], cli.json);
        }
        Command::Search { topic } => {
            let books = store.search(&topic).await?;
            print_books(&books, cli.json);
        }
        Command::Buy { id, key } => {
            let order = match key {
                Some(key) => {
                    let key = IdempotencyKey::parse(&key).map_err(|e| fail(e.to_string()))?;
                    store.buy_with_key(ItemId(id), &key).await?
                }
                None => store.buy(ItemId(id)).await?,
            };
            if cli.json {
                println!("{}", serde_json::json!({ "item": id, "order": order }));
            } else {
                println!("Bought item {id}: order {order}");
            }
        }
        Command::Load(args) => run_load(&store, args, cli.wait, cli.json).await?,
        Command::Members(args) => run_members(args, cli.wait, cli.json).await?,
        Command::Status(args) => run_status(args, cli.json).await?,
        Command::Backup(args) => run_backup(args, cli.wait, cli.json).await?,
    }
    Ok(())
}

/// The topology at `path` (default: the default local one), and client
/// options with its cluster token: `PYGMY_TOKEN`, the topology's `token`,
/// or the one the nodes keep in its `token_file` (read from the directory
/// the command runs in, as the nodes do).
fn cluster(path: Option<&std::path::Path>) -> Result<(Topology, ClientOptions), Failure> {
    let mut topology = match path {
        Some(path) => Topology::load(path).map_err(|e| fail(e.to_string()))?,
        None => Topology::default_local(),
    };
    let from_env = std::env::var(pygmy_core::topology::token::TOKEN_ENV).ok();
    topology
        .resolve_token(from_env, false)
        .map_err(|e| fail(e.to_string()))?;
    let options = ClientOptions {
        token: topology.token.clone(),
        tls: operator_tls(&topology)?,
        ..ClientOptions::default()
    };
    Ok((topology, options))
}

/// For a topology with TLS: its CA to trust, and the operator's
/// certificate (`client.pem` in its `cert_dir`) to show where there is
/// one; without it, only public endpoints answer.
fn operator_tls(topology: &Topology) -> Result<Option<Arc<rustls::ClientConfig>>, Failure> {
    let Some(files) = topology.tls_files(CLIENT_CERT_NAME) else {
        return Ok(None);
    };
    let identity = files
        .cert
        .exists()
        .then_some((files.cert.as_path(), files.key.as_path()));
    tls::client_config(&files.ca, identity)
        .map(Some)
        .map_err(|e| fail(pygmy_core::error::chain(&e)))
}

/// The client options for the store's frontend: TLS trusting `--ca`, or
/// the CA of the topology a command names, if either is given.
fn store_options(cli: &Cli) -> Result<ClientOptions, Failure> {
    let topology = match &cli.command {
        Command::Load(args) => args.topology.as_deref(),
        Command::Members(args) => args.topology.as_deref(),
        Command::Status(args) => args.topology.as_deref(),
        Command::Backup(args) => args.topology.as_deref(),
        _ => None,
    };
    let tls = match (&cli.ca, topology) {
        (Some(ca), _) => {
            Some(tls::client_config(ca, None).map_err(|e| fail(pygmy_core::error::chain(&e)))?)
        }
        (None, Some(path)) => {
            operator_tls(&Topology::load(path).map_err(|e| fail(e.to_string()))?)?
        }
        (None, None) => None,
    };
    Ok(ClientOptions {
        tls,
        ..ClientOptions::default()
    })
}

async fn run_status(args: StatusArgs, json: bool) -> Result<(), Failure> {
    let (topology, options) = cluster(args.topology.as_deref())?;
    let rows = pygmy_client::tools::status::status(&topology, &options, args.interval).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        print!("{}", pygmy_client::tools::status::StatusTable(&rows));
    }
    let down: Vec<&str> = rows
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.node.as_str())
        .collect();
    if down.is_empty() {
        Ok(())
    } else {
        Err(fail(format!("unreachable: {}", down.join(", "))))
    }
}

async fn run_members(args: MembersArgs, wait: Duration, json: bool) -> Result<(), Failure> {
    let (topology, options) = cluster(args.topology.as_deref())?;
    let shard = topology
        .find_shard(args.service, args.shard.as_deref())
        .map_err(|e| fail(e.to_string()))?;
    let admin = Admin::of(&topology, args.service, shard, &options)?;
    // A service with no ready replica still takes a forced removal: the
    // command goes on, and its answer says what is wrong.
    if !wait.is_zero() {
        if let Err(err) = admin.wait_ready(wait).await {
            eprintln!(
                "pygmy-client: no {} replica is ready after {} ({err}); asking anyway",
                args.service,
                humantime::format_duration(wait)
            );
        }
    }
    let (members, outcome) = match &args.action {
        MemberAction::List => (admin.list().await?, Ok(())),
        MemberAction::Add { name, url, wait } => {
            let (members, serves) = admin.add(name, url, *wait).await?;
            let outcome = if serves {
                Ok(())
            } else {
                Err(fail(format!(
                    "{name} was added, but is not a voter that serves after {}: it may \
                     still be catching up (see `members list`, and its /health)",
                    humantime::format_duration(*wait)
                )))
            };
            (members, outcome)
        }
        MemberAction::Remove { name, force } => (admin.remove(name, *force).await?, Ok(())),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&members).unwrap_or_default()
        );
    } else {
        print!("{}", Table(&members));
    }
    outcome
}

/// Waits until every backend replica of `topology` is ready, at most
/// `wait` for all of them.
async fn every_replica_ready(
    topology: &Topology,
    options: &ClientOptions,
    wait: Duration,
) -> Result<(), Failure> {
    let replicas = [Role::Catalog, Role::Order]
        .into_iter()
        .flat_map(|role| topology.urls(role))
        .map(|(name, url)| Ok((name, InternalClient::new(&url, options)?)))
        .collect::<Result<Vec<_>, ClientError>>()?;
    let waits = replicas.iter().map(|(name, replica)| async move {
        replica.wait_ready(wait).await.map_err(|err| {
            fail(format!(
                "{name} is not ready after {}: {err}",
                humantime::format_duration(wait)
            ))
        })
    });
    futures_util::future::try_join_all(waits).await.map(drop)
}

async fn run_backup(args: BackupArgs, wait: Duration, json: bool) -> Result<(), Failure> {
    let (topology, options) = cluster(args.topology.as_deref())?;
    // A backup may take minutes: no limit on the whole call, only on each
    // of its chunks (the client's timeout, between two).
    let shard = topology
        .find_shard(args.service, args.shard.as_deref())
        .map_err(|e| fail(e.to_string()))?;
    let admin = Admin::of(&topology, args.service, shard, &options)?;
    if !wait.is_zero() {
        admin.wait_ready(wait).await.map_err(|err| {
            fail(format!(
                "no {} replica is ready after {}: {err}",
                args.service,
                humantime::format_duration(wait)
            ))
        })?;
    }
    let service = (args.service, shard);
    let taken = pygmy_client::tools::backup::backup(&topology, service, &options, &args.file)
        .await
        .map_err(|e| fail(pygmy_core::error::chain(&e)))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&taken).unwrap_or_default()
        );
    } else {
        println!(
            "{}: a backup of the {} service at log index {}, {} bytes, from {}",
            taken.path.display(),
            taken.service,
            taken.last_log_index,
            taken.bytes,
            taken.replica
        );
    }
    Ok(())
}

fn print_books(books: &[Book], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(books).unwrap_or_default()
        );
        return;
    }
    if books.is_empty() {
        println!("No books.");
    }
    for b in books {
        println!(
            "{:>4}  {}  [{}]  cost {}  in stock {}",
            b.id, b.title, b.topic, b.cost, b.count
        );
    }
}

async fn run_load(
    store: &Client,
    args: LoadArgs,
    wait: Duration,
    json: bool,
) -> Result<(), Failure> {
    let config = LoadConfig {
        requests: args.requests.or(if args.duration.is_none() {
            Some(1000)
        } else {
            None
        }),
        duration: args.duration,
        concurrency: args.concurrency,
        rate: args.rate.filter(|r| *r > 0.0),
        mix: args.mix,
        seed: args.seed,
        items: args.items.0,
        topics: args
            .topics
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        progress: !json,
        // With --check, every lookup is also checked against the buys.
        history: args.check,
    };
    if config.topics.is_empty() || config.items.is_empty() {
        return Err(fail("give at least one topic and one item"));
    }
    let checker = if args.check {
        let (topology, options) = cluster(args.topology.as_deref())?;
        // The check reads every replica, not only the one the frontend
        // found ready.
        if !wait.is_zero() {
            every_replica_ready(&topology, &options, wait).await?;
        }
        Some(Checker::before(&ReplicaUrls::of(&topology), &options).await?)
    } else {
        None
    };

    let report = load::run(store, &config).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{report}");
    }
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&report).map_err(|e| fail(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, pygmy_client::tools::plot::svg(&report))
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    }
    let Some(checker) = checker else {
        return Ok(());
    };
    let verdict = checker.verdict(&report.acked_buys, &report.history).await?;
    print!("{verdict}");
    if verdict.passed() {
        Ok(())
    } else {
        Err(fail(format!(
            "{} violations of the store's promises",
            verdict.violations.len() + verdict.anomalies.len()
        )))
    }
}
