//! The membership of a raft service: an operator's list, add and remove
//! (`/members`, passed to the leader as `raft-members`), and the leader's
//! side of a replica's join (a learner first, then a voter in place of any
//! old id of its name). Each change runs in a task of its own on the
//! leader, so that a caller that gives up never leaves a joint
//! configuration behind.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, LogId};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::config::{ASK_TIMEOUT, PROMOTE_WITHIN};
use super::identity::Identity;
use super::messages::{self as rpc, Adopt, Hello, Join, Joining, Passed};
use super::replicator::{Member, RaftReplicator, Shared};
use super::types::{NodeId, ReplicaNode};
use crate::error::{ErrorKind, ReplicationError, TransportError};
use crate::journal::Machine;
use crate::replication::rpc::call;
use crate::replication::{MemberChange, MemberInfo, MemberRole, Members};

/// openraft's refusal of a membership change, for the operator.
fn change_refused(
    err: RaftError<NodeId, ClientWriteError<NodeId, ReplicaNode>>,
) -> ReplicationError {
    match err {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(err)) => {
            ReplicationError::refused(ErrorKind::Unprocessable, err.to_string())
        }
        other => ReplicationError::unavailable(other),
    }
}

/// Waits at most `limit` for a membership change that runs in its own task
/// (a caller that gives up must not leave the cluster in a joint config).
async fn settle(
    change: JoinHandle<Result<(), ReplicationError>>,
    limit: Duration,
) -> Result<(), ReplicationError> {
    match tokio::time::timeout(limit, change).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => Err(ReplicationError::unavailable(err)),
        Err(_) => Err(ReplicationError::refused(
            ErrorKind::Unavailable,
            "the change is not committed yet; it goes on: list the members to follow it".to_owned(),
        )),
    }
}

/// What a peer's refusal means here: its kind kept, so that an operator's
/// request forwarded to the leader answers as the leader did.
pub(super) fn forwarded(err: TransportError) -> ReplicationError {
    match err {
        TransportError::Refused { kind, message, .. } => ReplicationError::refused(kind, message),
        other => ReplicationError::unavailable(other),
    }
}

/// How long a voter has to answer before a removal counts it as away.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// How often a replica looks for a joint configuration to finish.
const FINISH_EVERY: Duration = Duration::from_secs(1);
/// How long a joint configuration is left to the change that made it
/// before the leader finishes it.
const FINISH_AFTER: Duration = Duration::from_secs(2);

impl<M: Machine> Shared<M> {
    /// For the replica's life, as leader: finishes a membership change
    /// left in its joint configuration. openraft makes a change in two
    /// steps (the joint configuration, then the new one) inside the call
    /// that asked for it; a leader that steps down between them ends that
    /// call, and the next leader would keep the joint configuration, which
    /// blocks every change after it. So a leader that finds the same
    /// joint configuration for [`FINISH_AFTER`] makes its new half the
    /// membership.
    pub(super) async fn finish_changes_forever(&self) {
        let Some(member) = self.member() else {
            return;
        };
        let mut seen: Option<(LogId<NodeId>, tokio::time::Instant)> = None;
        loop {
            tokio::time::sleep(FINISH_EVERY).await;
            let metrics = member.metrics();
            let leads = metrics.current_leader == Some(member.identity.id);
            let stored = &metrics.membership_config;
            let joint = stored.membership().get_joint_config();
            let (Some(log_id), Some(goal), true, true) =
                (stored.log_id(), joint.last(), joint.len() > 1, leads)
            else {
                seen = None;
                continue;
            };
            let since = match seen {
                Some((seen_id, since)) if seen_id == *log_id => since,
                _ => {
                    seen = Some((*log_id, tokio::time::Instant::now()));
                    continue;
                }
            };
            if since.elapsed() < FINISH_AFTER {
                continue;
            }
            tracing::info!(voters = ?goal, "finishing a membership change left joint");
            let change = member.raft.change_membership(goal.clone(), false);
            match tokio::time::timeout(self.config.write_timeout, change).await {
                Ok(Ok(_)) => tracing::info!("the membership change is finished"),
                Ok(Err(err)) => tracing::info!(%err, "the membership change is not finished yet"),
                Err(_) => tracing::info!("the membership change is not committed yet"),
            }
            seen = None;
        }
    }
}

