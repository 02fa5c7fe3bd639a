//! The balancer: rotation, and ejected replicas tried last.

use std::time::Duration;

use pygmy_core::balance::{Balancer, Endpoints, HealthPolicy, LeastLoaded, RoundRobin};

fn replicas(n: usize, policy: HealthPolicy) -> Endpoints {
    Endpoints::new(
        (0..n).map(|i| (format!("r{i}"), format!("http://127.0.0.1:{}/", 9000 + i))),
        policy,
    )
}

#[test]
fn round_robin_rotates_the_first_choice() {
    let set = replicas(3, HealthPolicy::default());
    let rr = RoundRobin::default();
    let firsts: Vec<usize> = (0..6).map(|_| rr.plan(&set)[0]).collect();
    assert_eq!(firsts, vec![0, 1, 2, 0, 1, 2]);
    let mut all = rr.plan(&set);
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2]);
    assert_eq!(set.all()[0].url, "http://127.0.0.1:9000");
}

#[test]
fn an_ejected_replica_is_tried_last_until_it_answers() {
    let set = replicas(
        2,
        HealthPolicy {
            failures_to_eject: 2,
            cool_down: Duration::from_secs(60),
            ..HealthPolicy::default()
        },
    );
    let rr = RoundRobin::default();
    set.record_failure(0);
    // One failure is not enough under this policy.
    assert_eq!(rr.plan(&set), vec![0, 1]);
    set.record_failure(0);
    for _ in 0..4 {
        assert_eq!(rr.plan(&set), vec![1, 0]);
    }
    set.record_success(0);
    let firsts: Vec<usize> = (0..2).map(|_| rr.plan(&set)[0]).collect();
    assert_eq!(firsts.len(), 2);
    assert!(firsts.contains(&0) && firsts.contains(&1));
}

/// An ejected replica is tried last for its cool-down, and then takes its
/// turn again (on tokio's paused clock: no real time passes).
#[tokio::test(start_paused = true)]
async fn the_cool_down_ends() {
    let policy = HealthPolicy::default();
    let set = replicas(2, policy);
    set.record_failure(1);
    let rr = RoundRobin::default();
    for _ in 0..4 {
        assert_eq!(rr.plan(&set), vec![0, 1], "ejected: tried last");
    }
    tokio::time::advance(policy.cool_down - Duration::from_millis(1)).await;
    assert_eq!(rr.plan(&set), vec![0, 1], "still cooling down");
    tokio::time::advance(Duration::from_millis(2)).await;
    let firsts: Vec<usize> = (0..2).map(|_| rr.plan(&set)[0]).collect();
    assert!(firsts.contains(&1), "back in the rotation: {firsts:?}");
}

#[test]
fn in_flight_is_counted_while_the_guard_lives() {
    let set = replicas(1, HealthPolicy::default());
    {
        let _a = set.start(0);
        let _b = set.start(0);
        assert_eq!(set.all()[0].in_flight(), 2);
    }
    assert_eq!(set.all()[0].in_flight(), 0);
    assert!(RoundRobin::default()
        .plan(&replicas(0, HealthPolicy::default()))
        .is_empty());
}

#[test]
fn least_loaded_prefers_the_replica_with_fewer_requests_in_flight() {
    let set = replicas(2, HealthPolicy::default());
    let p2c = LeastLoaded::with_seed(7);
    let _busy = [set.start(0), set.start(0), set.start(0)];
    // With two replicas, both are drawn every time: the idle one wins.
    for _ in 0..20 {
        assert_eq!(p2c.plan(&set), vec![1, 0]);
    }
}

#[test]
fn least_loaded_spreads_equal_load_and_tries_ejected_replicas_last() {
    let set = replicas(
        3,
        HealthPolicy {
            failures_to_eject: 1,
            cool_down: Duration::from_secs(60),
            ..HealthPolicy::default()
        },
    );
    let p2c = LeastLoaded::with_seed(11);
    let mut firsts = [0; 3];
    for _ in 0..300 {
        let plan = p2c.plan(&set);
        let mut sorted = plan.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2], "every replica, once");
        firsts[plan[0]] += 1;
    }
    assert!(firsts.iter().all(|&n| n > 50), "{firsts:?}");
    set.record_failure(2);
    for _ in 0..50 {
        assert_eq!(p2c.plan(&set)[2], 2);
    }
}

/// A replica that answers its health probe: `true`; one that is frozen:
/// never.
struct Probed(bool);

