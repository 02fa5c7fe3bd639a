//! What an operator relies on: a cluster token by default, caps on
//! connections and on bodies in flight, paged public orders without keys,
//! `/metrics` with latency histograms and raft state (checked by promtool
//! where it is installed; `.ci/run` installs it and requires it), and
//! `pygmy-client status`.

use std::time::Duration;

use pygmy_core::topology::Role;
use pygmy_core::types::OrderId;
use pygmy_server::testing::{Options, TestCluster};
use pygmy_server::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn no_token() -> Options {
    Options {
        token: None,
        ..Options::default()
    }
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.expect("send").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_a_token_generates_one_that_every_internal_endpoint_demands() {
    let test = TestCluster::start(no_token()).await;
    let token = test.topology().token.clone().expect("a generated token");
    assert_eq!(token.len(), 64, "{token}");
    let kept = std::fs::read_to_string(test.dir.path().join("data").join("cluster.token"))
        .expect("the token is kept with the data");
    assert_eq!(kept.trim(), token);

    let http = reqwest::Client::new();
    let (catalog, order, frontend) = (
        test.url("catalog-0"),
        test.url("order-0"),
        test.url("frontend"),
    );
    let internal = [
        http.put(format!("{catalog}/item/1"))
            .body(r#"{"count": 1}"#),
        http.post(format!("{catalog}/item/1/sell")),
        http.get(format!("{catalog}/sales")),
        http.get(format!("{catalog}/lease?frontend=frontend")),
        http.post(format!("{catalog}/replication/ship")).body("[]"),
        http.put(format!("{catalog}/item/propagate/1")).body("[]"),
        http.get(format!("{catalog}/members")),
        http.get(format!("{order}/ledger")),
        http.put(format!("{order}/update")).body("[]"),
        http.post(format!("{order}/replication/ship")).body("[]"),
        http.delete(format!("{order}/members/order-9")),
        http.post(format!("{frontend}/invalidate")).body("[]"),
    ];
    for request in internal {
        let probe = request.try_clone().expect("clone").build().expect("build");
        let what = format!("{} {}", probe.method(), probe.url().path());
        assert_eq!(
            status_of(request.try_clone().expect("clone")).await,
            401,
            "{what}"
        );
        let wrong = request
            .try_clone()
            .expect("clone")
            .header("x-pygmy-token", "guess");
        assert_eq!(status_of(wrong).await, 401, "{what} with a wrong token");
        let right = request.header("x-pygmy-token", &token);
        assert_ne!(status_of(right).await, 401, "{what} with the token");
    }
    // The public endpoints need none.
    assert_eq!(
        status_of(http.get(format!("{frontend}/lookup?id=1"))).await,
        200
    );
    assert_eq!(status_of(http.get(format!("{order}/orders"))).await, 200);
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_orders_come_in_pages_without_keys() {
    let test = TestCluster::start(Options::default()).await;
    let store = test.store();
    for _ in 0..5 {
        store.buy(pygmy_core::ItemId(1)).await.expect("buy");
    }
    let order = test.url("order-0");
    let http = reqwest::Client::new();
    let page = |after: i64| {
        let http = http.clone();
        let url = format!("{order}/orders?after={after}&limit=2");
        async move {
            let text = http.get(url).send().await.expect("send").text().await;
            serde_json::from_str::<serde_json::Value>(&text.expect("text")).expect("json")
        }
    };
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let answer = page(after).await;
        let orders = answer["order"].as_array().expect("orders").clone();
        assert!(orders.len() <= 2, "{answer}");
        for order in &orders {
            assert!(
                order.get("key").is_none(),
                "a public order shows its key: {order}"
            );
            seen.push(order["id"].as_i64().expect("id"));
        }
        match answer["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    // The SDK reads the same pages.
    let sdk = test.order("order-0");
    let first = sdk.orders(OrderId(0), 3).await.expect("a page");
    assert_eq!((first.order.len(), first.next_after), (3, Some(OrderId(3))));
    let last = sdk.orders(OrderId(3), 3).await.expect("a page");
    assert_eq!((last.order.len(), last.next_after), (2, None));
    for bad in ["limit=0", "limit=1001", "after=-1", "limit=x"] {
        let status = status_of(http.get(format!("{order}/orders?{bad}"))).await;
        assert_eq!(status, 400, "{bad}");
    }
    // The operator's listing has every order with its key.
    let ledger = test.order("order-0").ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 5);
    test.shutdown().await;
}

/// A test cluster (the default options) whose topology `tweak` changed
/// first; the directory holds its data and must outlive it.
async fn start_tweaked(
    tweak: impl FnOnce(&mut pygmy_core::topology::Topology),
) -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut topology = pygmy_server::testing::topology(&Options::default(), dir.path());
    tweak(&mut topology);
    let cluster = Cluster::start(topology).await.expect("start");
    (dir, cluster)
}

/// Reads an HTTP answer's status line, if one comes within `wait`.
async fn answered(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    let mut buf = vec![0u8; 256];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        _ => None,
    }
}

/// Past both caps (here no peer slots), a connection waits in the
/// kernel's backlog until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    let (_dir, cluster) = start_tweaked(|t| {
        t.max_connections = 2;
        t.peer_connections = 0;
    })
    .await;
    // The frontend: no other node connects to it while nothing is sold.
    let addr = cluster.topology().node("frontend").expect("node").addr;
    let connect = || tokio::net::TcpStream::connect(addr);
    let health = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

    let mut first = connect().await.expect("connect");
    let mut second = connect().await.expect("connect");
    for stream in [&mut first, &mut second] {
        stream.write_all(health).await.expect("write");
        let line = answered(stream, Duration::from_secs(5)).await;
        assert!(line.is_some_and(|l| l.contains("200")), "within the cap");
    }
    let mut third = connect().await.expect("the kernel's backlog takes it");
    third.write_all(health).await.expect("write");
    assert_eq!(
        answered(&mut third, Duration::from_millis(500)).await,
        None,
        "a third connection past a cap of two is served"
    );
    drop(first);
    let line = answered(&mut third, Duration::from_secs(5)).await;
    assert!(
        line.as_deref().is_some_and(|l| l.contains("200")),
        "served once a connection closed: {line:?}"
    );
    drop((second, third));
    cluster.shutdown().await.expect("shutdown");
}