impl<M: Machine> RaftReplicator<M> {
    /// The membership, after the change `asked` carries if it carries one:
    /// on the leader, or passed on toward it (at most
    /// [`rpc::MAX_HOPS`] times in all).
    pub(super) async fn membership(
        &self,
        asked: Passed<Option<MemberChange>>,
    ) -> Result<Members, ReplicationError> {
        if let Some(change) = &asked.request {
            change
                .validate()
                .map_err(|message| ReplicationError::Refused {
                    kind: crate::ErrorKind::BadRequest,
                    message,
                })?;
        }
        let limit = self.shared.config.write_timeout;
        // The leader's own wait, and the answer's way back.
        let within = limit + limit / 2;
        let member = self.member()?;
        if member.node(member.identity.id).is_none() {
            return self.ask_the_members(member, &asked, within).await;
        }
        let deadline = tokio::time::Instant::now() + limit;
        let (member, leader) = loop {
            let (member, leader) = self.await_leader(deadline).await?;
            if leader == member.identity.id || member.node(leader).is_some() {
                break (member, leader);
            }
            // The leader was just removed: the others elect another.
            self.await_other_leader(member, leader, deadline).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(ReplicationError::unavailable("no leader among the members"));
            }
        };
        if leader != member.identity.id {
            let passed = asked.again_or_refuse()?;
            return self
                .call_leader_within(member, leader, rpc::MEMBERS, &passed, within)
                .await
                .map_err(forwarded);
        }
        match asked.request {
            None => {}
            Some(MemberChange::Add { name, url }) => {
                self.shared.add(member, &name, &url, limit).await?;
            }
            Some(MemberChange::Remove { name, force }) => {
                if !force {
                    self.shared
                        .keeps_a_majority_answering(member, &name)
                        .await?;
                }
                member.remove(&name, limit).await?
            }
        }
        Ok(member.members())
    }

    /// On a replica that is not a member (removed, or not added yet):
    /// passes an operator's request to the members it knows of, in turn,
    /// until one answers.
    async fn ask_the_members(
        &self,
        member: &Member<M>,
        asked: &Passed<Option<MemberChange>>,
        within: Duration,
    ) -> Result<Members, ReplicationError> {
        let passed = asked.again_or_refuse()?;
        let members = member.members();
        let mut last = ReplicationError::unavailable(format!(
            "{} is not a member of its service, and knows no member to ask",
            self.shared.config.node
        ));
        for other in &members.members {
            let Some(name) = self.shared.reach(member, other.id) else {
                continue;
            };
            let transport = &*self.shared.transport;
            match call(transport, &name, rpc::MEMBERS, &passed, within).await {
                Ok(answer) => return Ok(answer),
                Err(err @ crate::TransportError::Unreachable { .. }) => last = forwarded(err),
                Err(err) => return Err(forwarded(err)),
            }
        }
        Err(last)
    }
}

impl<M: Machine> Shared<M> {
    /// On the leader, before replica `name` is removed: refuses it
    /// (conflict) unless a majority of the voters that would be left
    /// answer now (this replica, and those that answer a hello within
    /// [`ANSWER_WITHIN`]), as etcd's strict reconfiguration check does. A
    /// change that leaves fewer could not commit: its joint configuration
    /// would stay, and block every other change, until enough came back.
    async fn keeps_a_majority_answering(
        &self,
        member: &Member<M>,
        name: &str,
    ) -> Result<(), ReplicationError> {
        let metrics = member.metrics();
        let membership = metrics.membership_config.membership();
        let left: Vec<NodeId> = membership
            .voter_ids()
            .filter(|id| {
                membership
                    .get_node(id)
                    .is_some_and(|node| node.name != name)
            })
            .collect();
        if left.is_empty() {
            // The last voter: `Member::remove` says why not.
            return Ok(());
        }
        let asks = left.iter().map(|&id| async move {
            if id == member.identity.id {
                return true;
            }
            let Some(peer) = self.reach(member, id) else {
                return false;
            };
            call::<_, Hello>(&*self.transport, &peer, rpc::HELLO, &(), ANSWER_WITHIN)
                .await
                .is_ok()
        });
        let answering = join_all(asks).await.into_iter().filter(|a| *a).count();
        let needed = left.len() / 2 + 1;
        if answering >= needed {
            return Ok(());
        }
        Err(ReplicationError::refused(
            ErrorKind::Conflict,
            format!(
                "removing {name} would leave {answering} of its {} voters answering, and a \
                 majority ({needed}) must for the change to commit: bring the others back \
                 first, or force it (docs/operations.md)",
                left.len()
            ),
        ))
    }

