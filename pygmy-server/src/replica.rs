//! What the handlers of a backend replica (catalog or order) share: the
//! replicator behind them, readiness, fresh reads, and serving the peers'
//! replication calls.

use std::sync::Arc;

use http::StatusCode;
use pygmy_core::api::routes::MemberRoute;
use pygmy_core::api::{Envelope, MembersResponse, NewMember};
use pygmy_core::journal::{Machine, Op};
use pygmy_core::replication::{MemberChange, Replicator};

use crate::http::{json, json_bytes, ApiError, ApiResult, Identity, Request};

/// One replica of a backend service, as its handler uses it.
pub struct Replica<M: Machine> {
    identity: Identity,
    replicator: Arc<dyn Replicator<M>>,
}

impl<M: Machine> Clone for Replica<M> {
    fn clone(&self) -> Self {
        Replica {
            identity: self.identity.clone(),
            replicator: Arc::clone(&self.replicator),
        }
    }
}

impl<M: Machine> Replica<M> {
    /// Node `identity`, replicated by `replicator`.
    pub fn new(identity: Identity, replicator: Arc<dyn Replicator<M>>) -> Self {
        Replica {
            identity,
            replicator,
        }
    }

    /// Who the node is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether it serves (not while it catches up).
    pub fn is_ready(&self) -> bool {
        self.replicator.is_ready()
    }

    /// Ok once it serves; 503 while it catches up.
    pub fn ensure_ready(&self) -> Result<(), ApiError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(ApiError::unavailable(format!(
                "{} is catching up with its peers",
                self.identity.name
            )))
        }
    }

    /// Ok once it serves and has applied every change acknowledged before:
    /// a read of the store that follows is fresh.
    pub async fn ready_to_read(&self) -> Result<(), ApiError> {
        self.ensure_ready()?;
        self.replicator.linearize().await?;
        Ok(())
    }

    /// Applies `op` through the replicator (the caller checked that the
    /// replica serves).
    pub async fn propose(&self, op: Op<M::Command>) -> Result<M::Outcome, ApiError> {
        Ok(self.replicator.propose(op).await?)
    }

    /// `/members` (internal, token already checked): the membership, or a
    /// change of it.
    pub async fn members_call(&self, route: MemberRoute, req: &Request) -> ApiResult {
        let members = match route {
            MemberRoute::List => self.replicator.members().await?,
            MemberRoute::Add => {
                let NewMember { name, url } = req.json()?;
                let change = MemberChange::Add { name, url };
                self.replicator.change_members(change).await?
            }
            MemberRoute::Remove(name) => {
                let change = MemberChange::Remove { name };
                self.replicator.change_members(change).await?
            }
        };
        let answer = MembersResponse {
            members,
            envelope: Envelope::OK,
        };
        Ok(json(StatusCode::OK, &answer))
    }

    /// `POST /replication/<rpc>` (internal, token already checked): a
    /// peer's call to the replicator.
    pub async fn replication_call(&self, rpc: &str, req: &Request) -> ApiResult {
        let answer = self.replicator.handle(rpc, &req.body).await?;
        Ok(json_bytes(StatusCode::OK, answer.into()))
    }
}
