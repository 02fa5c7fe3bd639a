//! Fault tests: real node processes on loopback, 64 concurrent clients
//! buying and reading through the frontend, while replicas are killed
//! (SIGKILL), frozen (SIGSTOP) and restarted. After healing, the checker of
//! `pygmy-client` judges every replica.
//!
//! The `broadcast` backend must be caught: with its first catalog replica
//! frozen, the others take writes in its place, and when it thaws it sells
//! from a stale state. The same scenarios run against `raft` (three
//! replicas per service), which must keep every promise.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pygmy_client::tools::check::{check, Checker, Expected, ReplicaUrls, Violation};
use pygmy_client::tools::history;
use pygmy_client::tools::load::{self, LoadConfig, LoadReport};
use pygmy_client::tools::members::{Admin, Table};
use pygmy_client::{CatalogClient, ClientError, ClientOptions};
use pygmy_core::api::internal::LookupsRequest;
use pygmy_core::topology::{Replication, Role};
use pygmy_core::types::ItemId;
use pygmy_server::testing::{Options, ProcessCluster, TestShards};

/// One step of a fault schedule, at an offset from the start of the load.
#[derive(Debug, Clone)]
enum Fault {
    Kill(&'static str),
    /// Kill, and delete the node's data directory.
    Wipe(&'static str),
    /// Kill every node at once (SIGKILL), as a power loss.
    KillAll,
    /// Start every node again, and wait until all serve.
    RestartAll,
    Restart(&'static str),
    Freeze(&'static str),
    Thaw(&'static str),
    /// Cuts the network link between two nodes (a cluster in namespaces).
    Cut(&'static str, &'static str),
    Heal(&'static str, &'static str),
    /// Starts a new replica of a service and adds it with the operator's
    /// command; it must become a voter within 30 s.
    Add(Role, &'static str),
    /// Removes a replica from its service with the operator's command,
    /// then stops it.
    Remove(Role, &'static str),
    /// Waits (at most 30 s) until the replica has written a snapshot, so
    /// that what follows does not depend on how fast this machine fills
    /// the log.
    AwaitSnapshot(&'static str),
}

/// What a scenario saw.
struct Run {
    report: LoadReport,
    violations: Vec<Violation>,
    /// Lookups no linearizable store could have answered.
    anomalies: Vec<history::Anomaly>,
    /// How long each restarted replica took to serve again.
    catch_up: Vec<(String, Duration)>,
    /// How long each membership change took.
    changes: Vec<(String, Duration)>,
    /// The size of each backend replica's current snapshot file, once
    /// healed (raft only; none before the first snapshot).
    snapshots: BTreeMap<String, u64>,
    /// The peak resident memory of each node's process, once healed.
    peak_rss: BTreeMap<String, u64>,
}

/// The bytes of the snapshot files of every backend replica of `cluster`.
fn snapshot_sizes(cluster: &ProcessCluster) -> BTreeMap<String, u64> {
    let topology = cluster.topology();
    let mut sizes = BTreeMap::new();
    for node in topology.nodes.iter().filter(|n| n.role != Role::Frontend) {
        let Ok(entries) = std::fs::read_dir(topology.data_dir(node)) else {
            continue;
        };
        let mut bytes = 0;
        for dir in entries.flatten() {
            if !dir.file_name().to_string_lossy().ends_with(".snapshots") {
                continue;
            }
            for file in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                bytes += file.metadata().map_or(0, |m| m.len());
            }
        }
        sizes.insert(node.name.clone(), bytes);
    }
    sizes
}

fn replica_urls(cluster: &ProcessCluster) -> ReplicaUrls {
    ReplicaUrls::of(cluster.topology())
}

/// The operator's membership commands for `role`'s replicas.
fn admin(cluster: &ProcessCluster, role: Role) -> Admin {
    Admin::of(cluster.topology(), role, 0, &cluster.options()).expect("admin")
}

/// One scenario at a time: four clusters of processes and their 256
/// clients at once would measure the machine, not the store.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the replicas may take to converge once healed: reconciling a
/// sale left without its order takes its grace period.
const QUIET_WITHIN: Duration = Duration::from_secs(20);

/// Runs `seconds` of load with 64 clients while `schedule` runs, heals
/// every replica, waits until they are quiet (at most 20 s: reconciling a
/// sale left without its order takes its grace period) and checks them.
async fn under_faults(
    cluster: &mut ProcessCluster,
    seconds: u64,
    clients: usize,
    schedule: &[(u64, Fault)],
) -> Run {
    let checker = Checker::before(&replica_urls(cluster), &cluster.options())
        .await
        .expect("state before");
    let config = LoadConfig {
        requests: None,
        duration: Some(Duration::from_secs(seconds)),
        concurrency: clients,
        mix: "lookup=30,search=20,buy=50".parse().expect("mix"),
        history: true,
        ..LoadConfig::default()
    };
    let store = cluster.store();
    let load = tokio::spawn(async move { load::run(&store, &config).await });

    let start = Instant::now();
    let mut frozen = Vec::new();
    let mut killed = Vec::new();
    let mut cuts = Vec::new();
    let mut catch_up = Vec::new();
    let mut changes = Vec::new();
    for (at, fault) in schedule {
        tokio::time::sleep_until((start + Duration::from_millis(*at)).into()).await;
        match fault {
            Fault::Kill(name) => {
                cluster.kill(name);
                killed.push(*name);
            }
            Fault::Wipe(name) => {
                cluster.wipe(name);
                killed.push(*name);
            }
            Fault::KillAll => cluster.kill_all(),
            Fault::RestartAll => {
                let began = Instant::now();
                cluster.spawn_all(Duration::from_secs(30)).await;
                catch_up.push(("the whole cluster".to_owned(), began.elapsed()));
            }
            Fault::Restart(name) => {
                cluster.spawn(name);
                killed.retain(|k| k != name);
                let began = Instant::now();
                cluster.wait_ready(name, Duration::from_secs(30)).await;
                catch_up.push((name.to_string(), began.elapsed()));
            }
            Fault::Freeze(name) => {
                cluster.freeze(name);
                frozen.push(*name);
            }
            Fault::Thaw(name) => {
                cluster.thaw(name);
                frozen.retain(|f| f != name);
            }
            Fault::AwaitSnapshot(name) => {
                let deadline = Instant::now() + Duration::from_secs(30);
                while snapshot_sizes(cluster).get(*name).copied().unwrap_or(0) == 0 {
                    assert!(
                        Instant::now() < deadline,
                        "{name} wrote no snapshot within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Fault::Cut(a, b) => {
                cluster.cut(a, b);
                cuts.push((*a, *b));
            }
            Fault::Heal(a, b) => {
                cluster.heal(a, b);
                cuts.retain(|cut| cut != &(*a, *b));
            }
            Fault::Add(role, name) => {
                let began = Instant::now();
                cluster.add_replica(*role, name);
                let admin = admin(cluster, *role);
                let wait = Duration::from_secs(30);
                let (members, serves) = admin
                    .add(name, &cluster.url(name), wait)
                    .await
                    .unwrap_or_else(|e| panic!("adding {name}: {e}"));
                assert!(
                    serves,
                    "{name} does not serve as a voter after {wait:?}:\n{}",
                    Table(&members)
                );
                changes.push((
                    format!("{name} added, a voter that serves,"),
                    began.elapsed(),
                ));
            }
            Fault::Remove(role, name) => {
                let began = Instant::now();
                let admin = admin(cluster, *role);
                if let Err(err) = admin.remove(name, false).await {
                    // Not committed in time: the change goes on.
                    println!("removing {name}: {err}");
                }
                let mut gone = false;
                while !gone && began.elapsed() < Duration::from_secs(30) {
                    let members = admin.list().await;
                    gone = members.is_ok_and(|m| m.get(name).is_none() && !m.changing);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert!(gone, "{name} is still a member after 30 s");
                cluster.forget(name);
                changes.push((format!("{name} removed"), began.elapsed()));
            }
        }
    }
    let report = load.await.expect("load task");
    // Heal everything, then judge once quiet.
    for name in frozen {
        cluster.thaw(name);
    }
    for name in killed {
        cluster.spawn(name);
    }
    for (a, b) in cuts {
        cluster.heal(a, b);
    }
    for node in cluster.topology().nodes.clone() {
        cluster
            .wait_ready(&node.name, Duration::from_secs(30))
            .await;
    }
    // The replicas as they are now (some may have been added or removed).
    let verdict = checker
        .over(&replica_urls(cluster), &cluster.options())
        .expect("clients")
        .verdict_within(&report.acked_buys, &report.history, QUIET_WITHIN)
        .await
        .expect("state after");
    let (violations, anomalies) = (verdict.violations, verdict.anomalies);
    Run {
        report,
        violations,
        anomalies,
        catch_up,
        changes,
        snapshots: snapshot_sizes(cluster),
        peak_rss: cluster
            .topology()
            .nodes
            .iter()
            .filter_map(|n| Some((n.name.clone(), cluster.peak_rss(&n.name)?)))
            .collect(),
    }
}

/// One scenario, alone: starts its cluster, runs `seconds` of load under
/// `schedule`, prints what it saw and has `judge` assert on it while the
/// cluster is still there (a failure keeps its logs).
async fn scenario(
    cluster: impl std::future::Future<Output = ProcessCluster>,
    seconds: u64,
    schedule: &[(u64, Fault)],
    judge: impl FnOnce(&Run),
) {
    scenario_with(cluster, seconds, 64, schedule, judge).await;
}

/// [`scenario`] with `clients` clients.
async fn scenario_with(
    cluster: impl std::future::Future<Output = ProcessCluster>,
    seconds: u64,
    clients: usize,
    schedule: &[(u64, Fault)],
    judge: impl FnOnce(&Run),
) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut cluster = cluster.await;
    let run = under_faults(&mut cluster, seconds, clients, schedule).await;
    println!("{}", summary(&run));
    judge(&run);
}

fn summary(run: &Run) -> String {
    let mut text = format!("{}", run.report);
    for (name, took) in &run.catch_up {
        text.push_str(&format!("{name} served again {took:?} after its restart\n"));
    }
    for (change, took) in &run.changes {
        text.push_str(&format!("{change} in {took:?}\n"));
    }
    for v in &run.violations {
        text.push_str(&format!("VIOLATION {v}\n"));
    }
    let lookups = run
        .report
        .history
        .iter()
        .filter(|e| matches!(e.effect, history::Effect::Saw(_)))
        .count();
    text.push_str(&format!(
        "history: {} of {lookups} lookups no linearizable store could answer\n",
        run.anomalies.len()
    ));
    for a in run.anomalies.iter().take(10) {
        text.push_str(&format!("VIOLATION {a}\n"));
    }
    text
}

fn options(replication: Replication, replicas: usize, stock: i64) -> Options {
    Options {
        stock: Some(stock),
        catalogs: replicas,
        orders: replicas,
        replication,
        ..Options::default()
    }
}

fn binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_pygmy-server"))
}

async fn process_cluster(replication: Replication, replicas: usize, stock: i64) -> ProcessCluster {
    ProcessCluster::start(binary(), options(replication, replicas, stock)).await
}

/// A cluster whose every node runs in a network namespace of its own.
async fn namespaced_cluster(
    replication: Replication,
    replicas: usize,
    stock: i64,
) -> ProcessCluster {
    ProcessCluster::start_in_namespaces(binary(), options(replication, replicas, stock)).await
}

async fn broadcast_cluster(stock: i64) -> ProcessCluster {
    process_cluster(Replication::Broadcast, 2, stock).await
}

/// Three replicas per service: one may fail.
async fn raft_cluster(stock: i64) -> ProcessCluster {
    process_cluster(Replication::Raft, 3, stock).await
}

/// A sharded store (docs/scaling.md, "Shards: the design"): the catalog
/// in two shards (books 1-4, and 5 up) and the orders in two, three
/// replicas each: `catalog-0..2` and `order-0..2` are the first shard of
/// their service, `catalog-3..5` and `order-3..5` the second.
async fn sharded_raft_cluster(stock: i64) -> ProcessCluster {
    let options = Options {
        shards: Some(TestShards {
            catalog_splits: vec![5],
            orders: 2,
        }),
        ..options(Replication::Raft, 3, stock)
    };
    ProcessCluster::start(binary(), options).await
}

/// Replicas of the second shard of each service killed or frozen, one at
/// a time (whichever lead, its leaders among them), while the first
/// shards serve; then a replica of the first order shard.
const SHARDED_FAULTS: [(u64, Fault); 10] = [
    (1_500, Fault::Kill("catalog-3")),
    (3_500, Fault::Restart("catalog-3")),
    (5_000, Fault::Freeze("order-3")),
    (8_500, Fault::Thaw("order-3")),
    (10_000, Fault::Kill("catalog-4")),
    (12_000, Fault::Restart("catalog-4")),
    (13_500, Fault::Freeze("order-4")),
    (17_000, Fault::Thaw("order-4")),
    (18_500, Fault::Kill("order-0")),
    (20_500, Fault::Restart("order-0")),
];

/// The freeze scenario that catches `broadcast`.
const FREEZE_THEN_CRASH: [(u64, Fault); 4] = [
    (200, Fault::Freeze("catalog-0")),
    (9_000, Fault::Kill("catalog-1")),
    (9_000, Fault::Thaw("catalog-0")),
    (12_000, Fault::Restart("catalog-1")),
];

/// A catalog replica cut off from its peers (but not from the order
/// replicas, which go on selling through it), then an order replica cut
/// off the same way; each healed in turn.
const RAFT_PARTITIONS: [(u64, Fault); 8] = [
    (500, Fault::Cut("catalog-0", "catalog-1")),
    (500, Fault::Cut("catalog-0", "catalog-2")),
    (6_000, Fault::Heal("catalog-0", "catalog-1")),
    (6_000, Fault::Heal("catalog-0", "catalog-2")),
    (7_000, Fault::Cut("order-0", "order-1")),
    (7_000, Fault::Cut("order-0", "order-2")),
    (12_000, Fault::Heal("order-0", "order-1")),
    (12_000, Fault::Heal("order-0", "order-2")),
];

/// The same cut for `broadcast`'s two catalog replicas.
const BROADCAST_PARTITION: [(u64, Fault); 2] = [
    (500, Fault::Cut("catalog-0", "catalog-1")),
    (9_000, Fault::Heal("catalog-0", "catalog-1")),
];

/// Crashes and restarts, one replica at a time, the leaders among them.
const CRASHES: [(u64, Fault); 6] = [
    (1_500, Fault::Kill("catalog-0")),
    (3_500, Fault::Restart("catalog-0")),
    (5_000, Fault::Kill("order-0")),
    (7_000, Fault::Restart("order-0")),
    (8_500, Fault::Kill("catalog-1")),
    (10_000, Fault::Restart("catalog-1")),
];

/// Every replica of both services killed and restarted in turn, one down
/// at a time, over 30 s: whichever replicas lead, each leader is killed
/// at least once.
const EVERY_REPLICA_IN_TURN: [(u64, Fault); 12] = [
    (2_000, Fault::Kill("catalog-0")),
    (4_000, Fault::Restart("catalog-0")),
    (6_500, Fault::Kill("order-0")),
    (8_500, Fault::Restart("order-0")),
    (11_000, Fault::Kill("catalog-1")),
    (13_000, Fault::Restart("catalog-1")),
    (15_500, Fault::Kill("order-1")),
    (17_500, Fault::Restart("order-1")),
    (20_000, Fault::Kill("catalog-2")),
    (22_000, Fault::Restart("catalog-2")),
    (24_500, Fault::Kill("order-2")),
    (26_500, Fault::Restart("order-2")),
];

/// Replicas of both services frozen (SIGSTOP) for 5 s each, one at a
/// time: whichever lead, some freezes hit a leader. A freeze lasts longer
/// than [`FREEZE_GAP_MS`]: the buyers go on because another replica is
/// elected, not because the frozen one thaws.
const FREEZES: [(u64, Fault); 8] = [
    (2_000, Fault::Freeze("catalog-0")),
    (7_000, Fault::Thaw("catalog-0")),
    (8_500, Fault::Freeze("order-0")),
    (13_500, Fault::Thaw("order-0")),
    (15_000, Fault::Freeze("catalog-1")),
    (20_000, Fault::Thaw("catalog-1")),
    (21_500, Fault::Freeze("order-1")),
    (26_500, Fault::Thaw("order-1")),
];

/// Every node killed at once, twice, as a power loss.
const POWER_LOSS: [(u64, Fault); 4] = [
    (3_000, Fault::KillAll),
    (4_000, Fault::RestartAll),
    (9_000, Fault::KillAll),
    (9_500, Fault::RestartAll),
];

/// A catalog replica loses its disk once the other two have each written a
/// snapshot of the large catalog (their logs are then purged up to it), and
/// comes back empty.
const LARGE_DISK_LOSS: [(u64, Fault); 4] = [
    (2_000, Fault::AwaitSnapshot("catalog-0")),
    (2_000, Fault::AwaitSnapshot("catalog-2")),
    (9_000, Fault::Wipe("catalog-1")),
    (9_500, Fault::Restart("catalog-1")),
];

/// A catalog replica, then an order replica, lose their disks and come
/// back empty.
const DISK_LOSS: [(u64, Fault); 4] = [
    (2_000, Fault::Wipe("catalog-1")),
    (3_000, Fault::Restart("catalog-1")),
    (8_000, Fault::Wipe("order-2")),
    (9_000, Fault::Restart("order-2")),
];

/// The catalog grows to four replicas and loses its founder; the order
/// service grows to four and loses one of its first three.
const MEMBERSHIP_CHANGES: [(u64, Fault); 4] = [
    (1_500, Fault::Add(Role::Catalog, "catalog-3")),
    (6_000, Fault::Remove(Role::Catalog, "catalog-0")),
    (9_000, Fault::Add(Role::Order, "order-3")),
    (13_000, Fault::Remove(Role::Order, "order-1")),
];

/// No violation of the store's promises, no impossible lookup.
fn assert_no_broken_promise(run: &Run) {
    assert!(
        run.violations.is_empty() && run.anomalies.is_empty(),
        "{}",
        summary(run)
    );
}

/// The availability figures of a run under `faults`: the longest time
/// without an acknowledged buy, and the buys' p99.
fn print_availability(run: &Run, faults: &str) {
    let buys = &run.report.operations[&load::Operation::Buy];
    println!(
        "availability {faults}: longest time without an acknowledged buy {:.0} ms, buy p99 {:.0} ms",
        run.report.longest_buy_gap_ms, buys.latency_ms.p99
    );
}

fn assert_kept_every_promise(run: &Run) {
    assert_no_broken_promise(run);
    for (name, took) in &run.catch_up {
        assert!(
            *took < Duration::from_secs(5),
            "{name} took {took:?} to serve again"
        );
    }
    let buys = &run.report.operations[&load::Operation::Buy];
    assert!(buys.ok > 0, "no buy succeeded:\n{}", summary(run));
}

/// The weak protocol must be caught: a scenario it passes cannot tell it
/// from a strong one.
fn assert_caught(run: &Run, scenario: &str) {
    assert!(
        !run.violations.is_empty(),
        "broadcast kept every promise through {scenario}: the test cannot tell a weak protocol\n{}",
        summary(run)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_keeps_every_promise_through_crashes_and_restarts() {
    scenario(
        raft_cluster(120),
        30,
        &EVERY_REPLICA_IN_TURN,
        assert_kept_every_promise,
    )
    .await;
}

/// Every promise holds over shards while replicas of one shard are killed
/// and frozen: each shard elects its own leaders, and the check counts
/// stock and orders over every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_store_keeps_every_promise_while_one_shard_loses_replicas() {
    scenario_with(
        sharded_raft_cluster(120),
        22,
        32,
        &SHARDED_FAULTS,
        assert_kept_every_promise,
    )
    .await;
}

/// The longest time without an acknowledged buy that freezing one
/// replica at a time may cost: about twice what it costs on this 2-core
/// machine (1.0 to 1.8 s: one election, and a vote split now and then).
const FREEZE_GAP_MS: f64 = 3_500.0;

/// One frozen replica at a time costs the buyers about one election:
/// prints the longest time without an acknowledged buy and the buys' p99,
/// and asserts the gap is within [`FREEZE_GAP_MS`] (seen failing with
/// elections of 3 to 4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_freezes_cost_buyers_about_an_election() {
    scenario_with(raft_cluster(100_000), 28, 24, &FREEZES, |run| {
        assert_no_broken_promise(run);
        print_availability(run, "under freezes");
        assert!(
            run.report.longest_buy_gap_ms < FREEZE_GAP_MS,
            "buys stalled for {:.0} ms\n{}",
            run.report.longest_buy_gap_ms,
            summary(run)
        );
    })
    .await;
}

/// A power loss: every node killed at once (twice), and started again.
/// Every acknowledged buy is still there, and the replicas agree; each
/// comes back as the member it was (its identity was on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_keeps_every_promise_through_power_loss() {
    scenario(raft_cluster(120), 14, &POWER_LOSS, |run| {
        assert_no_broken_promise(run);
        let buys = &run.report.operations[&load::Operation::Buy];
        assert!(buys.ok > 0, "no buy succeeded:\n{}", summary(run));
    })
    .await;
}

/// A replica that lost its disk rejoins under a new raft id, catches up
/// and becomes a voter again; no acknowledged buy is lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_keeps_every_promise_through_disk_loss() {
    scenario(raft_cluster(120), 16, &DISK_LOSS, |run| {
        assert_no_broken_promise(run);
        for (name, took) in &run.catch_up {
            assert!(
                *took < Duration::from_secs(30),
                "{name} took {took:?} to serve again after losing its disk"
            );
        }
    })
    .await;
}

/// An operator grows and shrinks both services while buys go on (the
/// frontend and the other nodes keep the topology they started with).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_keeps_every_promise_through_membership_changes() {
    scenario_with(raft_cluster(100_000), 18, 24, &MEMBERSHIP_CHANGES, |run| {
        assert_no_broken_promise(run);
        print_availability(run, "through membership changes");
        let buys = &run.report.operations[&load::Operation::Buy];
        assert!(buys.ok > 0, "no buy succeeded:\n{}", summary(run));
    })
    .await;
}

/// A replica that lost its disk catches up through a snapshot of over
/// 10 MB (a catalog of 60,000 books; snapshots every 100 entries, keeping
/// 20 entries behind them, so the log it would need is gone) and serves
/// within 30 s. The wipe waits for the snapshots rather than a time: how
/// fast the log fills depends on the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_heals_a_lost_disk_through_a_large_snapshot() {
    let options = Options {
        extra_books: 60_000,
        snapshots: Some((100, 20)),
        ..options(Replication::Raft, 3, 100_000)
    };
    let cluster = ProcessCluster::start(binary(), options);
    scenario_with(cluster, 16, 24, &LARGE_DISK_LOSS, |run| {
        assert_no_broken_promise(run);
        let installed = run.snapshots.get("catalog-1").copied().unwrap_or(0);
        let mb = |bytes: u64| bytes as f64 / 1e6;
        println!(
            "catalog-1 installed a snapshot of {:.1} MB; peak memory: catalog-0 {:.1} MB, catalog-1 {:.1} MB, catalog-2 {:.1} MB",
            mb(installed),
            mb(run.peak_rss.get("catalog-0").copied().unwrap_or(0)),
            mb(run.peak_rss.get("catalog-1").copied().unwrap_or(0)),
            mb(run.peak_rss.get("catalog-2").copied().unwrap_or(0)),
        );
        assert!(
            installed > 10_000_000,
            "catalog-1's snapshot is {installed} bytes: the scenario is not what it claims"
        );
        for (name, took) in &run.catch_up {
            assert!(
                *took < Duration::from_secs(30),
                "{name} took {took:?} to serve again after losing its disk"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_keeps_every_promise_through_a_freeze_and_a_crash() {
    scenario(
        raft_cluster(25),
        14,
        &FREEZE_THEN_CRASH,
        assert_kept_every_promise,
    )
    .await;
}

/// Partitions: a catalog replica that can still be reached by the order
/// replicas but not by its peers cannot commit a sale; the majority goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_keeps_every_promise_through_partitions() {
    scenario(
        namespaced_cluster(Replication::Raft, 3, 25),
        14,
        &RAFT_PARTITIONS,
        assert_kept_every_promise,
    )
    .await;
}

/// The weak protocol, caught by a partition: each catalog replica, unable
/// to reach the other, takes the writes itself, and both sell the same
/// copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_is_caught_by_a_partition() {
    scenario(
        namespaced_cluster(Replication::Broadcast, 2, 25),
        12,
        &BROADCAST_PARTITION,
        |run| assert_caught(run, "a partition"),
    )
    .await;
}

/// Fresh reads across a cut: a frontend that the catalog replicas cannot
/// reach (nor it them) misses the invalidation of a change, which is
/// acknowledged all the same; a lookup through that frontend afterwards
/// must not answer the old count from its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_cut_off_from_the_catalog_serves_no_stale_lookup() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = namespaced_cluster(Replication::Raft, 3, 100).await;
    let store = cluster.store();
    let book = pygmy_core::types::ItemId(3);
    for _ in 0..2 {
        // The second is served from the frontend's cache.
        assert_eq!(store.lookup(book).await.expect("lookup").count, 100);
    }
    let catalogs = cluster.names(Role::Catalog);
    for catalog in &catalogs {
        cluster.cut("frontend", catalog);
    }
    let options = cluster.options();
    let catalog =
        pygmy_client::CatalogClient::new(&cluster.url("catalog-0"), &options).expect("client");
    let update = pygmy_core::api::public::ItemUpdate {
        count: Some(-40),
        cost: None,
    };
    let started = Instant::now();
    assert_eq!(
        catalog.update(book, &update).await.expect("update").count,
        60
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the update took {took:?}");
    match store.lookup(book).await {
        Ok(found) => assert_eq!(
            found.count, 60,
            "a stale lookup after an acknowledged update"
        ),
        Err(err) => println!("the cut-off frontend answered: {err}"),
    }
    for catalog in &catalogs {
        cluster.heal("frontend", catalog);
    }
    let mut last = None;
    for _ in 0..50 {
        last = store.lookup(book).await.ok().map(|b| b.count);
        if last == Some(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last,
        Some(60),
        "the healed frontend does not serve the update"
    );
}

/// The weak protocol, caught. The first catalog replica freezes almost at
/// once, with nearly all the stock; the second one, after waiting for it in
/// vain, sells in its place. Then the first one thaws just as the second
/// crashes, so it never hears of those sales, and sells its stale stock
/// again. (With a consensus backend the writes stop instead: no majority
/// is left.) The stock is one the first 200 ms of buys cannot sell out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_is_caught_when_its_first_replica_freezes() {
    scenario(broadcast_cluster(100), 14, &FREEZE_THEN_CRASH, |run| {
        assert_caught(run, "a freeze and a crash")
    })
    .await;
}

/// Crashes and restarts of a catalog and an order replica while buys run.
/// `broadcast` holds here (ops are deduplicated by id, a restarted replica
/// catches up and takes the writes back before it serves), all but rarely:
/// a kill between an apply and its shipment, or a hand-over longer than
/// 250 ms, lets two replicas write at once (ARCHITECTURE.md, "What
/// broadcast does not guarantee"). A test that fails by chance has no
/// place in the default suite: this one is a soak, run many times by
/// `.ci/soak.sh`, which counts its failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak: fails rarely by design; run by .ci/soak.sh"]
async fn broadcast_survives_crashes_and_restarts() {
    scenario(
        broadcast_cluster(60),
        12,
        &CRASHES,
        assert_kept_every_promise,
    )
    .await;
}

/// A frozen catalog replica (its sockets open, nothing answered) is found
/// out by the frontend's health probe within a second: reads that start
/// afterwards go to the other replica at once instead of waiting it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_avoid_a_frozen_replica_within_a_second() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = broadcast_cluster(100).await;
    let store = cluster.store();
    cluster.freeze("catalog-0");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // Each lookup is of a book never read before: not in the cache, so each
    // goes to a catalog replica.
    for id in 1..=7 {
        let started = Instant::now();
        store
            .lookup(pygmy_core::types::ItemId(id))
            .await
            .expect("lookup");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "lookup {id} took {:?}",
            started.elapsed()
        );
    }
    cluster.thaw("catalog-0");
}

/// Fresh reads across a frozen frontend: the catalog's invalidation push
/// times out while the frontend is frozen, and the catalog answers the
/// change once the frontend's cache lease has surely run out. Lookups sent
/// while the frontend is frozen wait in its sockets beside the
/// invalidation; once it thaws, each of them, and one sent right after,
/// shows the change: none is served from the cache before the
/// invalidation is applied or the lease renewed. (Seen failing with a
/// lease that never runs out: lookups taken before the invalidation
/// answered the old count.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_frontend_serves_no_stale_lookup_once_thawed() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = broadcast_cluster(100).await;
    let store = cluster.store();
    let book = pygmy_core::types::ItemId(3);
    // Sixteen connections open (and kept) to the frontend, as the
    // invalidation's is: once it thaws, none is read first by rule.
    let warm: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.lookup(book).await })
        })
        .collect();
    for lookup in warm {
        assert_eq!(lookup.await.expect("task").expect("lookup").count, 100);
    }
    cluster.freeze("frontend");
    let options = cluster.options();
    let catalog =
        pygmy_client::CatalogClient::new(&cluster.url("catalog-0"), &options).expect("client");
    let update = pygmy_core::api::public::ItemUpdate {
        count: Some(-40),
        cost: None,
    };
    assert_eq!(
        catalog.update(book, &update).await.expect("update").count,
        60
    );
    let waiting: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.lookup(book).await })
        })
        .collect();
    // The lookups reach the frontend's sockets before it thaws.
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.thaw("frontend");
    let at_once = store.lookup(book).await.expect("a lookup at once");
    let mut counts = vec![at_once.count];
    for lookup in waiting {
        counts.push(lookup.await.expect("the task").expect("a lookup").count);
    }
    assert!(
        counts.iter().all(|&count| count == 60),
        "stale cached lookups: {counts:?}"
    );
}