    /// Whether the topology this replica started with names `name`.
    pub(super) fn in_topology(&self, name: &str) -> bool {
        self.config.replicas.iter().any(|r| r == name)
    }

    /// On the leader: adds replica `name`, running at `url`, as a learner
    /// (it asks to be made a voter once it has caught up), waiting at most
    /// `limit` for the change to commit. Adding a member again is a no-op.
    pub(super) async fn add(
        &self,
        member: &Member<M>,
        name: &str,
        url: &str,
        limit: Duration,
    ) -> Result<(), ReplicationError> {
        let metrics = member.metrics();
        let membership = metrics.membership_config.membership();
        if let Some((_, node)) = membership.nodes().find(|(_, node)| node.name == name) {
            return match &node.url {
                Some(known) if known != url => Err(ReplicationError::refused(
                    ErrorKind::Unprocessable,
                    format!("{name} is a member at {known}: remove it first"),
                )),
                _ => Ok(()),
            };
        }
        self.transport
            .learn(name, url)
            .map_err(|err| ReplicationError::refused(ErrorKind::BadRequest, err.to_string()))?;
        let hello: Hello = call(&*self.transport, name, rpc::HELLO, &(), ASK_TIMEOUT)
            .await
            .map_err(|err| {
                ReplicationError::refused(
                    ErrorKind::Unavailable,
                    format!("{name} at {url} does not answer (is it running?): {err}"),
                )
            })?;
        let ours = &member.identity.cluster;
        let identity = match hello.identity {
            Some(theirs) => theirs,
            None => {
                // Not settled yet: it takes a joining identity of ours
                // (unless it settled meanwhile: it answers the one it has).
                let adopt = Adopt {
                    identity: Identity::joining(ours),
                };
                call::<_, Identity>(&*self.transport, name, rpc::ADOPT, &adopt, ASK_TIMEOUT)
                    .await
                    .map_err(|err| {
                        ReplicationError::refused(
                            ErrorKind::Unavailable,
                            format!("{name} at {url}: {err}"),
                        )
                    })?
            }
        };
        if &identity.cluster != ours {
            return Err(ReplicationError::refused(
                ErrorKind::Unprocessable,
                format!(
                    "{name} belongs to another cluster ({}): start it over an empty data directory",
                    identity.cluster
                ),
            ));
        }
        if membership.get_node(&identity.id).is_some() {
            return Err(ReplicationError::refused(
                ErrorKind::Unprocessable,
                format!("{name}'s raft id {} is another member's", identity.id),
            ));
        }
        tracing::info!(%name, %url, id = identity.id, "adding a member, as a learner");
        let raft = member.raft.clone();
        let node = ReplicaNode {
            name: name.to_owned(),
            url: Some(url.to_owned()),
        };
        let change = tokio::spawn(
            async move {
                raft.add_learner(identity.id, node, false)
                    .await
                    .map(|_| ())
                    .map_err(change_refused)
            }
            .in_current_span(),
        );
        settle(change, limit).await
    }
}

