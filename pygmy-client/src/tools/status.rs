//! `pygmy-client status`: every node of a topology at a glance, from what
//! each node serves anyway (`GET /health` and `GET /metrics`), scraped
//! twice to tell the requests per second.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use pygmy_core::api::routes::{NodeRoute, OrderRoute};
use pygmy_core::topology::{NodeConfig, Role, Topology};
use serde::Serialize;

use crate::error::ClientError;
use crate::http::{ClientOptions, Http};

/// What one node showed, or why it showed nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// Its name in the topology.
    pub node: String,
    /// Its role.
    pub role: String,
    /// The shard of its service it is a replica of (its role's name for a
    /// service of one shard; `-` for a frontend).
    pub shard: String,
    /// Its address.
    pub addr: String,
    /// What its `/health` says of its readiness: `ok`, `catching_up` (a
    /// replica), `no_backend` (a frontend), or `unreachable`.
    pub health: String,
    /// Why it could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A backend's raft figures (none for a frontend or `broadcast`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftFigures>,
    /// A frontend's cache hits over reads, since it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_hit_rate: Option<f64>,
    /// Requests answered per second, over the sampling interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_s: Option<f64>,
}

/// A replica's raft state, as its `/metrics` tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RaftFigures {
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    /// The current term.
    pub term: u64,
    /// The leader it knows.
    pub leader: Option<String>,
    /// The last entry it applied.
    pub applied: u64,
    /// Entries it has not applied that the most advanced replica of its
    /// service has.
    pub lag: u64,
    /// The raft entry format its service writes, as far as it applied
    /// (none from a build before formats).
    pub writes_format: Option<u64>,
    /// The newest entry format it reads.
    pub reads_format: Option<u64>,
}

/// Reads every node of `topology`: two scrapes `interval` apart, over
/// `options` (its TLS, for a cluster that has it; 500 ms to connect and
/// 2 s to answer at most). An unreachable node is a row that says why,
/// never an error of the whole.
pub async fn status(
    topology: &Topology,
    options: &ClientOptions,
    interval: Duration,
) -> Vec<NodeStatus> {
    let options = ClientOptions {
        connect_timeout: options.connect_timeout.min(Duration::from_millis(500)),
        timeout: options.timeout.min(Duration::from_secs(2)),
        ..options.clone()
    };
    let pool = match crate::http::pooled(&options) {
        Ok(pool) => pool,
        Err(err) => {
            return topology
                .nodes
                .iter()
                .map(|n| unreachable(topology, n, err.to_string()))
                .collect()
        }
    };
    let urls: Vec<String> = topology.nodes.iter().map(|n| topology.url(n)).collect();
    let client = |url: &String| Http::with_client(pool.clone(), url, None);
    let first = futures_util::future::join_all(urls.iter().map(|u| scrape(client(u)))).await;
    let started = Instant::now();
    tokio::time::sleep(interval).await;
    let second = futures_util::future::join_all(urls.iter().map(|u| scrape(client(u)))).await;
    let elapsed = started.elapsed().as_secs_f64();

    let mut rows: Vec<NodeStatus> = topology
        .nodes
        .iter()
        .zip(first.into_iter().zip(second))
        .map(|(node, (before, after))| {
            let (name, addr) = (node.name.clone(), node.addr.to_string());
            match after {
                Err(err) => unreachable(topology, node, err),
                Ok(now) => {
                    let requests = |s: &Scrape| s.sum("pygmy_requests_total");
                    let requests_per_s = before
                        .ok()
                        .map(|b| (requests(&now) - requests(&b)).max(0.0) / elapsed.max(1e-3));
                    NodeStatus {
                        node: name,
                        role: node.role.to_string(),
                        shard: shard_of(topology, node),
                        addr,
                        health: now.health.clone(),
                        error: None,
                        raft: now.raft(),
                        cache_hit_rate: now.hit_rate(),
                        requests_per_s,
                    }
                }
            }
        })
        .collect();
    // A replica's lag: behind the most advanced replica of its shard (its
    // raft group).
    let mut most: BTreeMap<(String, String), u64> = BTreeMap::new();
    for row in &rows {
        if let Some(raft) = &row.raft {
            let top = most
                .entry((row.role.clone(), row.shard.clone()))
                .or_default();
            *top = (*top).max(raft.applied);
        }
    }
    for row in &mut rows {
        if let Some(raft) = &mut row.raft {
            let group = (row.role.clone(), row.shard.clone());
            raft.lag = most.get(&group).copied().unwrap_or(0) - raft.applied;
        }
    }
    rows
}

/// The name of `node`'s shard, or `-` for a frontend.
fn shard_of(topology: &Topology, node: &NodeConfig) -> String {
    if node.role == Role::Frontend {
        "-".to_owned()
    } else {
        topology.shard_name(node)
    }
}

fn unreachable(topology: &Topology, node: &NodeConfig, error: String) -> NodeStatus {
    NodeStatus {
        node: node.name.clone(),
        role: node.role.to_string(),
        shard: shard_of(topology, node),
        addr: node.addr.to_string(),
        health: "unreachable".to_owned(),
        error: Some(error),
        raft: None,
        cache_hit_rate: None,
        requests_per_s: None,
    }
}

