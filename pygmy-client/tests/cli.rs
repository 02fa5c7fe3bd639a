//! Smoke tests of the `pygmy-client` binary against a real store.

use std::process::Output;

use pygmy_server::testing::{Options, TestCluster};
use tokio::process::Command;

async fn cli(frontend: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pygmy-client"))
        .arg("--frontend")
        .arg(frontend)
        .args(args)
        .output()
        .await
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_search_buy_and_load_from_the_command_line() {
    let test = TestCluster::start(Options::default()).await;
    let frontend = test.url("frontend");

    let out = cli(&frontend, &["lookup", "3"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Xen and the Art of Surviving Graduate School."));

    let out = cli(&frontend, &["--json", "search", "distributed systems"]).await;
    assert!(out.status.success());
    let books: Vec<pygmy_core::types::Book> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(books.len(), 3);

    let out = cli(&frontend, &["buy", "2", "--key", "cli-test-1"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = cli(&frontend, &["buy", "2", "--key", "cli-test-1"]).await;
    assert_eq!(
        text(&out.stdout),
        text(&again.stdout),
        "the same key, the same order"
    );

    let out = cli(&frontend, &["lookup", "99"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("pygmy-client: not found"),
        "{}",
        text(&out.stderr)
    );

    let report = test.dir.path().join("report.json");
    let report_arg = report.to_str().expect("utf-8 path");
    let out = cli(
        &frontend,
        &[
            "load",
            "--requests",
            "200",
            "--concurrency",
            "4",
            "--report",
            report_arg,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("200 requests"),
        "{}",
        text(&out.stdout)
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written"))
            .expect("json");
    assert_eq!(saved["requests"], 200);
    test.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_store_is_one_clear_line_and_a_failure() {
    // Port 9 (discard) on loopback: nothing listens there in a test sandbox.
    let out = cli("http://127.0.0.1:9", &["--wait", "300ms", "lookup", "1"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(
            "pygmy-client: the store at http://127.0.0.1:9/ is not ready after 300ms: \
             cannot reach http://127.0.0.1:9/ready"
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    // With no wait, the request itself fails.
    let out = cli("http://127.0.0.1:9", &["--wait", "0s", "lookup", "1"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("pygmy-client: cannot reach http://127.0.0.1:9/lookup?id=1"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    let out = cli(
        "http://127.0.0.1:9",
        &["--wait", "300ms", "load", "--requests", "5"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not ready after 300ms"));
    let out = cli("not a url", &["lookup", "1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid URL"));
}

/// `pygmy-client members` against a raft store: the membership at a
/// glance, as text and JSON; a change the service cannot make is one clear
/// line and a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_lists_a_raft_service_and_refuses_impossible_changes() {
    let test = TestCluster::start(Options::raft()).await;
    let frontend = test.url("frontend");
    let file = test.dir.path().join("cluster.toml");
    std::fs::write(&file, test.topology().to_toml()).expect("topology written");
    let file = file.to_str().expect("utf-8 path");
    let members = |args: &[&str]| {
        let mut all = vec!["members", "--service", "catalog", "--topology", file];
        all.extend_from_slice(args);
        all.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| {
        let frontend = frontend.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&frontend, &args).await
        }
    };

    let out = run(members(&["list"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("leader catalog-"), "{table}");
    for name in ["catalog-0", "catalog-1", "catalog-2"] {
        assert!(table.contains(name), "{table}");
    }

    let mut json = members(&["list"]);
    json.insert(0, "--json".to_owned());
    let out = run(json).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: pygmy_core::replication::Members =
        serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed.members.len(), 3);
    assert!(listed.members.iter().all(|m| listed.has_voter(&m.name)));

    let out = run(members(&["remove", "catalog-9"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("catalog-9 is not a member"),
        "{}",
        text(&out.stderr)
    );
    let out = run(members(&["add", "catalog 9", "http://127.0.0.1:1"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad request"),
        "{}",
        text(&out.stderr)
    );

    // The broadcast backend's replicas are its topology's: refused.
    test.shutdown().await;
    let weak = TestCluster::start(Options::default()).await;
    let file = weak.dir.path().join("cluster.toml");
    std::fs::write(&file, weak.topology().to_toml()).expect("topology written");
    let args = [
        "members",
        "--service",
        "order",
        "--topology",
        file.to_str().expect("utf-8 path"),
        "list",
    ];
    let out = cli(&weak.url("frontend"), &args).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("replicas are those of its topology"),
        "{}",
        text(&out.stderr)
    );
    weak.shutdown().await;
}

/// A store started a moment ago answers 503 for about a second while its
/// replicas found their raft groups: a checked load started at once, as a
/// script would start it, waits for the frontend's `/ready` and passes.
/// With `--wait 0s` it starts while nothing is ready, and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_load_started_with_the_store_waits_for_it_and_passes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let topology = pygmy_server::testing::topology(&Options::raft(), dir.path());
    let cluster = pygmy_server::Cluster::start(topology)
        .await
        .expect("the store starts");
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, cluster.topology().to_toml()).expect("topology written");
    let frontend = cluster.url("frontend").expect("a frontend");

    let out = cli(
        &frontend,
        &[
            "load",
            "--requests",
            "1000",
            "--check",
            "--topology",
            file.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("check: ok"), "{stdout}");
    assert!(stdout.contains("1000 requests"), "{stdout}");
    cluster.shutdown().await.expect("the store stops");
}