impl<M: Machine> Member<M> {
    /// The membership as an operator reads it.
    pub(super) fn members(&self) -> Members {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leads = metrics.current_leader == Some(self.identity.id);
        let mut members: Vec<MemberInfo> = membership
            .nodes()
            .map(|(id, node)| MemberInfo {
                name: node.name.clone(),
                id: *id,
                role: if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                },
                leader: metrics.current_leader == Some(*id),
                url: node.url.clone(),
                matched: if leads && *id == self.identity.id {
                    metrics.last_log_index
                } else {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten())
                        .map(|log_id| log_id.index)
                },
            })
            .collect();
        members.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
        Members {
            cluster: self.identity.cluster.clone(),
            leader: metrics.current_leader.and_then(|id| self.name(id)),
            last_log: metrics.last_log_index,
            changing: membership.get_joint_config().len() > 1,
            members,
        }
    }

    /// On the leader: removes every member named `name` (a voter, through
    /// joint consensus, or a learner), waiting at most `limit` for the
    /// change to commit.
    pub(super) async fn remove(&self, name: &str, limit: Duration) -> Result<(), ReplicationError> {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let ids: BTreeSet<NodeId> = membership
            .nodes()
            .filter(|(_, node)| node.name == name)
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Err(ReplicationError::refused(
                ErrorKind::NotFound,
                format!("{name} is not a member of this cluster"),
            ));
        }
        if membership.get_joint_config().len() > 1 {
            return Err(ReplicationError::refused(
                ErrorKind::Unavailable,
                "a membership change is under way: try again once it is done".to_owned(),
            ));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leaving: BTreeSet<NodeId> = ids.intersection(&voters).copied().collect();
        let learners: BTreeSet<NodeId> = ids.difference(&voters).copied().collect();
        if !leaving.is_empty() && leaving.len() == voters.len() {
            return Err(ReplicationError::refused(
                ErrorKind::Unprocessable,
                format!("{name} is the last voter: a service needs one"),
            ));
        }
        tracing::info!(%name, ?ids, "removing a member");
        let raft = self.raft.clone();
        let change = tokio::spawn(
            async move {
                if !leaving.is_empty() {
                    raft.change_membership(ChangeMembers::RemoveVoters(leaving), false)
                        .await
                        .map_err(change_refused)?;
                }
                if !learners.is_empty() {
                    raft.change_membership(ChangeMembers::RemoveNodes(learners), false)
                        .await
                        .map_err(change_refused)?;
                }
                Ok(())
            }
            .in_current_span(),
        );
        settle(change, limit).await
    }

    /// On the leader, takes a step of `join`: adds the replica as a
    /// learner, or, once it has caught up, makes it a voter in place of any
    /// other id of the same name. A replica joins only under a name the
    /// membership has (it lost its disk, or an operator added it) or that
    /// the topology names (`in_topology`: it missed the founding).
    pub(super) async fn join(
        &self,
        join: &Join,
        in_topology: bool,
    ) -> Result<Joining, ReplicationError> {
        if join.cluster != self.identity.cluster {
            return Err(ReplicationError::Invalid(format!(
                "a join of cluster {}; this is {}",
                join.cluster, self.identity.cluster
            )));
        }
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let stale: BTreeSet<NodeId> = membership
            .nodes()
            .filter(|(id, node)| **id != join.id && node.name == join.name)
            .map(|(id, _)| *id)
            .collect();
        let uniform = membership.get_joint_config().len() == 1;
        if uniform && voters.contains(&join.id) && stale.iter().all(|id| !voters.contains(id)) {
            return Ok(Joining::Voter);
        }
        // A membership change outlives the call that asked for it (a caller
        // that gives up must not leave the cluster in a joint config): it
        // runs in its own task, and the caller asks again for its outcome.
        let raft = self.raft.clone();
        if membership.get_node(&join.id).is_none() {
            // Its address stays what the membership said of its name.
            let known = membership
                .nodes()
                .find(|(_, node)| node.name == join.name)
                .map(|(_, node)| node.clone());
            if known.is_none() && !in_topology {
                return Err(ReplicationError::refused(
                    ErrorKind::Unprocessable,
                    format!(
                        "{} is not a member of this cluster: add it with `pygmy-client members add`",
                        join.name
                    ),
                ));
            }
            tracing::info!(name = %join.name, id = join.id, "adding a learner");
            let node = known.unwrap_or_else(|| ReplicaNode::named(&join.name));
            let id = join.id;
            tokio::spawn(
                async move {
                    if let Err(err) = raft.add_learner(id, node, false).await {
                        tracing::info!(%err, "the learner was not added");
                    }
                }
                .in_current_span(),
            );
            return Ok(Joining::CatchingUp);
        }
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&join.id).copied().flatten())
            .map_or(0, |log_id| log_id.index);
        let last = metrics.last_log_index.unwrap_or(0);
        if matched + PROMOTE_WITHIN < last {
            return Ok(Joining::CatchingUp);
        }
        let mut next: BTreeSet<NodeId> = voters.difference(&stale).copied().collect();
        next.insert(join.id);
        tracing::info!(name = %join.name, id = join.id, replaced = ?stale, "making a learner a voter");
        tokio::spawn(
            async move {
                if let Err(err) = raft.change_membership(next, false).await {
                    tracing::info!(%err, "the membership was not changed");
                }
            }
            .in_current_span(),
        );
        Ok(Joining::CatchingUp)
    }
}