/// One node's `/health` state and `/metrics` samples.
#[derive(Debug, Clone, Default)]
struct Scrape {
    health: String,
    samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

async fn scrape(http: Result<Http, ClientError>) -> Result<Scrape, String> {
    let http = http.map_err(|e| e.to_string())?;
    let health = http.health().await.map_err(describe)?.state;
    let metrics = http
        .send_raw(http.request(&NodeRoute::<OrderRoute>::Metrics, &[]))
        .await
        .map_err(describe)?;
    Ok(Scrape {
        health,
        samples: parse(&String::from_utf8_lossy(&metrics)),
    })
}

fn describe(err: ClientError) -> String {
    match err {
        ClientError::Transport { connect: true, .. } => "cannot connect".to_owned(),
        ClientError::Transport { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// The samples of Prometheus text (comments skipped; a line that does not
/// parse is skipped too).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)),
                None => (series, Vec::new()),
            };
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

/// `a="x",b="y"` as pairs (values without `",` inside, as Pygmy writes).
fn labels(text: &str) -> Vec<(String, String)> {
    text.split("\",")
        .filter_map(|pair| {
            let (name, value) = pair.split_once("=\"")?;
            Some((name.to_owned(), value.trim_end_matches('"').to_owned()))
        })
        .collect()
}

impl Scrape {
    fn value(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    }

    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    fn label_of(&self, name: &str, label: &str, value: f64) -> Option<String> {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.value == value)
            .find_map(|s| s.labels.iter().find(|(l, _)| l == label))
            .map(|(_, v)| v.clone())
    }

    fn raft(&self) -> Option<RaftFigures> {
        let whole = |v: f64| v as u64;
        Some(RaftFigures {
            state: self.label_of("pygmy_raft_state", "state", 1.0)?,
            term: whole(self.value("pygmy_raft_term")?),
            leader: self.label_of("pygmy_raft_leader", "leader", 1.0),
            applied: whole(self.value("pygmy_raft_applied_index")?),
            lag: 0,
            writes_format: self.value("pygmy_raft_format_writes").map(whole),
            reads_format: self.value("pygmy_raft_format_reads_newest").map(whole),
        })
    }

    fn hit_rate(&self) -> Option<f64> {
        let hits = self.value("pygmy_cache_hits_total")?;
        let misses = self.value("pygmy_cache_misses_total")?;
        (hits + misses > 0.0).then(|| hits / (hits + misses))
    }
}

/// The rows as a table.
pub struct StatusTable<'a>(pub &'a [NodeStatus]);

impl fmt::Display for StatusTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:<9} {:<10} {:<21} {:<12} {:<9} {:>5} {:<14} {:>9} {:>5} {:>6} {:>6} {:>8}",
            "NODE",
            "ROLE",
            "SHARD",
            "ADDR",
            "HEALTH",
            "RAFT",
            "TERM",
            "LEADER",
            "APPLIED",
            "LAG",
            "FORMAT",
            "HIT%",
            "REQ/S"
        )?;
        for row in self.0 {
            let dash = || "-".to_owned();
            let raft = row.raft.as_ref();
            writeln!(
                f,
                "{:<14} {:<9} {:<10} {:<21} {:<12} {:<9} {:>5} {:<14} {:>9} {:>5} {:>6} {:>6} {:>8}",
                row.node,
                row.role,
                row.shard,
                row.addr,
                row.health,
                raft.map_or_else(dash, |r| r.state.clone()),
                raft.map_or_else(dash, |r| r.term.to_string()),
                raft.and_then(|r| r.leader.clone()).unwrap_or_else(dash),
                raft.map_or_else(dash, |r| r.applied.to_string()),
                raft.map_or_else(dash, |r| r.lag.to_string()),
                raft.and_then(|r| Some(format!("{}/{}", r.writes_format?, r.reads_format?)))
                    .unwrap_or_else(dash),
                row.cache_hit_rate
                    .map_or_else(dash, |r| format!("{:.1}", r * 100.0)),
                row.requests_per_s.map_or_else(dash, |r| format!("{r:.1}")),
            )?;
            if let Some(error) = &row.error {
                writeln!(f, "  {}: {error}", row.node)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_read_back() {
        let text = "# HELP x y\n# TYPE pygmy_raft_state gauge\n\
            pygmy_raft_state{node=\"c-a\",state=\"leader\"} 0\n\
            pygmy_raft_state{node=\"c-a\",state=\"follower\"} 1\n\
            pygmy_raft_term{node=\"c-a\"} 4\n\
            pygmy_raft_leader{node=\"c-a\",leader=\"c-b\"} 1\n\
            pygmy_raft_applied_index{node=\"c-a\"} 120\n\
            pygmy_requests_total{node=\"c-a\",code=\"2xx\"} 10\n\
            pygmy_requests_total{node=\"c-a\",code=\"5xx\"} 2\n";
        let scrape = Scrape {
            health: "ok".into(),
            samples: parse(text),
        };
        let raft = scrape.raft().expect("raft figures");
        assert_eq!(raft.state, "follower");
        assert_eq!((raft.term, raft.applied), (4, 120));
        assert_eq!(raft.leader.as_deref(), Some("c-b"));
        assert_eq!(scrape.sum("pygmy_requests_total"), 12.0);
        assert_eq!(scrape.hit_rate(), None);
    }
}
