//! `pygmy-client status` against a real raft cluster.

use std::time::Duration;

use pygmy_client::tools::status::{status, StatusTable};
use pygmy_server::testing::{Options, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_node_and_tells_which_is_down() {
    let mut test = TestCluster::start(Options::raft()).await;
    let store = test.store();
    store.buy(pygmy_core::ItemId(1)).await.expect("buy");
    store.lookup(pygmy_core::ItemId(1)).await.expect("lookup");
    store.lookup(pygmy_core::ItemId(1)).await.expect("lookup");

    let rows = status(test.topology(), &test.options(), Duration::from_millis(300)).await;
    let table = StatusTable(&rows).to_string();
    assert_eq!(rows.len(), 7, "{table}");
    assert!(
        rows.iter().all(|r| r.health == "ok" && r.error.is_none()),
        "{table}"
    );
    for role in ["catalog", "order"] {
        let replicas: Vec<_> = rows.iter().filter(|r| r.role == role).collect();
        let leaders: Vec<_> = replicas
            .iter()
            .filter_map(|r| r.raft.as_ref())
            .filter(|raft| raft.state == "leader")
            .collect();
        assert_eq!(leaders.len(), 1, "one {role} leader:\n{table}");
        let terms: Vec<u64> = replicas
            .iter()
            .filter_map(|r| r.raft.as_ref())
            .map(|r| r.term)
            .collect();
        assert_eq!(terms.len(), 3, "{table}");
    }
    let frontend = rows
        .iter()
        .find(|r| r.role == "frontend")
        .expect("frontend row");
    assert!(frontend.raft.is_none(), "{table}");
    assert!(frontend.cache_hit_rate.is_some_and(|r| r > 0.0), "{table}");
    assert!(frontend.requests_per_s.is_some(), "{table}");

    test.cluster.stop_node("order-2").await.expect("stop");
    let rows = status(test.topology(), &test.options(), Duration::from_millis(100)).await;
    let down = rows.iter().find(|r| r.node == "order-2").expect("row");
    assert_eq!(down.health, "unreachable");
    assert!(
        down.error.as_deref().is_some_and(|e| e.contains("connect")),
        "{down:?}"
    );
    assert!(StatusTable(&rows)
        .to_string()
        .contains("order-2: cannot connect"));
    test.shutdown().await;
}