/// Fresh reads from a follower that fell behind: a catalog follower frozen
/// while a change is acknowledged without it serves, once thawed, no read
/// that misses the change, neither `GET /item/<id>` nor a frontend's
/// gathered `POST /lookups`: each waits for a read index from the leader
/// and for its log to be applied up to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_thawed_behind_serves_no_stale_read() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = raft_cluster(100).await;
    let options = cluster.options();
    let catalog = |name: &str| CatalogClient::new(&cluster.url(name), &options).expect("client");
    let leader = leader_of(&cluster, Role::Catalog).await;
    let names = cluster.names(Role::Catalog);
    let follower = names.iter().find(|&n| *n != leader).expect("a follower");
    let book = ItemId(3);
    cluster.freeze(follower);
    let update = pygmy_core::api::public::ItemUpdate {
        count: Some(-40),
        cost: None,
    };
    let changed = catalog(&leader).update(book, &update).await;
    cluster.thaw(follower);
    assert_eq!(changed.expect("the update").count, 60);
    let behind = catalog(follower);
    let lookups = LookupsRequest { items: vec![book] };
    // Thawed, the follower may stand for election and answer 503 until it
    // knows a leader again: an answer may wait, never be stale.
    let unavailable = |e: &ClientError| matches!(e, ClientError::Unavailable(_));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (one, many) = tokio::join!(behind.item(book), behind.item_many(&lookups));
        if let Ok(one) = &one {
            assert_eq!(one.count, 60, "a stale GET /item");
        }
        if let Ok(many) = &many {
            assert!(
                matches!(&many[..], [Ok(b)] if b.count == 60),
                "a stale POST /lookups: {many:?}"
            );
        }
        let waits = one.as_ref().err().is_none_or(unavailable)
            && many.as_ref().err().is_none_or(unavailable);
        match (one, many) {
            (Ok(_), Ok(_)) => break,
            (one, many) if !waits || Instant::now() > deadline => {
                panic!("no fresh answer: {one:?}, {many:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A change whose caller goes away mid-write still invalidates the
/// frontends: `PUT /item` sent to the catalog leader with a 200 ms client
/// time limit while both followers are frozen (it cannot commit before
/// they thaw, a second later). Once the replicas show the change, the
/// frontend's lookup shows it too, within the time a push takes, not the
/// count it had cached until its 30 s TTL. (Seen failing with the change
/// run in the request's own future: the frontend kept the old count.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_caller_left_still_invalidates_the_frontends() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = raft_cluster(100).await;
    let store = cluster.store();
    let book = ItemId(3);
    assert_eq!(store.lookup(book).await.expect("lookup").count, 100);
    let options = cluster.options();
    let catalog = |name: &str| CatalogClient::new(&cluster.url(name), &options).expect("client");
    let leader = leader_of(&cluster, Role::Catalog).await;
    let followers: Vec<String> = cluster
        .names(Role::Catalog)
        .into_iter()
        .filter(|name| *name != leader)
        .collect();
    for follower in &followers {
        cluster.freeze(follower);
    }
    let hasty = ClientOptions {
        timeout: Duration::from_millis(200),
        ..options.clone()
    };
    let hasty = CatalogClient::new(&cluster.url(&leader), &hasty).expect("client");
    let update = pygmy_core::api::public::ItemUpdate {
        count: Some(5),
        cost: None,
    };
    let gave_up = hasty.update(book, &update).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for follower in &followers {
        cluster.thaw(follower);
    }
    assert!(
        gave_up.is_err(),
        "answered with its followers frozen: {gave_up:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(found) = catalog(&leader).item(book).await {
            if found.count == 105 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the change never committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let seen = store.lookup(book).await.expect("lookup").count;
        if seen == 105 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the frontend still shows {seen} once the replicas show 105"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader of `role`'s replicas, as its first replica tells.
async fn leader_of(cluster: &ProcessCluster, role: Role) -> String {
    let first = cluster.names(role).swap_remove(0);
    let health: pygmy_core::api::public::HealthResponse =
        reqwest::get(format!("{}/health", cluster.url(&first)))
            .await
            .expect("health")
            .json()
            .await
            .expect("a health answer");
    health.leader.expect("a leader")
}

/// The catalog replicas' raft terms, by name.
async fn catalog_terms(cluster: &ProcessCluster) -> BTreeMap<String, u64> {
    let options = cluster.options();
    pygmy_client::tools::status::status(cluster.topology(), &options, Duration::from_millis(200))
        .await
        .into_iter()
        .filter(|node| node.role == "catalog")
        .filter_map(|node| Some((node.node, node.raft?.term)))
        .collect()
}

/// Buys through the frontend, 16 at a time, for `seconds`.
async fn buys_for(cluster: &ProcessCluster, seconds: u64) -> load::OperationReport {
    let config = LoadConfig {
        requests: None,
        duration: Some(Duration::from_secs(seconds)),
        concurrency: 16,
        mix: "buy=100".parse().expect("mix"),
        ..LoadConfig::default()
    };
    let report = load::run(&cluster.store(), &config).await;
    println!("{report}");
    report.operations[&load::Operation::Buy].clone()
}

/// Anonymous clients that hold the budget of public request bodies with
/// slow bodies (1,200 connections to the catalog leader, each a public
/// request that announces a 64 KiB body and sends a byte a second) never
/// make its peers wait: raft's appends and votes, the sales and the
/// pushes take their room from a budget of their own. Buys through the
/// frontend go on at their rate (at least half the rate just before) and
/// p99 (at most twice), none fails, and no catalog replica starts an
/// election. (Seen failing with one budget for both: buys failed and
/// their rate fell.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_anonymous_clients_do_not_starve_the_peers() {
    use tokio::io::AsyncWriteExt;

    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = raft_cluster(1_000_000).await;
    let leader = leader_of(&cluster, Role::Catalog).await;
    let addr = cluster
        .topology()
        .node(&leader)
        .expect("the leader's node")
        .addr;
    let before = buys_for(&cluster, 4).await;
    let terms = catalog_terms(&cluster).await;
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut trickles = tokio::task::JoinSet::new();
    for _ in 0..1_200 {
        let stop = std::sync::Arc::clone(&stop);
        trickles.spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            let head = "GET /item/1 HTTP/1.1\r\nhost: pygmy\r\ncontent-length: 65536\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = stop.notified() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if stream.write_all(b"x").await.is_err() {
                    return;
                }
            }
        });
    }
    // The bodies are announced; their room is taken.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = buys_for(&cluster, 6).await;
    stop.notify_waiters();
    trickles.shutdown().await;
    let terms_after = catalog_terms(&cluster).await;
    assert_eq!(
        during.ok, during.count,
        "buys failed under slow anonymous clients: {:?}",
        during.errors
    );
    assert!(
        during.throughput >= before.throughput / 2.0,
        "buys fell from {:.0}/s to {:.0}/s",
        before.throughput,
        during.throughput
    );
    assert!(
        during.latency_ms.p99 <= 2.0 * before.latency_ms.p99.max(10.0),
        "buy p99 rose from {:.1} ms to {:.1} ms",
        before.latency_ms.p99,
        during.latency_ms.p99
    );
    assert_eq!(terms_after, terms, "a catalog replica stood for election");
}