#[async_trait::async_trait]
impl pygmy_core::balance::Probe for Probed {
    async fn probe(&self) -> pygmy_core::balance::Probed {
        if !self.0 {
            std::future::pending::<()>().await;
        }
        pygmy_core::balance::Probed::serves()
    }
}

/// The default policy with probes every `every`, each answered within
/// `timeout`.
fn probing(timeout: Duration, every: Duration) -> HealthPolicy {
    HealthPolicy {
        probe_every: every,
        probe_timeout: timeout,
        ..HealthPolicy::default()
    }
}

/// Two replicas, `clients` by name, the first preferred, each attempt
/// limited to `attempt`, probes as `policy` says.
fn preferring_the_first<C>(
    clients: [(&str, C); 2],
    attempt: Duration,
    policy: HealthPolicy,
) -> pygmy_core::balance::ReplicaSet<C> {
    pygmy_core::balance::ReplicaSet::new(
        clients.map(|(name, client)| (name.to_owned(), format!("http://{name}.invalid"), client)),
        Box::new(pygmy_core::balance::Preferred::new(0)),
        policy,
        attempt,
    )
}

/// A failed probe ejects a replica until the next probe can say otherwise,
/// not only for the passive cool-down: with a cool-down shorter than a
/// probe round, requests would reach a frozen replica between two probes.
#[tokio::test(start_paused = true)]
async fn a_failed_probe_ejects_until_the_next_probe_decides() {
    let (timeout, every) = (Duration::from_millis(20), Duration::from_secs(3));
    let policy = probing(timeout, every);
    let set = preferring_the_first(
        [("frozen", Probed(false)), ("fine", Probed(true))],
        Duration::from_secs(1),
        policy,
    );
    assert_eq!(set.plan(), vec![0, 1]);
    set.probe().await;
    assert_eq!(set.plan(), vec![1, 0], "ejected by the probe");
    // Past the passive cool-down, well before the next probe's verdict.
    tokio::time::advance(policy.cool_down + Duration::from_millis(200)).await;
    assert_eq!(set.plan(), vec![1, 0], "still ejected until the next probe");
    // The next probe has had its time to decide: tried in turn again.
    tokio::time::advance(every + 2 * timeout).await;
    assert_eq!(set.plan(), vec![0, 1], "the verdict has run out");
}

#[derive(Debug)]
struct Never;
impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}
impl pygmy_core::balance::ReplicaFailure for Never {
    fn is_replica_failure(&self) -> bool {
        true
    }
}

/// A call that waits on a replica the probe then finds silent moves on to
/// the next replica at once, not at the end of its attempt's time limit.
#[tokio::test(start_paused = true)]
async fn a_probe_that_finds_a_replica_silent_moves_its_waiting_calls_on() {
    let set = std::sync::Arc::new(preferring_the_first(
        [("frozen", Probed(false)), ("fine", Probed(true))],
        Duration::from_secs(30),
        probing(Duration::from_millis(50), Duration::from_secs(3)),
    ));
    let waiting = {
        let set = std::sync::Arc::clone(&set);
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let answer = set
                .call(|client: &Probed| {
                    let answers = client.0;
                    async move {
                        if !answers {
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, Never>("fine")
                    }
                })
                .await;
            (answer.ok(), started.elapsed())
        })
    };
    // The call is waiting on the frozen replica; the probe finds it silent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    set.probe().await;
    let (answer, took) = waiting.await.expect("the call");
    assert_eq!(answer, Some("fine"));
    // On the paused clock: the 100 ms above and the probe's 50 ms, not the
    // attempt's 30 s.
    assert!(took < Duration::from_secs(1), "it waited {took:?}");
}

/// A replica that answers its probe at once that it cannot serve now (as
/// during an election), and answers its calls after `delay`.
struct Electing {
    ready: bool,
    delay: Duration,
}

#[async_trait::async_trait]
impl pygmy_core::balance::Probe for Electing {
    async fn probe(&self) -> pygmy_core::balance::Probed {
        pygmy_core::balance::Probed {
            serves: self.ready,
            leader: None,
        }
    }
}

