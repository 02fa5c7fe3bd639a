//! The shipper: each replica sends its own ops to each peer from its
//! journal, in order and in batches, from the peer's high-water mark,
//! forever, backing off while the peer is down.

use std::sync::Arc;
use std::time::Duration;

use super::messages::{self as rpc, ShipAck, ShipRequest};
use super::{PeerProgress, Shared, MIN_RETRY};
use crate::error::TransportError;
use crate::journal::{HighWater, Machine};

/// Why a shipment failed: our journal, or the peer.
enum ShipError {
    Local(crate::error::StoreError),
    Peer(TransportError),
}

impl From<TransportError> for ShipError {
    fn from(err: TransportError) -> Self {
        ShipError::Peer(err)
    }
}

impl<M: Machine> Shared<M> {
    /// Ships this replica's ops to `peer`, forever: from the peer's
    /// high-water mark, in batches, retrying with back-off while it is down.
    pub(super) async fn ship_to(self: Arc<Self>, peer: String) {
        let Some(progress) = self.progress.get(&peer) else {
            return;
        };
        let me = self.origin.clone();
        let mut acked: Option<u64> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            // Register interest before reading, so a commit in between wakes us.
            let committed = self.committed.notified();
            let step = async {
                let from = match acked {
                    Some(seq) => seq,
                    None => {
                        let theirs: Vec<HighWater> =
                            self.call(&peer, rpc::HIGH_WATERS, &()).await?;
                        theirs
                            .into_iter()
                            .find(|hw| hw.origin == me)
                            .map_or(0, |hw| hw.seq)
                    }
                };
                let entries = self
                    .journal
                    .entries(&me, from, self.config.batch)
                    .await
                    .map_err(ShipError::Local)?;
                if entries.is_empty() {
                    return Ok::<_, ShipError>((from, false));
                }
                let ack: ShipAck = self
                    .call(&peer, rpc::SHIP, &ShipRequest { entries })
                    .await?;
                Ok((ack.high_water, true))
            };
            match step.await {
                Ok((high, shipped)) => {
                    acked = Some(high);
                    backoff = Duration::from_millis(50);
                    progress.send_replace(PeerProgress {
                        acked: high,
                        up: true,
                    });
                    if !shipped {
                        // Wait for a new op, or re-check now and then.
                        let _ = tokio::time::timeout(Duration::from_secs(1), committed).await;
                    }
                }
                Err(ShipError::Local(err)) => {
                    // Our own journal failed: the peer is not to blame.
                    tracing::error!(%err, "cannot read the journal to ship");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(ShipError::Peer(err)) => {
                    if progress.borrow().up {
                        tracing::warn!(%peer, %err, "peer unreachable; will resend when it is back");
                    }
                    acked = None;
                    progress.send_modify(|p| p.up = false);
                    // Retry after the back-off, or sooner when there is a new
                    // op to deliver, but never more often than MIN_RETRY.
                    let retry_at = tokio::time::Instant::now() + MIN_RETRY;
                    let _ = tokio::time::timeout(backoff, self.committed.notified()).await;
                    tokio::time::sleep_until(retry_at).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