/// A frozen catalog replica is found out by each order replica's health
/// probe too: an order replica whose preferred catalog replica is frozen
/// sells through another one, every time, not once in a while. Buys go
/// straight to `order-0` (which prefers `catalog-0`) from a second after
/// the freeze (the bound ARCHITECTURE.md gives) and once the other catalog
/// replicas name a leader, spread over several probe rounds, so a gap
/// between two probes' verdicts would show. (Seen failing with the probe's
/// ejection left out: buys waited on the frozen replica for an attempt.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buys_avoid_a_frozen_preferred_catalog_replica() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = raft_cluster(100).await;
    let order = pygmy_client::OrderClient::new(&cluster.url("order-0"), &ClientOptions::default())
        .expect("client");
    let frozen = Instant::now();
    cluster.freeze("catalog-0");
    // Should catalog-0 have led, the others elect another leader first.
    let options = cluster.options();
    let others: Vec<CatalogClient> = ["catalog-1", "catalog-2"]
        .iter()
        .map(|name| CatalogClient::new(&cluster.url(name), &options).expect("client"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut named = Vec::new();
        for other in &others {
            if let Ok(health) = other.health().await {
                named.push(health.leader);
            }
        }
        if named
            .iter()
            .any(|l| l.as_deref().is_some_and(|l| l != "catalog-0"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no leader but the frozen one: {named:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep_until((frozen + Duration::from_secs(1)).into()).await;
    let mut slow = Vec::new();
    for i in 0..12 {
        let key = pygmy_core::types::IdempotencyKey::parse(&format!("frozen-preferred-{i}"))
            .expect("key");
        let started = Instant::now();
        let bought = order.buy(pygmy_core::types::ItemId(3), &key).await;
        let took = started.elapsed();
        if bought.is_err() || took > Duration::from_millis(1_000) {
            slow.push(format!("buy {i}: {bought:?} in {took:?}"));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    cluster.thaw("catalog-0");
    assert!(
        slow.is_empty(),
        "buys that waited on the frozen replica:\n{}",
        slow.join("\n")
    );
}

/// The orders of order replica `name`, by id.
async fn ledger_of(cluster: &ProcessCluster, name: &str) -> Vec<pygmy_core::types::OrderId> {
    let order =
        pygmy_client::OrderClient::new(&cluster.url(name), &cluster.options()).expect("client");
    let mut ids: Vec<_> = order
        .ledger()
        .await
        .expect("ledger")
        .iter()
        .map(|o| o.id)
        .collect();
    ids.sort();
    ids
}

/// An order service that lost two disks of three for good is recovered
/// from the survivor by one command: it becomes the only voter of a new
/// cluster with every order it held, serves buys again, and the wiped
/// replicas, started on empty directories, join it with every order.
/// (Seen failing without the membership entry the command appends: the
/// survivor, one voter of three, never served.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_lost_two_disks_of_three_recovers_from_the_survivor() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut cluster = raft_cluster(1_000).await;
    let store = cluster.store();
    let mut sold = Vec::new();
    for n in 0..60 {
        sold.push(store.buy(ItemId(1 + n % 7)).await.expect("buy"));
    }
    sold.sort();
    let names = cluster.names(Role::Order);
    let deadline = Instant::now() + Duration::from_secs(10);
    for name in &names {
        while ledger_of(&cluster, name).await != sold {
            assert!(Instant::now() < deadline, "{name} never had every order");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The survivor: not the founder (raft id 1), not the leader.
    let leader = leader_of(&cluster, Role::Order).await;
    let survivor = names
        .iter()
        .skip(1)
        .find(|name| **name != leader)
        .expect("a follower")
        .clone();
    let lost: Vec<String> = names.iter().filter(|n| **n != survivor).cloned().collect();
    for name in &lost {
        cluster.wipe(name);
    }
    cluster.kill(&survivor);

    // Refused, each with why: a frontend, a replica whose volume is gone.
    let refused = cluster.run_once("frontend", &["--force-new-cluster"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("frontend"), "{why}");
    let refused = cluster.run_once(&lost[0], &["--force-new-cluster"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("no store"), "{why}");

    let forced = cluster.run_once(&survivor, &["--force-new-cluster"]);
    let said = String::from_utf8_lossy(&forced.stdout);
    assert!(
        forced.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(said.contains("only voter"), "{said}");
    for name in &lost {
        assert!(said.contains(name.as_str()), "{name} not dropped: {said}");
    }

    cluster.spawn(&survivor);
    cluster.wait_ready(&survivor, Duration::from_secs(20)).await;
    assert_eq!(ledger_of(&cluster, &survivor).await, sold);
    let more = store
        .buy(ItemId(2))
        .await
        .expect("a buy after the recovery");
    sold.push(more);
    sold.sort();
    for name in &lost {
        cluster.spawn(name);
    }
    for name in &lost {
        cluster.wait_ready(name, Duration::from_secs(30)).await;
    }
    for name in &names {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let held = ledger_of(&cluster, name).await;
            if held == sold {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} holds {} orders of {}",
                held.len(),
                sold.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A catalog replica added at run time reaches every frontend, even one
/// still on the topology file without it: the frontend learns the new
/// member from its lease grants, asks it for grants too, and so takes its
/// invalidations. A change made through the new replica is never hidden
/// behind the frontend's cache. (Seen failing with frontends that knew
/// only their file: the new replica stopped pushing to them a lease's
/// time after its first change, and the frontend served the old count.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_replica_added_at_run_time_reaches_every_frontend() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut cluster = raft_cluster(100).await;
    let store = cluster.store();
    let book = ItemId(3);

    cluster.add_replica(Role::Catalog, "catalog-3");
    let wait = Duration::from_secs(30);
    let (members, serves) = admin(&cluster, Role::Catalog)
        .add("catalog-3", &cluster.url("catalog-3"), wait)
        .await
        .expect("adding catalog-3");
    assert!(serves, "catalog-3 does not serve:\n{}", Table(&members));
    let options = cluster.options();
    let added = CatalogClient::new(&cluster.url("catalog-3"), &options).expect("client");
    let update = pygmy_core::api::public::ItemUpdate {
        count: Some(5),
        cost: None,
    };
    // A first change through it, then past the pushes a replica sends to
    // every frontend for a lease's time after it joined, asked for a
    // lease or not.
    added.update(ItemId(4), &update).await.expect("update");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The frontend caches the book (with a lease from every member).
    let http = reqwest::Client::new();
    let frontend = cluster.url("frontend");
    let leased = || async {
        let text = http
            .get(format!("{frontend}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .any(|line| line.starts_with("pygmy_cache_leased") && line.ends_with(" 1"))
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !leased().await {
        assert!(Instant::now() < deadline, "the frontend holds no lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.lookup(book).await.expect("lookup").count, 100);
    assert_eq!(store.lookup(book).await.expect("lookup").count, 100);

    added.update(book, &update).await.expect("update");
    assert_eq!(
        store.lookup(book).await.expect("lookup").count,
        105,
        "the frontend shows the count from before a change that was answered"
    );
}

/// A whole store backed up while it sells, lost (every backend replica's
/// volume), and restored from its backups: `pygmy-client backup` of the
/// order service and then of the catalog under a load of buys, every
/// backend replica wiped, `pygmy-server --restore` into one replica of
/// each service, the others started empty. Every buy acknowledged before
/// the backups began is there on every replica, stock and orders are
/// conserved (the reconciler records the orders of the sales the older
/// order backup lacks), the replicas agree, and the store sells again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_lost_whole_is_restored_from_backups_taken_under_load() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut cluster = raft_cluster(1_000).await;
    let replicas = replica_urls(&cluster)
        .clients(&cluster.options())
        .expect("clients");
    let before = replicas.collect().await.expect("state before");
    let store = cluster.store();
    let mut acked = Vec::new();
    for n in 0..100 {
        let item = ItemId(1 + n % 7);
        let order = store.buy(item).await.expect("a buy");
        acked.push(pygmy_client::tools::check::AckedBuy { item, order });
    }

    // Buys go on while both backups are taken, seconds apart (as an
    // operator takes them): the reconciler's progress, kept with the
    // sales, passes the sales made between the two, whose orders the
    // order backup lacks.
    let selling = tokio::spawn(buys_for_with(store.clone(), 7));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut taken = Vec::new();
    for (role, file) in [
        (Role::Order, "orders.backup"),
        (Role::Catalog, "catalog.backup"),
    ] {
        if role == Role::Catalog {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let path = dir.path().join(file);
        let backup = pygmy_client::tools::backup::backup(
            cluster.topology(),
            (role, 0),
            &cluster.options(),
            &path,
        )
        .await
        .expect("a backup under load");
        assert!(backup.last_log_index > 0, "{backup:?}");
        taken.push(backup);
    }
    let during = selling.await.expect("the load");
    assert!(during > 0, "no buy was acknowledged during the backups");

    for role in [Role::Catalog, Role::Order] {
        for name in cluster.names(role) {
            cluster.wipe(&name);
        }
    }
    // A backup goes into an empty data directory only.
    let order_backup = taken[0].path.to_str().expect("utf-8 path").to_owned();
    let catalog_backup = taken[1].path.to_str().expect("utf-8 path").to_owned();
    let wrong = cluster.run_once("catalog-0", &["--restore", &order_backup]);
    assert!(!wrong.status.success());
    let why = String::from_utf8_lossy(&wrong.stderr);
    assert!(why.contains("order service"), "{why}");
    for (name, backup) in [("catalog-0", &catalog_backup), ("order-0", &order_backup)] {
        let restored = cluster.run_once(name, &["--restore", backup]);
        let said = String::from_utf8_lossy(&restored.stdout);
        assert!(
            restored.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&restored.stderr)
        );
        assert!(said.contains("only voter"), "{said}");
        let again = cluster.run_once(name, &["--restore", backup]);
        assert!(!again.status.success(), "restored twice into one store");
    }
    for role in [Role::Catalog, Role::Order] {
        for name in cluster.names(role) {
            cluster.spawn(&name);
        }
    }
    for role in [Role::Catalog, Role::Order] {
        for name in cluster.names(role) {
            cluster.wait_ready(&name, Duration::from_secs(60)).await;
        }
    }
    cluster
        .wait_ready("frontend", Duration::from_secs(10))
        .await;

    let expected = Expected::baseline(&before);
    let mut violations = Vec::new();
    // The reconciler's grace period (5 s) and its rounds.
    for _ in 0..150 {
        let after = replicas.collect().await.expect("state after");
        violations = check(&expected, &after, &acked);
        if violations.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(violations.is_empty(), "{violations:#?}");
    let more = store.buy(ItemId(3)).await.expect("a buy after the restore");
    acked.push(pygmy_client::tools::check::AckedBuy {
        item: ItemId(3),
        order: more,
    });
    let after = replicas.collect().await.expect("state after");
    let violations = check(&expected, &after, &acked);
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Buys through `store`, 4 at a time, for `seconds`: how many were
/// acknowledged.
async fn buys_for_with(store: pygmy_client::Client, seconds: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let buyers = (0..4).map(|buyer| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut acked = 0;
            let mut n = buyer;
            while Instant::now() < deadline {
                if store.buy(ItemId(1 + n % 7)).await.is_ok() {
                    acked += 1;
                }
                n += 4;
            }
            acked
        })
    });
    let mut acked = 0;
    for buyer in buyers.collect::<Vec<_>>() {
        acked += buyer.await.unwrap_or(0);
    }
    acked
}
