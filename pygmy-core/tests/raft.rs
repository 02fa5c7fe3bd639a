//! The raft replicator, three replicas in one process over the loopback
//! transport (SQLite stores in temporary files).
#![cfg(feature = "raft")]

use std::sync::Arc;
use std::time::Duration;

use pygmy_core::catalog::sqlite::SqliteCatalog;
use pygmy_core::catalog::{CatalogCommand, CatalogMachine, CatalogOutcome, CatalogStore};
use pygmy_core::journal::{Journal, Op, OpId};
use pygmy_core::replication::loopback::Loopback;
use pygmy_core::replication::raft::{self, format, RaftConfig, RaftReplicator};
use pygmy_core::replication::{MemberChange, MemberRole, Members, Replicator};
use pygmy_core::types::{default_books, ItemId};
use pygmy_core::{ErrorKind, ReplicationError};

const NAMES: [&str; 3] = ["c0", "c1", "c2"];

struct Replica {
    store: Arc<SqliteCatalog>,
    replicator: Arc<dyn Replicator<CatalogMachine>>,
}

struct Cluster {
    net: Arc<Loopback<CatalogMachine>>,
    replicas: Vec<Replica>,
    _dir: tempfile::TempDir,
}

async fn start_replica(
    net: &Arc<Loopback<CatalogMachine>>,
    dir: &std::path::Path,
    name: &str,
    stock: i64,
    tune: impl Fn(&mut RaftConfig),
) -> Replica {
    start_replica_of(net, dir, name, &NAMES, stock, tune).await
}

/// A replica whose topology names `names`.
async fn start_replica_of(
    net: &Arc<Loopback<CatalogMachine>>,
    dir: &std::path::Path,
    name: &str,
    names: &[&str],
    stock: i64,
    tune: impl Fn(&mut RaftConfig),
) -> Replica {
    let path = dir.join(format!("{name}.db"));
    let store = Arc::new(SqliteCatalog::open(&path).expect("open"));
    let mut books = default_books();
    for book in &mut books {
        book.count = stock;
    }
    store.seed(books).await.expect("seed");
    let mut config = RaftConfig::new(name, names.iter().map(|s| s.to_string()).collect());
    config.write_timeout = Duration::from_secs(3);
    tune(&mut config);
    let (log, machine) = raft::sqlite::open(Arc::clone(&store), &path)
        .await
        .expect("open the raft storage");
    let replicator = RaftReplicator::start(config, log, machine, net.endpoint(name))
        .await
        .expect("start");
    let replicator: Arc<dyn Replicator<CatalogMachine>> = Arc::new(replicator);
    net.register(name, &replicator);
    Replica { store, replicator }
}

async fn cluster(stock: i64) -> Cluster {
    cluster_with(stock, |_| {}).await
}

async fn cluster_with(stock: i64, tune: impl Fn(&mut RaftConfig) + Copy) -> Cluster {
    cluster_of(&NAMES, stock, tune).await
}

