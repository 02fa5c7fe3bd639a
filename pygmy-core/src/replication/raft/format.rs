//! Entry formats, and how a service moves to a newer one while its
//! replicas run builds of different ages (a rolling upgrade).
//!
//! A *format* says how the entries of a raft log are framed. Each build
//! reads a range of formats ([`Reads`]) and a service writes one, its
//! *cluster format* ([`Written`]): a replicated value, raised by an entry
//! of its own, as etcd raises its cluster version. The rule that keeps a
//! rolling upgrade safe: **a leader writes a format only once every
//! member reads it.** So an older replica never meets an entry it cannot
//! read, however the upgrade goes.
//!
//! - The leader asks every member (voters and learners) the formats it
//!   reads ([`crate::replication::raft::messages::FORMATS`]), every
//!   [`RAISE_EVERY`]. Once every member answered, each reading a newer
//!   format than the service writes, it proposes the newest format they
//!   all read as an entry of its own ([`crate::replication::raft::Proposal::raise`]).
//!   A member that does not answer (down, cut off, or a build before
//!   formats were asked) holds the format where it is.
//! - Every replica keeps the format it applied in its journal's meta, and
//!   writes in it when it leads. A replica that installs a snapshot keeps
//!   the format it had (a snapshot does not carry it): as leader it writes
//!   an older format, which every member reads, until the next raise.
//! - A raise is never undone: a replica whose data is at a format its
//!   build does not read refuses to start (a downgrade after the raise).
//!
//! The formats so far:
//!
//! | format | an entry is | written by |
//! |---|---|---|
//! | [`ONE_OP`] (1) | one op and its leader's stamp | builds before group commit |
//! | [`GROUPED`] (2) | ops grouped (none: a tick), the stamp, and a raise | builds since |
//!
//! A replica started with `max_format` (`pygmy-server --max-format`)
//! reads no newer format than that, as a build that knows no newer would:
//! it refuses an append that holds a newer entry. An operator keeps a way
//! back to an older build with it while the newer one proves itself; the
//! rolling-upgrade test starts a service so, then upgrades it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::{Entry, EntryPayload};
use serde::{Deserialize, Serialize};

use super::config::ASK_TIMEOUT;
use super::messages as rpc;
use super::replicator::{Member, Shared};
use super::types::{Proposal, RaftTypes};
use crate::error::ReplicationError;
use crate::journal::Machine;
use crate::replication::rpc::call;

/// A format number.
pub type Format = u32;

/// An entry is one op with its leader's stamp ([`super::Stamped`]), as
/// builds before group commit wrote it.
pub const ONE_OP: Format = 1;
/// An entry holds the ops of a group commit (none: a tick), the leader's
/// stamp, and possibly a raise of the format.
pub const GROUPED: Format = 2;

/// The oldest format this build reads.
pub const OLDEST: Format = ONE_OP;
/// The newest format this build reads and writes.
pub const NEWEST: Format = GROUPED;

/// How often a leader asks its members the formats they read, while the
/// service writes an older format than it reads itself.
pub const RAISE_EVERY: Duration = Duration::from_secs(1);

/// The journal meta key of the format a replica applied last.
pub const META_KEY: &str = "raft_format";

/// The formats a replica reads, and the format its service writes as far
/// as it applied: what the `raft-formats` call answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formats {
    /// The oldest format it reads.
    pub oldest: Format,
    /// The newest format it reads.
    pub newest: Format,
    /// The format its service writes, as this replica applied it.
    pub writes: Format,
}

impl Default for Formats {
    /// This build's, in a store that never applied a raise.
    fn default() -> Self {
        Formats {
            oldest: OLDEST,
            newest: NEWEST,
            writes: OLDEST,
        }
    }
}

/// The formats a replica reads: this build's, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// The oldest.
    pub oldest: Format,
    /// The newest.
    pub newest: Format,
}

impl Reads {
    /// This build's formats, the newest at most `max` (a replica started
    /// to read no newer); `None` if `max` is older than this build reads.
    pub fn capped(max: Format) -> Option<Reads> {
        (max >= OLDEST).then(|| Reads {
            oldest: OLDEST,
            newest: max.min(NEWEST),
        })
    }

    /// Whether `format` is one of them.
    pub fn reads(&self, format: Format) -> bool {
        (self.oldest..=self.newest).contains(&format)
    }
}

/// The format a service writes, as one replica applied it: set by the
/// state machine as it applies a raise, read by the leader's writer for
/// every entry. Starts at [`OLDEST`] in a store that never applied a raise
/// (a new one, or one written by a build before formats were kept).
#[derive(Debug)]
pub struct Written(AtomicU32);

impl Default for Written {
    fn default() -> Self {
        Written(AtomicU32::new(OLDEST))
    }
}

impl Written {
    /// At `format`.
    pub fn at(format: Format) -> Arc<Written> {
        Arc::new(Written(AtomicU32::new(format)))
    }

    /// The format the service writes.
    pub fn get(&self) -> Format {
        self.0.load(Ordering::Acquire)
    }

    /// Applied a raise to `format` (never lower: a raise is not undone).
    pub fn raise(&self, format: Format) {
        self.0.fetch_max(format, Ordering::AcqRel);
    }
}

