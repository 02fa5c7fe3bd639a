//! A rolling upgrade: a raft store whose every backend replica reads only
//! the older entry format (started with `--max-format 1`, as a build from
//! before group commit would) is upgraded one replica at a time, under
//! load, to a build that reads the newer one. Each replica is stopped as
//! an operator stops it (SIGTERM) and started again over its data.
//!
//! While any replica of a service reads only the older format, its
//! service must write nothing else: every replica keeps applying what its
//! leader commits. Once the last one is upgraded, the leader raises the
//! format. No request fails, and every promise holds (the checker and the
//! history of `pygmy-client`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pygmy_client::tools::check::{Checker, ReplicaUrls};
use pygmy_client::tools::load::{self, LoadConfig};
use pygmy_client::tools::status::{status, NodeStatus};
use pygmy_core::topology::Role;
use pygmy_server::testing::{Options, ProcessCluster};

/// The older format, and the newer one.
const OLDER: u64 = 1;
const NEWER: u64 = 2;

fn binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_pygmy-server"))
}

/// Every backend replica's row of `pygmy-client status`.
async fn replicas(cluster: &ProcessCluster, role: Role) -> Vec<NodeStatus> {
    status(cluster.topology(), &cluster.options(), Duration::ZERO)
        .await
        .into_iter()
        .filter(|row| row.role == role.to_string())
        .collect()
}

/// The format each replica of `role` says its service writes.
async fn formats(cluster: &ProcessCluster, role: Role) -> BTreeMap<String, Option<u64>> {
    replicas(cluster, role)
        .await
        .into_iter()
        .map(|row| (row.node, row.raft.and_then(|r| r.writes_format)))
        .collect()
}

/// The replica of `role` that leads, as a replica that leads says.
async fn leader(cluster: &ProcessCluster, role: Role) -> Option<(String, u64)> {
    replicas(cluster, role).await.into_iter().find_map(|row| {
        let raft = row.raft?;
        (raft.state == "leader").then_some((row.node, raft.applied))
    })
}

/// Waits (at most 10 s) until every replica of `role` has applied what
/// its leader had applied when asked: a replica that refuses the entries
/// it is sent falls behind for good.
async fn every_replica_keeps_up(cluster: &ProcessCluster, role: Role) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let target = loop {
        if let Some((_, applied)) = leader(cluster, role).await {
            break applied;
        }
        assert!(Instant::now() < deadline, "no {role} leader for 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        let rows = replicas(cluster, role).await;
        let behind: Vec<String> = rows
            .iter()
            .filter(|row| row.raft.as_ref().is_none_or(|r| r.applied < target))
            .map(|row| format!("{} ({:?})", row.node, row.raft.as_ref().map(|r| r.applied)))
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{behind:?} did not apply the leader's entry {target} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Upgrades every replica of `role` in turn, the leader first whenever it
/// still runs the older build (so that an upgraded replica leads replicas
/// that are not, the case the rule is for); answers how long each took to
/// serve again.
async fn upgrade(cluster: &mut ProcessCluster, role: Role) -> Vec<(String, Duration)> {
    let mut older = cluster.names(role);
    let mut took = Vec::new();
    while !older.is_empty() {
        let leads = leader(cluster, role).await.map(|(name, _)| name);
        let next = match leads {
            Some(name) if older.contains(&name) => name,
            _ => older[0].clone(),
        };
        older.retain(|name| *name != next);
        let began = Instant::now();
        cluster.stop(&next).await;
        cluster.spawn_with(&next, &["--max-format", &NEWER.to_string()]);
        cluster.wait_ready(&next, Duration::from_secs(30)).await;
        took.push((next.clone(), began.elapsed()));
        every_replica_keeps_up(cluster, role).await;
        if !older.is_empty() {
            let now = formats(cluster, role).await;
            assert!(
                now.values().all(|f| *f == Some(OLDER)),
                "{older:?} read only format {OLDER}, and the {role} service writes {now:?}"
            );
        }
    }
    // The last one upgraded: the leader raises the format within seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = formats(cluster, role).await;
        if now.values().all(|f| *f == Some(NEWER)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every {role} replica reads format {NEWER}, and the service writes {now:?} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_upgraded_one_replica_at_a_time_under_load_fails_no_request() {
    let options = Options {
        stock: Some(100_000),
        max_format: Some(OLDER as u32),
        ..Options::raft()
    };
    let mut cluster = ProcessCluster::start(binary(), options).await;
    for role in [Role::Catalog, Role::Order] {
        let now = formats(&cluster, role).await;
        assert!(
            now.values().all(|f| *f == Some(OLDER)),
            "a {role} service of older builds writes {now:?}"
        );
    }
    let checker = Checker::before(&ReplicaUrls::of(cluster.topology()), &cluster.options())
        .await
        .expect("state before");
    let config = LoadConfig {
        requests: None,
        duration: Some(Duration::from_secs(25)),
        concurrency: 16,
        mix: "lookup=30,search=20,buy=50".parse().expect("mix"),
        history: true,
        ..LoadConfig::default()
    };
    let store = cluster.store();
    let began = Instant::now();
    let load = tokio::spawn(async move { load::run(&store, &config).await });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut took = upgrade(&mut cluster, Role::Catalog).await;
    took.extend(upgrade(&mut cluster, Role::Order).await);
    let upgraded = began.elapsed();
    let report = load.await.expect("load task");
    println!("{report}");
    for (name, took) in &took {
        println!("{name} upgraded, and served again {took:?} after its stop");
    }
    println!("every replica upgraded {upgraded:?} into the load");
    assert!(
        upgraded < Duration::from_secs(23),
        "the upgrade took {upgraded:?}: longer than the load that was to see it"
    );

    for (op, figures) in &report.operations {
        assert!(figures.ok > 0, "no {op} succeeded");
        assert!(
            figures.errors.is_empty(),
            "{op} failed during the upgrade: {:?}",
            figures.errors
        );
    }
    let verdict = checker
        .verdict_within(&report.acked_buys, &report.history, Duration::from_secs(20))
        .await
        .expect("state after");
    assert!(
        verdict.violations.is_empty(),
        "broken promises: {:#?}",
        verdict.violations
    );
    let anomalies = verdict.anomalies;
    assert!(
        anomalies.is_empty(),
        "lookups no linearizable store could answer: {:#?}",
        &anomalies[..anomalies.len().min(10)]
    );
}
