//! The operator's view of a service's membership (`pygmy-client members`):
//! list the replicas of the catalog or the order service (of one of its
//! shards, each its own raft group), add one, remove one, while the store
//! serves (`raft` only; see docs/operations.md).

use std::fmt;
use std::time::Duration;

use pygmy_core::replication::{MemberRole, Members};
use pygmy_core::topology::{Role, Topology};

use crate::error::ClientError;
use crate::http::ClientOptions;
use crate::nodes::InternalClient;

/// How often [`Admin::add`] looks whether the new replica is a voter yet.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// The replicas of one service an operator may ask, by name.
#[derive(Debug, Clone)]
pub struct Admin {
    replicas: Vec<(String, InternalClient)>,
    options: ClientOptions,
}

impl Admin {
    /// The replicas of shard `shard` of `role` in `topology` (its raft
    /// group; 0 for a service of one shard), called with the topology's
    /// token (`options.token` when it sets one).
    pub fn of(
        topology: &Topology,
        role: Role,
        shard: usize,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        let mut options = options.clone();
        if options.token.is_none() {
            options.token = topology.token.clone();
        }
        let replicas = topology
            .shard_urls(role, shard)
            .into_iter()
            .map(|(name, url)| Ok((name, InternalClient::new(&url, &options)?)))
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Admin { replicas, options })
    }

    /// Asks the replicas in turn (but `skip`) until one answers: a replica
    /// that cannot be reached passes the request on to the next. An answer,
    /// even an error, is final (a change that timed out goes on: asking
    /// another replica again could only confuse its outcome).
    async fn ask<F, Fut>(&self, skip: Option<&str>, call: F) -> Result<Members, ClientError>
    where
        F: Fn(InternalClient) -> Fut,
        Fut: std::future::Future<Output = Result<Members, ClientError>>,
    {
        let mut last = None;
        for (name, client) in &self.replicas {
            if skip == Some(name.as_str()) {
                continue;
            }
            match call(client.clone()).await {
                Err(err @ ClientError::Transport { .. }) => last = Some(err),
                answer => return answer,
            }
        }
        Err(last.unwrap_or_else(|| ClientError::InvalidUrl("no replica to ask".to_owned())))
    }

    /// Waits until a replica of the service is ready (`GET /ready`), at
    /// most `timeout`: Ok with its name, or the last failure of each
    /// replica once the time is up.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<String, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut failures = Vec::new();
            for (name, client) in &self.replicas {
                match client.ready().await {
                    Ok(_) => return Ok(name.clone()),
                    Err(err) => failures.push(format!("{name}: {err}")),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Unavailable(failures.join("; ")));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// The membership, as the service's leader knows it.
    pub async fn list(&self) -> Result<Members, ClientError> {
        self.ask(None, |client| async move { client.members().await })
            .await
    }

    /// Adds replica `name`, running at `url` with a topology that names it
    /// and its peers; waits at most `wait` until it is a voter (it joins
    /// as a learner and is made one once it has caught up) and serves. An
    /// add the service cannot take now (the replica is still starting, or a
    /// change is under way) is asked again until then: adding a member
    /// twice changes nothing. Answers the membership last seen, and whether
    /// the replica became a voter that serves.
    pub async fn add(
        &self,
        name: &str,
        url: &str,
        wait: Duration,
    ) -> Result<(Members, bool), ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut members = loop {
            let added = self
                .ask(Some(name), |client| async move {
                    client.add_member(name, url).await
                })
                .await;
            match added {
                Err(ClientError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(POLL_EVERY).await;
                }
                other => break other?,
            }
        };
        while !members.has_voter(name) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL_EVERY).await;
            members = self
                .ask(Some(name), |client| async move { client.members().await })
                .await?;
        }
        if !members.has_voter(name) {
            return Ok((members, false));
        }
        // A voter serves once it has applied what the leader had committed.
        let added = InternalClient::new(url, &self.options)?;
        let mut serves = added.ready().await.is_ok();
        while !serves && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL_EVERY).await;
            serves = added.ready().await.is_ok();
        }
        Ok((members, serves))
    }

    /// Removes replica `name` from the service; refused (conflict) if
    /// fewer than a majority of the voters left would answer, unless
    /// `force`.
    pub async fn remove(&self, name: &str, force: bool) -> Result<Members, ClientError> {
        // The replica leaving answers too: it forwards to the leader.
        self.ask(None, |client| async move {
            client.remove_member(name, force).await
        })
        .await
    }
}

/// The membership as a table, for the terminal.
pub struct Table<'a>(pub &'a Members);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        writeln!(
            f,
            "cluster {}  leader {}  last log {}{}",
            m.cluster,
            m.leader.as_deref().unwrap_or("none"),
            m.last_log.map_or_else(|| "-".to_owned(), |i| i.to_string()),
            if m.changing {
                "  (a change is under way)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "{:<20} {:>20}  {:<8} {:>10}  URL",
            "NAME", "ID", "ROLE", "MATCHED"
        )?;
        for member in &m.members {
            let role = match (member.role, member.leader) {
                (_, true) => "leader",
                (MemberRole::Voter, false) => "voter",
                (MemberRole::Learner, false) => "learner",
            };
            writeln!(
                f,
                "{:<20} {:>20}  {:<8} {:>10}  {}",
                member.name,
                member.id,
                role,
                member
                    .matched
                    .map_or_else(|| "-".to_owned(), |i| i.to_string()),
                member.url.as_deref().unwrap_or("(topology)")
            )?;
        }
        Ok(())
    }
}