/// A call waiting on a replica that answers its probe "not now" is left to
/// finish there: during an election every replica says so, and the calls
/// waiting on them are the ones that will succeed first.
#[tokio::test(start_paused = true)]
async fn a_probe_answered_not_ready_leaves_the_waiting_calls_alone() {
    let electing = |ready| Electing {
        ready,
        delay: Duration::from_millis(400),
    };
    let set = std::sync::Arc::new(preferring_the_first(
        [("electing", electing(false)), ("other", electing(true))],
        Duration::from_secs(30),
        probing(Duration::from_millis(50), Duration::from_secs(3)),
    ));
    let waiting = {
        let set = std::sync::Arc::clone(&set);
        tokio::spawn(async move {
            set.call(|client: &Electing| {
                let (ready, delay) = (client.ready, client.delay);
                async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Never>(if ready { "other" } else { "electing" })
                }
            })
            .await
            .ok()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    set.probe().await;
    assert_eq!(waiting.await.expect("the call"), Some("electing"));
}

/// A replica that answers its probe naming `leader` (`None`: frozen).
struct Naming(Option<&'static str>);

#[async_trait::async_trait]
impl pygmy_core::balance::Probe for Naming {
    async fn probe(&self) -> pygmy_core::balance::Probed {
        let Some(leader) = self.0 else {
            return std::future::pending().await;
        };
        pygmy_core::balance::Probed {
            serves: true,
            leader: (!leader.is_empty()).then(|| leader.to_owned()),
        }
    }
}

fn three(names: [Option<&'static str>; 3]) -> pygmy_core::balance::ReplicaSet<Naming> {
    pygmy_core::balance::ReplicaSet::new(
        ["a", "b", "c"]
            .into_iter()
            .zip(names)
            .map(|(name, leader)| {
                (
                    name.to_owned(),
                    format!("http://{name}.invalid"),
                    Naming(leader),
                )
            }),
        Box::new(pygmy_core::balance::Preferred::new(0)),
        probing(Duration::from_millis(50), Duration::from_secs(3)),
        Duration::from_secs(1),
    )
}

/// Writes go to the replica the probe found leading first (skipping a
/// follower's forward), reads keep the balancer's order; a leader the probe
/// finds silent is not tried first.
#[tokio::test(start_paused = true)]
async fn writes_go_to_the_leader_the_probe_found_first() {
    let set = three([Some("c"), Some("c"), Some("c")]);
    assert_eq!(
        set.plan_leader_first(),
        vec![0, 1, 2],
        "no probe yet: no leader"
    );
    set.probe().await;
    assert_eq!(set.leader(), Some(2));
    assert_eq!(set.plan_leader_first(), vec![2, 0, 1]);
    assert_eq!(
        set.plan(),
        vec![0, 1, 2],
        "reads as the balancer orders them"
    );
    let first = set
        .call_leader_first(|replica: &Naming| {
            let name = replica.0;
            async move { Ok::<_, Never>(name) }
        })
        .await
        .ok()
        .flatten();
    assert_eq!(first, Some("c"));

    // An old leader cut off still names itself; the others name the new.
    let set = three([Some("a"), Some("b"), Some("b")]);
    set.probe().await;
    assert_eq!(set.leader(), Some(1));

    // No leader named (an election): no hint.
    let set = three([Some(""), Some(""), Some("")]);
    set.probe().await;
    assert_eq!(set.leader(), None);
    assert_eq!(set.plan_leader_first(), vec![0, 1, 2]);

    // The leader frozen: named by the others, but ejected, so tried last.
    let set = three([Some("c"), Some("c"), None]);
    set.probe().await;
    assert_eq!(set.leader(), Some(2));
    assert_eq!(set.plan_leader_first(), vec![0, 1, 2]);
}

/// A set is ready (a frontend may say it reaches its backend) only once a
/// probe has found one of its replicas serving: not before the first
/// probe, and not while every replica is silent.
#[tokio::test(start_paused = true)]
async fn a_set_is_ready_once_a_probe_finds_a_replica_serving() {
    let set = std::sync::Arc::new(preferring_the_first(
        [("silent", Probed(false)), ("serving", Probed(true))],
        Duration::from_secs(1),
        probing(Duration::from_millis(50), Duration::from_secs(3)),
    ));
    assert!(!set.any_ready(), "no probe yet");
    set.probe().await;
    assert!(set.any_ready(), "one replica serves");

    let set = three([Some("a"), None, Some("a")]);
    assert!(!set.any_ready(), "no probe yet");
    set.probe().await;
    assert!(set.any_ready(), "a and c serve");
    let silent = three([None, None, None]);
    silent.probe().await;
    assert!(!silent.any_ready(), "every replica silent");

    // probe_forever probes at once: ready without waiting `probe_every`.
    let set = std::sync::Arc::new(three([Some("b"), Some("b"), Some("b")]));
    let probing = tokio::spawn(std::sync::Arc::clone(&set).probe_forever());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(set.any_ready(), "ready after the first probe's 50 ms");
    probing.abort();
}
