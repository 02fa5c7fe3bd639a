//! Catch-up: a replica that starts pulls from its peers what it missed,
//! tells the lower-ranked ones it is back, pulls their last writes, and
//! only then serves.

use std::collections::HashMap;
use std::sync::Arc;

use super::messages::{self as rpc, EntriesRequest, ResumeRequest};
use super::{Phase, Shared};
use crate::error::ReplicationError;
use crate::journal::{Entry, HighWater, Machine};

impl<M: Machine> Shared<M> {
    /// Catches up, hands the writes back, catches up again, serves.
    pub(super) async fn start_up(self: Arc<Self>) {
        self.catch_up().await;
        self.phase.send_replace(Phase::Resuming);
        let request = ResumeRequest {
            from: self.config.node.clone(),
        };
        for peer in self.progress.keys() {
            if let Err(err) = self.call::<_, ()>(peer, rpc::RESUME, &request).await {
                tracing::debug!(%peer, %err, "could not tell a peer we are back");
            }
        }
        // What the others wrote until they heard of us; from now on they
        // ship us their new ops and wait for our acks.
        self.catch_up().await;
        self.phase.send_replace(Phase::Ready);
        tracing::info!(origin = %self.origin, "caught up; serving");
    }

    /// Pulls from every reachable peer the ops this replica lacks.
    pub(super) async fn catch_up(&self) {
        for peer in self.progress.keys() {
            if let Err(err) = self.catch_up_from(peer).await {
                tracing::warn!(%peer, %err, "cannot catch up from a peer; going on");
            }
        }
    }

    pub(super) async fn catch_up_from(&self, peer: &str) -> Result<(), ReplicationError> {
        let theirs: Vec<HighWater> = self
            .call(peer, rpc::HIGH_WATERS, &())
            .await
            .map_err(|e| ReplicationError::Unavailable(e.to_string()))?;
        let ours: HashMap<String, u64> = self
            .journal
            .high_waters()
            .await?
            .into_iter()
            .map(|hw| (hw.origin, hw.seq))
            .collect();
        for HighWater { origin, seq } in theirs {
            let mut after = ours.get(&origin).copied().unwrap_or(0);
            while after < seq {
                let request = EntriesRequest {
                    origin: origin.clone(),
                    after,
                    limit: self.config.batch,
                };
                let entries: Vec<Entry<M::Command>> = self
                    .call(peer, rpc::ENTRIES, &request)
                    .await
                    .map_err(|e| ReplicationError::Unavailable(e.to_string()))?;
                let Some(last) = entries.last().map(|e| e.origin_seq) else {
                    break;
                };
                self.apply_shipped(entries).await?;
                after = last;
            }
            if after > 0 {
                tracing::info!(%peer, %origin, upto = after, "caught up");
            }
        }
        Ok(())
    }

    /// This replica's high-water mark for `origin`.
    pub(super) async fn high_water(&self, origin: &str) -> Result<u64, ReplicationError> {
        Ok(self
            .journal
            .high_waters()
            .await?
            .into_iter()
            .find(|hw| hw.origin == origin)
            .map_or(0, |hw| hw.seq))
    }

    /// Applies a batch of a peer's entries in one transaction; returns the
    /// `origin_seq` of the last (0 for none).
    pub(super) async fn apply_shipped(
        &self,
        entries: Vec<Entry<M::Command>>,
    ) -> Result<u64, ReplicationError> {
        let last = entries.last().map_or(0, |e| e.origin_seq);
        self.journal.apply_entries(entries).await?;
        Ok(last)
    }
}