/// A cluster founded by the replicas `names`, once every one serves.
async fn cluster_of(names: &[&str], stock: i64, tune: impl Fn(&mut RaftConfig) + Copy) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Loopback::new();
    let mut replicas = Vec::new();
    for name in names {
        replicas.push(start_replica_of(&net, dir.path(), name, names, stock, tune).await);
    }
    for _ in 0..400 {
        if replicas.iter().all(|r| r.replicator.is_ready()) {
            return Cluster {
                net,
                replicas,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader was elected");
}

fn sell(id: &str, item: i64) -> Op<CatalogCommand> {
    Op {
        id: OpId(id.to_owned()),
        cmd: CatalogCommand::Sell { item: ItemId(item) },
    }
}

/// Stock of item 1 on each replica, each read made fresh first.
async fn stocks(replicas: &[&Replica]) -> Vec<i64> {
    let mut out = Vec::new();
    for r in replicas {
        r.replicator.linearize().await.expect("linearize");
        out.push(
            r.store
                .book(ItemId(1))
                .await
                .expect("read")
                .expect("book")
                .count,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_anywhere_are_applied_everywhere_and_reads_are_fresh() {
    let c = cluster(100).await;
    for (i, r) in c.replicas.iter().enumerate() {
        let outcome = r
            .replicator
            .propose(sell(&format!("w{i}"), 1))
            .await
            .expect("propose");
        assert!(matches!(outcome, CatalogOutcome::Sold { .. }));
        // A read anywhere right after the answer sees it.
        let all: Vec<&Replica> = c.replicas.iter().collect();
        assert_eq!(stocks(&all).await, vec![100 - i as i64 - 1; 3]);
    }
    // A repeat of an op id, even through another replica, sells nothing.
    let again = c.replicas[2]
        .replicator
        .propose(sell("w0", 1))
        .await
        .expect("propose");
    assert!(matches!(again, CatalogOutcome::Sold { ref book } if book.count == 99));
    let all: Vec<&Replica> = c.replicas.iter().collect();
    assert_eq!(stocks(&all).await, vec![97; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sales_through_every_replica_never_oversell() {
    let c = cluster(10).await;
    let mut tasks = Vec::new();
    for n in 0..45 {
        let replicator = Arc::clone(&c.replicas[n % 3].replicator);
        tasks.push(tokio::spawn(async move {
            replicator.propose(sell(&format!("b{n}"), 1)).await
        }));
    }
    let mut sold = 0;
    for task in tasks {
        if let CatalogOutcome::Sold { .. } = task.await.expect("task").expect("propose") {
            sold += 1;
        }
    }
    assert_eq!(sold, 10);
    let all: Vec<&Replica> = c.replicas.iter().collect();
    assert_eq!(stocks(&all).await, vec![0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_goes_on_without_a_cut_off_replica_and_a_minority_stops() {
    let c = cluster(100).await;
    // Cut off one replica: the two others elect a leader if needed and go on.
    c.net.set_cut("c0", true);
    for n in 0..5 {
        c.replicas[1]
            .replicator
            .propose(sell(&format!("m{n}"), 1))
            .await
            .expect("majority writes");
    }
    assert_eq!(
        stocks(&[&c.replicas[1], &c.replicas[2]]).await,
        vec![95, 95]
    );
    // Cut off a second one: no majority, so no write is taken.
    c.net.set_cut("c1", true);
    let refused = c.replicas[2].replicator.propose(sell("lonely", 1)).await;
    assert!(
        matches!(refused, Err(ReplicationError::Unavailable(_))),
        "{refused:?}"
    );
    // Heal: everyone catches up, and writes go on.
    c.net.set_cut("c0", false);
    c.net.set_cut("c1", false);
    c.replicas[0]
        .replicator
        .propose(sell("healed", 1))
        .await
        .expect("write after healing");
    let all: Vec<&Replica> = c.replicas.iter().collect();
    let after = stocks(&all).await;
    assert!(after.iter().all(|&s| s == after[0]), "{after:?}");
    // The refused write may or may not have been committed once healed
    // (its entry may survive in a log): either way, once.
    assert!(after[0] == 94 || after[0] == 93, "{after:?}");
}

/// A replica that missed more than the log keeps catches up by snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_far_behind_catches_up_by_snapshot() {
    let c = cluster_with(1_000, |config| {
        config.snapshot_every = 20;
        config.keep_logs = 0;
    })
    .await;
    c.net.set_cut("c2", true);
    for n in 0..120 {
        let at = &c.replicas[n % 2].replicator;
        at.propose(sell(&format!("far{n}"), 1 + (n % 7) as i64))
            .await
            .expect("majority writes");
    }
    // The others snapshotted and purged their logs past what c2 has.
    let first_kept = |r: &Replica| {
        let store = Arc::clone(&r.store);
        async move {
            store
                .read(|conn| {
                    Ok(
                        conn.query_row("SELECT IFNULL(MIN(idx), 0) FROM raft_log", [], |row| {
                            row.get::<_, i64>(0)
                        })?,
                    )
                })
                .await
                .expect("read the log")
        }
    };
    let mut purged = false;
    for _ in 0..200 {
        if first_kept(&c.replicas[0]).await > 60 && first_kept(&c.replicas[1]).await > 60 {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(purged, "the logs were not purged");
    let behind = c.replicas[2].store.books(None).await.expect("books");
    assert!(behind.iter().all(|b| b.count == 1_000), "c2 was cut off");
    c.net.set_cut("c2", false);
    // It can only catch up from a snapshot: the entries it lacks are gone.
    let mut caught_up = false;
    for _ in 0..300 {
        let leader_books = c.replicas[0].store.books(None).await.expect("books");
        if c.replicas[2].store.books(None).await.expect("books") == leader_books
            && leader_books.iter().map(|b| 1_000 - b.count).sum::<i64>() == 120
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(caught_up, "c2 did not catch up");
    // The op records came with it: a repeat is still a repeat there.
    let again = c.replicas[2]
        .replicator
        .propose(sell("far0", 1))
        .await
        .expect("propose");
    assert!(matches!(again, CatalogOutcome::Sold { .. }));
    let books = c.replicas[2].store.books(None).await.expect("books");
    assert_eq!(books.iter().map(|b| 1_000 - b.count).sum::<i64>(), 120);
}

/// Deletes replica `name`'s database (as a lost disk would).
fn wipe(dir: &std::path::Path, name: &str) {
    for suffix in ["db", "db-wal", "db-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("{name}.{suffix}")));
    }
}

/// A replica that lost its disk comes back empty. Were it to vote as the
/// member it was, it could elect a replica that lacks a write it had
/// acknowledged, and that write would be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_disk_never_votes_an_acknowledged_write_away() {
    let mut c = cluster(100).await;
    // c1 misses the sale: c0 and c2 acknowledge it.
    c.net.set_cut("c1", true);
    let kept = c.replicas[0]
        .replicator
        .propose(sell("kept", 1))
        .await
        .expect("a majority write");
    assert!(matches!(kept, CatalogOutcome::Sold { ref book } if book.count == 99));
    // c2 loses its disk and comes back empty; c0 is cut off (as if it had
    // crashed), and c1 comes back.
    drop(c.replicas.remove(2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    wipe(c._dir.path(), "c2");
    c.net.set_cut("c0", true);
    let fresh = start_replica(&c.net, c._dir.path(), "c2", 100, |_| {}).await;
    c.net.set_cut("c1", false);
    // c1 lacks the sale and the new c2 has nothing: they must not make a
    // leader together. Wait until they could have: the new c2 runs raft,
    // and c1 has since asked it for its vote several times.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while fresh.replicator.status().is_none() {
        assert!(
            tokio::time::Instant::now() < until,
            "the new c2 never ran raft"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = c.net.calls("c1", raft::messages::VOTE);
    let leads = |replica: &Replica| {
        replica
            .replicator
            .status()
            .is_some_and(|status| status.state == "leader")
    };
    while c.net.calls("c1", raft::messages::VOTE) < asked + 6
        && !leads(&c.replicas[1])
        && !leads(&fresh)
    {
        assert!(
            tokio::time::Instant::now() < until,
            "c1 never stood for election"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stale = c.replicas[1].replicator.propose(sell("stale", 2)).await;
    assert!(
        stale.is_err(),
        "c1 and the empty c2 elected a leader without the acknowledged sale: {stale:?}"
    );
    // c0 comes back: the sale is kept, and c2 catches up and serves again.
    c.net.set_cut("c0", false);
    let mut ready = false;
    for _ in 0..300 {
        if fresh.replicator.is_ready() && c.replicas.iter().all(|r| r.replicator.is_ready()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the cluster did not heal");
    c.replicas.push(fresh);
    let all: Vec<&Replica> = c.replicas.iter().collect();
    let after = stocks(&all).await;
    // The sale of item 1 is there on every replica.
    assert_eq!(after, vec![99; 3]);
    for r in &c.replicas {
        let outcome = r
            .store
            .outcome(&OpId("kept".to_owned()))
            .await
            .expect("read");
        assert!(outcome.is_some(), "the acknowledged sale is missing");
    }
}

/// The name of the leader `via` knows of.
async fn leader_of(via: &Replica) -> String {
    via.replicator
        .members()
        .await
        .expect("members")
        .leader
        .expect("a leader")
}

/// Waits until `check` holds of the membership as `via` reports it.
async fn await_members(via: &Replica, what: &str, check: impl Fn(&Members) -> bool) -> Members {
    let mut last = None;
    for _ in 0..200 {
        match via.replicator.members().await {
            Ok(members) if check(&members) => return members,
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not after 20 s; last seen {last:?}");
}

/// An operator grows the service from three replicas to four and shrinks
/// it back to three (without the founder) while sales go on through every
/// replica: no acknowledged sale is lost, and a replica the topology does
/// not name joins only once added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_added_and_another_removed_while_sales_go_on() {
    let mut c = cluster(100_000).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = c
        .replicas
        .iter()
        .enumerate()
        .map(|(w, r)| {
            let replicator = Arc::clone(&r.replicator);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let id = format!("w{w}-{n}");
                    if replicator.propose(sell(&id, 1)).await.is_ok() {
                        acked.push(id);
                    }
                }
                acked
            })
        })
        .collect();

    // c3 runs with a topology that names it; the others' does not.
    let grown = ["c0", "c1", "c2", "c3"];
    let dir = c._dir.path().to_owned();
    let c3 = start_replica_of(&c.net, &dir, "c3", &grown, 100_000, |_| {}).await;
    // c3 asks to join, again and again, and is refused every time.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while c.net.calls("c3", raft::messages::JOIN) < 3 && !c3.replicator.is_ready() {
        assert!(
            tokio::time::Instant::now() < until,
            "c3 never asked to join"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!c3.replicator.is_ready(), "c3 joined without being added");
    let before = c.replicas[1].replicator.members().await.expect("members");
    assert!(before.get("c3").is_none(), "{before:?}");

    // Bad requests are refused, with the right kind.
    let bad = MemberChange::Add {
        name: "c 3".into(),
        url: "http://127.0.0.1:1".into(),
    };
    let err = c.replicas[1]
        .replicator
        .change_members(bad)
        .await
        .expect_err("a bad name is refused");
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
    let absent = MemberChange::Remove {
        name: "c9".into(),
        force: false,
    };
    let err = c.replicas[2]
        .replicator
        .change_members(absent)
        .await
        .expect_err("removing a non-member is refused");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // Added through a follower or the leader alike: a learner, then a voter.
    let add = MemberChange::Add {
        name: "c3".into(),
        url: "http://127.0.0.1:1".into(),
    };
    let added = c.replicas[1]
        .replicator
        .change_members(add)
        .await
        .expect("add");
    assert!(added.get("c3").is_some(), "{added:?}");
    await_members(&c.replicas[2], "c3 a voter", |m| m.has_voter("c3")).await;
    for _ in 0..200 {
        if c3.replicator.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c3.replicator.is_ready(), "c3 does not serve");

    // c0, the founder, leaves.
    let remove = MemberChange::Remove {
        name: "c0".into(),
        force: false,
    };
    match c.replicas[2].replicator.change_members(remove).await {
        Ok(_) => {}
        // The change outlives a slow answer; the listing below follows it.
        Err(err) => assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}"),
    }
    // Asked at once, before the others elected a leader among them: the
    // removed leader passes the question on, and they wait for their new
    // leader.
    let at_once = c.replicas[0].replicator.members().await.expect("members");
    assert!(at_once.get("c0").is_none(), "{at_once:?}");
    let after = await_members(&c3, "c0 gone", |m| {
        m.get("c0").is_none() && !m.changing && m.leader.is_some()
    })
    .await;
    let voters: Vec<&str> = after
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Voter)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(voters, ["c1", "c2", "c3"]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }
    assert!(
        acked.len() > 50,
        "too few sales went through: {}",
        acked.len()
    );
    // Every acknowledged sale is on every remaining replica, once.
    c.replicas.push(c3);
    let remaining: Vec<&Replica> = c.replicas[1..].iter().collect();
    let counts = stocks(&remaining).await;
    for r in &remaining {
        for id in &acked {
            let outcome = r.store.outcome(&OpId(id.clone())).await.expect("read");
            assert!(outcome.is_some(), "acknowledged sale {id} is missing");
        }
    }
    let first = counts[0];
    assert_eq!(counts, vec![first; 3], "the replicas differ");
    assert!(
        100_000 - first >= acked.len() as i64,
        "{} sold, {} acknowledged",
        100_000 - first,
        acked.len()
    );
    // The removed founder no longer serves, and passes an operator's
    // question on to the members.
    assert!(!c.replicas[0].replicator.is_ready(), "c0 still serves");
    let asked = c.replicas[0].replicator.members().await.expect("members");
    assert!(
        asked.get("c0").is_none() && asked.leader.is_some(),
        "{asked:?}"
    );
}

/// A leader removed from its service passes an operator's question to the
/// members; one of them that missed the change (its appends dropped) still
/// takes the old leader for the leader and passes the question back. The
/// question goes each way once, never round and round: it is answered,
/// or refused, in time (round and round, over the loopback transport, it
/// would overflow the stack at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_passed_between_a_removed_leader_and_a_lagging_member_does_not_loop() {
    let four = ["c0", "c1", "c2", "c3"];
    let Cluster {
        net,
        replicas,
        _dir,
    } = cluster_of(&four, 100, |_| {}).await;
    let leader = leader_of(&replicas[0]).await;
    let at = |name: &str| four.iter().position(|n| *n == name).expect("a name");
    // The removed leader asks the members in name order: the first of the
    // others misses the change.
    let others: Vec<&str> = four.iter().copied().filter(|n| *n != leader).collect();
    let (lagging, asked) = (others[0], others[1]);
    net.set_dropped(
        pygmy_core::replication::raft::messages::APPEND,
        lagging,
        true,
    );
    let remove = MemberChange::Remove {
        name: leader.clone(),
        force: false,
    };
    match replicas[at(asked)].replicator.change_members(remove).await {
        Ok(_) => {}
        Err(err) => assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}"),
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        replicas[at(&leader)].replicator.members(),
    )
    .await
    .expect("an answer in time");
    if let Ok(members) = &answer {
        assert!(members.get(&leader).is_none(), "{members:?}");
    }
    net.set_dropped(
        pygmy_core::replication::raft::messages::APPEND,
        lagging,
        false,
    );
    await_members(
        &replicas[at(lagging)],
        "the lagging member caught up",
        |m| m.get(&leader).is_none() && !m.changing && m.leader.is_some(),
    )
    .await;
}

/// A write a follower forwards is written by the leader, or refused by a
/// replica that does not lead: never forwarded again (two replicas that
/// each took the other for the leader would pass it round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_is_refused_by_a_replica_that_does_not_lead() {
    let c = cluster(100).await;
    let leader = leader_of(&c.replicas[0]).await;
    let follower = c
        .replicas
        .iter()
        .zip(NAMES)
        .find(|(_, name)| *name != leader)
        .map(|(replica, _)| replica)
        .expect("a follower");
    let body = serde_json::to_vec(&sell("forwarded", 1)).expect("json");
    let refused = follower
        .replicator
        .handle(pygmy_core::replication::raft::messages::PROPOSE, &body)
        .await;
    assert!(
        matches!(refused, Err(ReplicationError::Unavailable(_))),
        "{refused:?}"
    );
    let leading = &c.replicas[NAMES.iter().position(|n| *n == leader).expect("the leader")];
    let written = leading
        .replicator
        .handle(pygmy_core::replication::raft::messages::PROPOSE, &body)
        .await;
    assert!(written.is_ok(), "{written:?}");
    // Proposed at a follower, a write still reaches the leader.
    follower
        .replicator
        .propose(sell("through-a-follower", 1))
        .await
        .expect("forwarded once");
    assert_eq!(
        stocks(&c.replicas.iter().collect::<Vec<_>>()).await,
        vec![98; 3]
    );
}

/// An idle leader writes an empty, stamped entry each tick, so that the
/// journal's clock (which moves on by at most a step between two stamps)
/// follows time while no one writes. (Seen failing with the tick left
/// out: the log did not grow.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_leader_writes_a_tick() {
    let c = cluster_with(100, |config| config.tick = Duration::from_millis(100)).await;
    let last_log = |r: &Replica| r.replicator.status().map_or(0, |s| s.last_log);
    let before = last_log(&c.replicas[0]);
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while last_log(&c.replicas[0]) < before + 3 {
        assert!(
            tokio::time::Instant::now() < until,
            "no tick written: the log stayed at {}",
            last_log(&c.replicas[0])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every replica still holds the same state.
    let all: Vec<&Replica> = c.replicas.iter().collect();
    assert_eq!(stocks(&all).await, vec![100; 3]);
}

/// Removing a member is refused (conflict) when the voters left would not
/// have a majority that answers: with one follower cut off, removing the
/// other would leave the leader and the cut one, one of two answering. Its
/// joint configuration could not commit, and would block every change
/// after it (issue 23: a careless removal wedged the catalog). Refused,
/// the membership stays as it was and writes go on; forced, the removal
/// is taken, and completes once the cut one is back. (Seen failing when
/// the removal was taken without the check: it answered that it was not
/// committed yet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_that_would_leave_no_majority_answering_is_refused() {
    let c = cluster(100).await;
    let leader = leader_of(&c.replicas[0]).await;
    let at = |name: &str| NAMES.iter().position(|n| *n == name).expect("a name");
    let followers: Vec<&str> = NAMES.iter().copied().filter(|n| *n != leader).collect();
    let (cut, removed) = (followers[0], followers[1]);
    c.net.set_cut(cut, true);
    let remove = |force| MemberChange::Remove {
        name: removed.to_owned(),
        force,
    };
    let leading = &c.replicas[at(&leader)];
    let refused = leading
        .replicator
        .change_members(remove(false))
        .await
        .expect_err("refused");
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    let members = leading.replicator.members().await.expect("members");
    assert!(
        !members.changing && members.has_voter(removed),
        "{members:?}"
    );
    leading
        .replicator
        .propose(sell("after-the-refusal", 1))
        .await
        .expect("writes go on");
    // Forced, it is taken; it commits once the cut one is back.
    match leading.replicator.change_members(remove(true)).await {
        Ok(_) => {}
        Err(err) => assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}"),
    }
    c.net.set_cut(cut, false);
    await_members(&c.replicas[at(cut)], "the forced removal done", |m| {
        m.get(removed).is_none() && !m.changing && m.leader.is_some()
    })
    .await;
}

/// A replica that holds an identity belongs to a cluster, founded or being
/// founded: a founder whose own volume came back empty asks, hears it, and
/// founds nothing beside it, even with a majority of empty volumes. (Seen
/// failing when only the replicas' count decided: c0 founded a new cluster
/// with c2.)
#[tokio::test]
async fn a_founder_never_founds_beside_a_replica_that_belongs_to_a_cluster() {
    use pygmy_core::replication::raft::{Identity, IdentityStore};

    let dir = tempfile::tempdir().expect("tempdir");
    let net = Loopback::new();
    // c1 took an identity from a founder that then lost its volume.
    let path = dir.path().join("c1.db");
    let store = Arc::new(SqliteCatalog::open(&path).expect("open"));
    store.seed(default_books()).await.expect("seed");
    let (log, machine) = raft::sqlite::open(Arc::clone(&store), &path)
        .await
        .expect("open the raft storage");
    log.adopt(Identity {
        cluster: "being-founded".to_owned(),
        id: 2,
    })
    .await
    .expect("adopt");
    let names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    let c1 = RaftReplicator::start(
        RaftConfig::new("c1", names),
        log,
        machine,
        net.endpoint("c1"),
    )
    .await
    .expect("start");
    let c1: Arc<dyn Replicator<CatalogMachine>> = Arc::new(c1);
    net.register("c1", &c1);
    let c2 = start_replica(&net, dir.path(), "c2", 100, |_| {}).await;
    let c0 = start_replica(&net, dir.path(), "c0", 100, |_| {}).await;

    // c0 asks both peers, then waits past the founder's wait, and founds
    // nothing: it offers no identity, and no replica serves.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while net.calls("c0", raft::messages::HELLO) < 2 {
        assert!(tokio::time::Instant::now() < until, "c0 never asked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        net.calls("c0", raft::messages::ADOPT),
        0,
        "c0 offered identities"
    );
    for (name, replica) in [("c0", &c0.replicator), ("c1", &c1), ("c2", &c2.replicator)] {
        assert!(
            !replica.is_ready(),
            "{name} serves a cluster founded beside c1's"
        );
    }
}

/// A membership change whose leader steps down between its two steps (the
/// joint configuration, then the new one) is finished by the next leader:
/// openraft leaves the second step to the caller of the change, so the
/// joint configuration would stay and block every change after it. Here a
/// removal is forced while one follower is cut off (its joint
/// configuration cannot commit), then the leader is cut off while that
/// follower comes back: the others cannot elect a leader under the joint
/// configuration, and once the old leader is back a new term begins.
/// (Seen failing without the next leader finishing the change: still
/// joint after 20 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_left_joint_by_a_leader_change_is_finished() {
    let c = cluster(100).await;
    let leader = leader_of(&c.replicas[0]).await;
    let at = |name: &str| NAMES.iter().position(|n| *n == name).expect("a name");
    let followers: Vec<&str> = NAMES.iter().copied().filter(|n| *n != leader).collect();
    let (cut, removed) = (followers[0], followers[1]);
    c.net.set_cut(cut, true);
    let leading = &c.replicas[at(&leader)];
    let _ = leading
        .replicator
        .change_members(MemberChange::Remove {
            name: removed.to_owned(),
            force: true,
        })
        .await;
    let joint = leading.replicator.members().await.expect("members");
    assert!(joint.changing, "{joint:?}");
    // The leader away, the cut one back; then the leader back too.
    c.net.set_cut(&leader, true);
    c.net.set_cut(cut, false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.net.set_cut(&leader, false);
    await_members(&c.replicas[at(cut)], "the change finished", |m| {
        m.get(removed).is_none() && !m.changing && m.leader.is_some()
    })
    .await;
}

/// The format each replica says its service writes.
fn formats_written(c: &Cluster) -> Vec<u32> {
    c.replicas
        .iter()
        .map(|r| r.replicator.status().map_or(0, |s| s.formats.writes))
        .collect()
}

/// A service whose members all read the newest format is raised to it
/// within seconds; one member that reads only the oldest holds it there,
/// and applies every entry (it would refuse an entry in a newer format,
/// and fall behind for good: seen with the leader raising by its own
/// formats alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_writes_the_newest_format_every_member_reads() {
    let c = cluster(100).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while formats_written(&c) != vec![format::NEWEST; 3] {
        assert!(
            tokio::time::Instant::now() < until,
            "every member reads format {}, and the service writes {:?} after 10 s",
            format::NEWEST,
            formats_written(&c)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let capped = cluster_with(100, |config| {
        if config.node == "c2" {
            config.max_format = format::ONE_OP;
        }
    })
    .await;
    for n in 0..20 {
        let via = &capped.replicas[n % 3];
        via.replicator
            .propose(sell(&format!("s{n}"), 1))
            .await
            .expect("sold");
    }
    // Three rounds of asking the members.
    tokio::time::sleep(format::RAISE_EVERY * 3).await;
    assert_eq!(formats_written(&capped), vec![format::ONE_OP; 3]);
    let all: Vec<&Replica> = capped.replicas.iter().collect();
    assert_eq!(stocks(&all).await, vec![80; 3]);
}

/// A raised format is not undone: a replica whose data is at a format its
/// build (or its cap) does not read refuses to start, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_data_at_a_format_it_does_not_read() {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c0.db");
    {
        let store = Arc::new(SqliteCatalog::open(&path).expect("open"));
        let (_log, mut machine) = raft::sqlite::open(store, &path).await.expect("open");
        machine
            .apply(vec![Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
                payload: EntryPayload::Normal(raft::Proposal::raise(format::GROUPED)),
            }])
            .await
            .expect("apply");
    }
    let store = Arc::new(SqliteCatalog::open(&path).expect("open"));
    let (log, machine) = raft::sqlite::open(store, &path).await.expect("open");
    let mut config = RaftConfig::new("c0", NAMES.iter().map(|s| s.to_string()).collect());
    config.max_format = format::ONE_OP;
    let net = Loopback::<CatalogMachine>::new();
    match RaftReplicator::start(config, log, machine, net.endpoint("c0")).await {
        Ok(_) => panic!("started over data at a format it does not read"),
        Err(err) => assert!(err.to_string().contains("not undone"), "{err}"),
    }
}