/// Past `max_connections`, a connection takes one of the slots kept for
/// the cluster token: a request with the token is served on it, one
/// without is answered 503 at once and its connection closed, so anonymous
/// clients that hold every slot of theirs never keep a peer from
/// connecting. Past both caps, a connection waits. (Seen failing with one
/// cap for all: nothing past it was answered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_only_requests_with_the_cluster_token_are_served() {
    let (_dir, cluster) = start_tweaked(|t| {
        t.max_connections = 2;
        t.peer_connections = 1;
    })
    .await;
    let addr = cluster.topology().node("frontend").expect("node").addr;
    let connect = || tokio::net::TcpStream::connect(addr);
    let health = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
    let token = cluster.topology().token.clone().expect("a token");
    let with_token = format!("GET /health HTTP/1.1\r\nhost: x\r\nx-pygmy-token: {token}\r\n\r\n");

    // Anonymous clients hold every slot that is anyone's.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect().await.expect("connect");
        stream.write_all(&health).await.expect("write");
        let line = answered(&mut stream, Duration::from_secs(5)).await;
        assert!(line.is_some_and(|l| l.contains("200")), "within the cap");
        held.push(stream);
    }
    // One more without the token: a peer slot, 503, closed.
    let mut anonymous = connect().await.expect("connect");
    anonymous.write_all(&health).await.expect("write");
    let line = answered(&mut anonymous, Duration::from_secs(2)).await;
    assert!(
        line.as_deref().is_some_and(|l| l.contains("503")),
        "an anonymous request past the cap: {line:?}"
    );
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(2), anonymous.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "its connection is closed");
    // With the token: served, and served again on the same connection.
    let mut peer = connect().await.expect("connect");
    for _ in 0..2 {
        peer.write_all(with_token.as_bytes()).await.expect("write");
        let line = answered(&mut peer, Duration::from_secs(2)).await;
        assert!(
            line.as_deref().is_some_and(|l| l.contains("200")),
            "a request with the token past the cap: {line:?}"
        );
    }
    // Every slot taken: the next connection waits.
    let mut waiting = connect().await.expect("the kernel's backlog takes it");
    waiting
        .write_all(with_token.as_bytes())
        .await
        .expect("write");
    assert_eq!(
        answered(&mut waiting, Duration::from_millis(500)).await,
        None,
        "a connection past both caps is served"
    );
    drop(peer);
    let line = answered(&mut waiting, Duration::from_secs(5)).await;
    assert!(
        line.as_deref().is_some_and(|l| l.contains("200")),
        "served once the peer slot was given back: {line:?}"
    );
    drop((held, waiting));
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gives_its_slot_back_after_the_read_timeout() {
    let (_dir, cluster) = start_tweaked(|t| {
        t.max_connections = 1;
        t.peer_connections = 0;
        t.read_timeout_ms = 500;
    })
    .await;
    let addr = cluster.topology().node("frontend").expect("node").addr;
    let health = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";
    // One request, then the connection kept alive and idle: it holds the
    // only slot.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    idle.write_all(health).await.expect("write");
    let line = answered(&mut idle, Duration::from_secs(5)).await;
    assert!(line.is_some_and(|l| l.contains("200")));
    let mut next = tokio::net::TcpStream::connect(addr).await.expect("connect");
    next.write_all(health).await.expect("write");
    let line = answered(&mut next, Duration::from_secs(5)).await;
    assert!(
        line.as_deref().is_some_and(|l| l.contains("200")),
        "the idle connection was closed after the read timeout: {line:?}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection is closed");
    drop(next);
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_cap_in_flight_are_refused_not_buffered() {
    let (_dir, cluster) = start_tweaked(|t| {
        // The floor of the cap is the largest body (a replication call's 8 MiB).
        t.max_body_in_flight_bytes = 0;
        t.read_timeout_ms = 600;
    })
    .await;
    let addr = cluster.topology().node("catalog-0").expect("node").addr;
    let token = pygmy_server::testing::TOKEN;
    let five_mib = 5 * 1024 * 1024;
    let head = format!(
        "POST /replication/ship HTTP/1.1\r\nhost: x\r\nx-pygmy-token: {token}\r\n\
         content-length: {five_mib}\r\n\r\n["
    );
    // The first holds 5 MiB of room, its body never coming.
    let mut first = tokio::net::TcpStream::connect(addr).await.expect("connect");
    first.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The second finds 3 MiB: it is answered 503 without its body read.
    let mut second = tokio::net::TcpStream::connect(addr).await.expect("connect");
    second.write_all(head.as_bytes()).await.expect("write");
    let line = answered(&mut second, Duration::from_secs(5)).await;
    assert!(
        line.as_deref().is_some_and(|l| l.contains("503")),
        "a body past the cap in flight: {line:?}"
    );
    let line = answered(&mut first, Duration::from_secs(5)).await;
    assert!(
        line.as_deref().is_some_and(|l| l.contains("408")),
        "{line:?}"
    );
    // The room is given back: a small request goes through.
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/item/1");
    assert_eq!(status_of(http.get(url)).await, 200);
    cluster.shutdown().await.expect("shutdown");
}

/// `promtool check metrics` on `text`, where promtool is installed
/// (`PROMTOOL`, or on the PATH); required when `PYGMY_REQUIRE_PROMTOOL`
/// is set, as `.ci/run` does.
fn promtool_check(node: &str, text: &str) {
    use std::io::Write;
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            assert!(
                std::env::var_os("PYGMY_REQUIRE_PROMTOOL").is_none(),
                "promtool is required and cannot run ({promtool}): {err}"
            );
            eprintln!("promtool not found ({err}): the metrics of {node} are not linted");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics on {node}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_latency_by_route_and_the_raft_state_of_each_replica() {
    let test = TestCluster::start(Options::raft()).await;
    let store = test.store();
    for _ in 0..3 {
        store.buy(pygmy_core::ItemId(2)).await.expect("buy");
        store.lookup(pygmy_core::ItemId(2)).await.expect("lookup");
    }
    let http = reqwest::Client::new();
    let scrape = |name: String| {
        let (http, url) = (http.clone(), test.url(&name));
        async move {
            let text = http
                .get(format!("{url}/metrics"))
                .send()
                .await
                .expect("scrape")
                .text()
                .await
                .expect("text");
            promtool_check(&name, &text);
            text
        }
    };
    let frontend = scrape("frontend".to_owned()).await;
    for route in ["GET /buy", "GET /lookup"] {
        let count =
            format!("pygmy_request_duration_seconds_count{{node=\"frontend\",route=\"{route}\"}} ");
        let line = frontend.lines().find(|l| l.starts_with(&count));
        let n: u64 = line
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {count} in\n{frontend}"));
        assert!(n >= 3, "{route}: {n}");
    }
    for role in [Role::Catalog, Role::Order] {
        let mut leaders = 0;
        for name in test.names(role) {
            let text = scrape(name.clone()).await;
            let leads = format!("pygmy_raft_state{{node=\"{name}\",state=\"leader\"}} 1");
            if text.contains(&leads) {
                leaders += 1;
                assert_eq!(
                    text.matches("pygmy_raft_follower_lag_entries{").count(),
                    2,
                    "the leader tells each follower's lag:\n{text}"
                );
                assert!(text.contains("pygmy_raft_committed_index{"), "{text}");
            }
            for metric in [
                "pygmy_raft_term{",
                "pygmy_raft_leader{",
                "pygmy_raft_applied_index{",
                "pygmy_raft_last_log_index{",
                "pygmy_store_bytes{",
                "pygmy_request_duration_seconds_bucket{",
            ] {
                assert!(text.contains(metric), "{name} has no {metric}");
            }
        }
        assert_eq!(leaders, 1, "one {role} leader");
    }
    test.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_peer_protocol_refuses_bad_bodies_without_a_crash() {
    let test = TestCluster::start(Options::raft()).await;
    let http = reqwest::Client::new();
    let token = pygmy_server::testing::TOKEN;
    // Every call that takes a body (`raft-hello` and `read-index` take
    // none, and ignore one).
    let rpcs = [
        "propose",
        "raft-append",
        "raft-vote",
        "raft-snapshot",
        "raft-adopt",
        "raft-join",
        "raft-members",
    ];
    let too_big = pygmy_core::replication::MAX_CALL_BYTES + 1;
    for node in ["catalog-0", "order-1"] {
        let url = test.url(node);
        for rpc in rpcs {
            let call = |body: Vec<u8>| {
                http.post(format!("{url}/replication/{rpc}"))
                    .header("x-pygmy-token", token)
                    .body(body)
            };
            for garbage in [&b"not json"[..], b"{}", b"[1,2", b"\xff\xfe"] {
                let status = status_of(call(garbage.to_vec())).await;
                assert_eq!(
                    status,
                    400,
                    "{node} {rpc} {:?}",
                    String::from_utf8_lossy(garbage)
                );
            }
            // Refused from its Content-Length, before a byte of it is read.
            let mut stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
                .await
                .expect("connect");
            let head = format!(
                "POST /replication/{rpc} HTTP/1.1\r\nhost: x\r\nx-pygmy-token: {token}\r\n\
                 content-length: {too_big}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.expect("write");
            let line = answered(&mut stream, Duration::from_secs(5)).await;
            assert!(
                line.as_deref().is_some_and(|l| l.contains("413")),
                "{node} {rpc}: {line:?}"
            );
            let without = http.post(format!("{url}/replication/{rpc}")).body("{}");
            assert_eq!(status_of(without).await, 401, "{node} {rpc}");
        }
    }
    // Every replica still serves.
    test.store()
        .buy(pygmy_core::ItemId(3))
        .await
        .expect("a buy after the bad calls");
    for node in test
        .names(Role::Catalog)
        .into_iter()
        .chain(test.names(Role::Order))
    {
        let health = http.get(format!("{}/health", test.url(&node)));
        assert_eq!(status_of(health).await, 200, "{node}");
    }
    test.shutdown().await;
}

/// Nodes of `topology` started one by one in this process, each stopped
/// when the test is done with it.
struct Started {
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), pygmy_server::node::NodeError>>>,
}

impl Started {
    async fn node(&mut self, topology: &pygmy_core::topology::Topology, name: &str) {
        let addr = topology.node(name).expect("a node of the topology").addr;
        let listener = pygmy_server::node::bind(addr).await.expect("bind");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (topology, name) = (topology.clone(), name.to_owned());
        self.tasks.push(tokio::spawn(async move {
            pygmy_server::node::run_node(&topology, &name, listener, async {
                let _ = stopped.await;
            })
            .await
        }));
        self.stops.push(stop);
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for task in self.tasks {
            task.await
                .expect("the node's task")
                .expect("the node stops");
        }
    }
}

/// `/health` is liveness (200 while the node runs, saying what it does)
/// and `/ready` readiness (200 only once it can serve): a frontend whose
/// backends are not running, and a raft replica with no peer to form a
/// cluster with, are alive and not ready, and say why; once the whole
/// store runs, both are ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_a_node_runs_and_ready_that_it_can_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut topology = pygmy_server::testing::topology(&Options::raft(), dir.path());
    topology.resolve_token(None, true).expect("a token");
    let url = |name: &str| format!("http://{}", topology.node(name).expect("node").addr);
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let answer = http.get(path).send().await.expect("an answer");
            let status = answer.status().as_u16();
            let body: pygmy_core::api::public::HealthResponse =
                answer.json().await.expect("a health body");
            (status, body)
        }
    };

    let mut started = Started {
        stops: Vec::new(),
        tasks: Vec::new(),
    };
    started.node(&topology, "frontend").await;
    started.node(&topology, "catalog-0").await;
    // Past a few probes of the frontend and the founding wait of the
    // replica: neither can get ready alone.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let (status, health) = get(format!("{}/health", url("frontend"))).await;
    assert_eq!((status, health.state.as_str()), (200, "no_backend"));
    let (status, ready) = get(format!("{}/ready", url("frontend"))).await;
    assert_eq!((status, ready.state.as_str()), (503, "no_backend"));
    assert_eq!(
        ready.reason.as_deref(),
        Some("no catalog nor order replica is ready")
    );
    let (status, health) = get(format!("{}/health", url("catalog-0"))).await;
    assert_eq!((status, health.state.as_str()), (200, "catching_up"));
    let (status, ready) = get(format!("{}/ready", url("catalog-0"))).await;
    assert_eq!((status, ready.state.as_str()), (503, "catching_up"));
    assert!(ready.reason.is_some(), "{ready:?}");
    let metrics = http
        .get(format!("{}/metrics", url("frontend")))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("\npygmy_ready{node=\"frontend\"} 0\n"),
        "{metrics}"
    );

    for name in ["catalog-1", "catalog-2", "order-0", "order-1", "order-2"] {
        started.node(&topology, name).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for name in ["frontend", "catalog-0", "order-2"] {
        loop {
            let (status, body) = get(format!("{}/ready", url(name))).await;
            if status == 200 {
                assert_eq!((body.state.as_str(), body.reason), ("ok", None));
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not ready: {body:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (status, health) = get(format!("{}/health", url("frontend"))).await;
    assert_eq!((status, health.state.as_str()), (200, "ok"));
    started.stop().await;
}