/// A state machine that keeps the format its service writes.
pub trait KeepsFormat {
    /// The format it applied, shared with the replica's writer.
    fn written(&self) -> Arc<Written>;
}

/// The format a leader raises its service to, from what each member
/// answered (`None`: a member did not say), or `None` if it stays.
pub fn raise_to(writes: Format, members: &[Option<Formats>]) -> Option<Format> {
    let mut target = Format::MAX;
    for member in members {
        let member = (*member)?;
        if member.oldest > writes {
            // It reads nothing older than it: it should not be a member.
            return None;
        }
        target = target.min(member.newest);
    }
    (target != Format::MAX && target > writes).then_some(target)
}

impl<M: Machine> Shared<M> {
    /// The formats this replica reads, and the one its service writes.
    pub(super) fn formats(&self) -> Formats {
        Formats {
            oldest: self.reads.oldest,
            newest: self.reads.newest,
            writes: self.written.get(),
        }
    }

    /// Refuses an append that holds an entry in a format this replica
    /// does not read, or a raise to one, as a build that knows no such
    /// format would (it could not decode the append).
    pub(super) fn check_formats(
        &self,
        entries: &[Entry<RaftTypes<M>>],
    ) -> Result<(), ReplicationError> {
        for entry in entries {
            let EntryPayload::Normal(proposal) = &entry.payload else {
                continue;
            };
            let raise = proposal.raise.unwrap_or(proposal.format);
            if !self.reads.reads(proposal.format) || !self.reads.reads(raise) {
                return Err(ReplicationError::Invalid(format!(
                    "entry {} is in format {} (raising to {raise}), and this replica reads formats {} to {}",
                    entry.log_id.index, proposal.format, self.reads.oldest, self.reads.newest
                )));
            }
        }
        Ok(())
    }

    /// For the replica's life: whenever it leads a service that writes an
    /// older format than every member reads, raises it (see the module's
    /// docs). The first look is at once: a new service's first leader
    /// raises it as soon as its members answer.
    pub(super) async fn raise_format_forever(&self) {
        let Some(member) = self.member() else {
            return;
        };
        loop {
            self.raise_format(member).await;
            tokio::time::sleep(RAISE_EVERY).await;
        }
    }

    /// Raises the format once, if this replica leads and every member
    /// reads a newer one than its service writes.
    async fn raise_format(&self, member: &Member<M>) {
        let writes = self.written.get();
        let metrics = member.metrics();
        if metrics.current_leader != Some(member.identity.id) || writes >= self.reads.newest {
            return;
        }
        let ids: Vec<_> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        let mut answers = Vec::with_capacity(ids.len());
        for id in ids {
            answers.push(self.formats_of(member, id).await);
        }
        let Some(format) = raise_to(writes, &answers) else {
            return;
        };
        tracing::info!(
            from = writes,
            to = format,
            "every member reads a newer entry format: raising it"
        );
        let raise = member.raft.client_write(Proposal::raise(format));
        match tokio::time::timeout(self.config.write_timeout, raise).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::info!(%err, "the format is not raised yet"),
            Err(_) => tracing::info!("the raise of the format is not committed yet"),
        }
    }

    /// What member `id` says it reads (this replica's own, for itself);
    /// `None` if it does not say.
    async fn formats_of(&self, member: &Member<M>, id: super::NodeId) -> Option<Formats> {
        if id == member.identity.id {
            return Some(self.formats());
        }
        let name = self.reach(member, id)?;
        match call(&*self.transport, &name, rpc::FORMATS, &(), ASK_TIMEOUT).await {
            Ok(formats) => Some(formats),
            Err(err) => {
                tracing::debug!(member = %name, %err, "no formats from a member");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(oldest: Format, newest: Format) -> Option<Formats> {
        Some(Formats {
            oldest,
            newest,
            writes: ONE_OP,
        })
    }

    #[test]
    fn a_leader_raises_to_the_newest_format_every_member_reads() {
        assert_eq!(
            raise_to(1, &[reads(1, 2), reads(1, 2), reads(1, 2)]),
            Some(2)
        );
        assert_eq!(
            raise_to(1, &[reads(1, 3), reads(1, 2), reads(1, 3)]),
            Some(2)
        );
    }

    #[test]
    fn one_member_that_reads_no_newer_or_does_not_say_holds_it() {
        assert_eq!(raise_to(1, &[reads(1, 2), reads(1, 1), reads(1, 2)]), None);
        assert_eq!(raise_to(1, &[reads(1, 2), None, reads(1, 2)]), None);
        assert_eq!(raise_to(2, &[reads(1, 2), reads(1, 2)]), None);
        assert_eq!(raise_to(1, &[]), None);
    }

    #[test]
    fn a_raise_is_never_undone() {
        let written = Written::at(GROUPED);
        written.raise(ONE_OP);
        assert_eq!(written.get(), GROUPED);
    }

    #[test]
    fn a_cap_below_this_build_is_refused() {
        assert_eq!(Reads::capped(0), None);
        assert_eq!(
            Reads::capped(1),
            Some(Reads {
                oldest: 1,
                newest: 1
            })
        );
        assert_eq!(Reads::capped(9).map(|r| r.newest), Some(NEWEST));
    }
}
