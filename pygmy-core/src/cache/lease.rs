//! Leases that keep a frontend's cache fresh when an invalidation is lost.
//!
//! A catalog replica pushes the invalidation of each change to every
//! frontend before it answers the change. A push can be lost (a frontend
//! cut off, or frozen past the push's time limit), and the change is
//! answered all the same. So a frontend serves from its cache only while it
//! holds a lease from every catalog replica:
//! - The frontend asks each catalog replica for a grant every
//!   [`RENEW_EVERY`]: the replica's incarnation and how many invalidations
//!   it has numbered for this frontend. The lease runs [`LEASE`] from when
//!   the frontend *sent* the request.
//! - A grant renews the lease only if the frontend has applied every
//!   invalidation it counts. One that counts an invalidation not yet here
//!   waits (it may be on its way); if the gap is still open at the next
//!   grant, the frontend clears its cache and takes the grant.
//! - A lease renewed after it lapsed clears the cache first: invalidations
//!   were perhaps skipped meanwhile. So does the first lease from a new
//!   incarnation of a replica (it restarted): its last one may have
//!   stopped between a change and its push.
//! - The catalog replica, when a push fails, answers the change only once
//!   the frontend's lease from it has surely run out: [`LEASE`] plus
//!   [`LEASE_MARGIN`] after its last grant to that frontend. A frontend
//!   whose lease ran out long ago is not pushed to at all.
//! - Under `raft` a grant also tells the catalog's membership: a frontend
//!   needs leases from the members of the newest one it was told of
//!   ([`Leases::learn`]), so a replica added at run time is among them. A
//!   replica counts as having granted when it first serves a change under
//!   a new membership ([`LeaseIssuer::assume_granted`]): until the
//!   frontend's leases from before have run out, it is pushed to.
//!
//! So once a change is answered, a frontend either applied its
//! invalidation, or holds no lease that was granted before it (and clears
//! its cache before its next). This module holds both sides' bookkeeping
//! as plain state machines with the clock passed in: [`Leases`], the
//! frontend's, and [`LeaseIssuer`], a catalog replica's for one frontend.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How long a grant lets a frontend serve from its cache.
pub const LEASE: Duration = Duration::from_millis(1_500);

/// How often a frontend asks each catalog replica for a grant: several
/// times within a [`LEASE`], so that one late grant does not let it lapse.
pub const RENEW_EVERY: Duration = Duration::from_millis(250);

/// How long a frontend waits for a grant before it asks again at the next
/// renewal.
pub const RENEW_TIMEOUT: Duration = Duration::from_millis(300);

/// What a catalog replica adds to [`LEASE`] before it counts a frontend's
/// lease as run out (clocks that tick at slightly different rates).
pub const LEASE_MARGIN: Duration = Duration::from_millis(100);

/// What the frontend must do with a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// The lease is renewed.
    Renewed,
    /// Clear the whole cache, then the lease is renewed.
    ClearThenRenewed,
    /// Not renewed yet: an invalidation it counts has not arrived.
    Waiting,
}

/// What a frontend knows of one catalog replica.
#[derive(Debug, Default)]
struct Source {
    incarnation: String,
    /// Every invalidation numbered up to this one has been applied.
    applied: u64,
    /// Applied invalidations above `applied` (they arrived out of order).
    ahead: BTreeSet<u64>,
    /// The cache may be served until then (as far as this source goes).
    until: Option<Instant>,
    /// The count of a grant that had to wait for its invalidations.
    waiting: Option<u64>,
    /// A new incarnation was met since the last renewal: what the last one
    /// changed may never have been pushed (it stopped between a change and
    /// its push), so the next renewal clears the cache.
    restarted: bool,
}

impl Source {
    /// A new incarnation numbers its invalidations from 1 again, and the
    /// cache is cleared at its first renewal unless this is the first one
    /// met.
    fn meet(&mut self, incarnation: &str) {
        if self.incarnation != incarnation {
            self.restarted |= !self.incarnation.is_empty();
            self.incarnation = incarnation.to_owned();
            self.applied = 0;
            self.ahead.clear();
            self.waiting = None;
        }
    }

    fn absorb(&mut self) {
        // The numbers come from a peer: no overflow at the top.
        while let Some(next) = self.applied.checked_add(1) {
            if !self.ahead.remove(&next) {
                break;
            }
            self.applied = next;
        }
        let applied = self.applied;
        self.ahead.retain(|&seq| seq > applied);
    }
}

/// A frontend's leases, one per catalog replica.
#[derive(Debug)]
pub struct Leases {
    sources: HashMap<String, Source>,
    /// The log index of the newest membership learned, if any.
    members_index: Option<u64>,
}

impl Leases {
    /// No lease yet from any of `sources` (the catalog replicas' names).
    pub fn new(sources: impl IntoIterator<Item = String>) -> Self {
        Leases {
            sources: sources
                .into_iter()
                .map(|name| (name, Source::default()))
                .collect(),
            members_index: None,
        }
    }

    /// The catalog replicas a lease is needed from, in no order.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// A catalog replica told of its membership at log `index`: if it is
    /// newer than any learned, the leases are needed from its members from
    /// now on. A member not known before has granted nothing yet, so the
    /// cache is unused until it grants; one no longer a member is
    /// forgotten. Answers whether the sources changed.
    pub fn learn(&mut self, index: u64, members: impl IntoIterator<Item = String>) -> bool {
        if self.members_index.is_some_and(|known| known >= index) {
            return false;
        }
        self.members_index = Some(index);
        let mut before = std::mem::take(&mut self.sources);
        let mut changed = false;
        for name in members {
            if self.sources.contains_key(&name) {
                continue;
            }
            let source = before.remove(&name).unwrap_or_else(|| {
                changed = true;
                Source::default()
            });
            self.sources.insert(name, source);
        }
        changed || !before.is_empty()
    }

    /// Invalidation `seq` of `source`'s `incarnation` has been applied to
    /// the cache.
    pub fn applied(&mut self, source: &str, incarnation: &str, seq: u64) {
        let Some(s) = self.sources.get_mut(source) else {
            return;
        };
        s.meet(incarnation);
        if seq > s.applied {
            s.ahead.insert(seq);
            s.absorb();
        }
    }

    /// A grant from `source`: it had numbered `issued` invalidations for
    /// this frontend when it answered a request sent at `sent`; `now` is
    /// when the answer is taken.
    pub fn granted(
        &mut self,
        source: &str,
        incarnation: &str,
        issued: u64,
        sent: Instant,
        now: Instant,
    ) -> Grant {
        let Some(s) = self.sources.get_mut(source) else {
            return Grant::Waiting;
        };
        s.meet(incarnation);
        let mut clear = s.until.is_none_or(|until| now >= until);
        if s.applied < issued {
            match s.waiting {
                Some(waited) if s.applied < waited => {
                    // A gap older than one grant: give up on it.
                    clear = true;
                    s.applied = issued;
                    s.absorb();
                }
                _ => {
                    s.waiting = Some(issued);
                    return Grant::Waiting;
                }
            }
        }
        s.waiting = None;
        clear |= std::mem::take(&mut s.restarted);
        let until = sent + LEASE;
        s.until = Some(s.until.map_or(until, |old| old.max(until)));
        if clear {
            Grant::ClearThenRenewed
        } else {
            Grant::Renewed
        }
    }

    /// Until when the cache may be served: the earliest lease, or `None`
    /// while some source has granted none.
    pub fn valid_until(&self) -> Option<Instant> {
        self.sources
            .values()
            .map(|s| s.until)
            .try_fold(None::<Instant>, |earliest, until| {
                let until = until?;
                Some(Some(earliest.map_or(until, |e| e.min(until))))
            })
            .flatten()
    }
}

/// How a catalog replica sends one invalidation to one frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// The frontend's lease from this replica has surely run out: it clears
    /// its cache before it serves from it again, so nothing is sent.
    Skip,
    /// Push it as number `seq`; if that fails, the change may be answered
    /// only at `deadline`, when the frontend's lease has surely run out.
    Send {
        /// The invalidation's number.
        seq: u64,
        /// When the frontend's lease from this replica has surely run out.
        deadline: Instant,
    },
}

/// A catalog replica's bookkeeping of one frontend's cache lease: how many
/// invalidations it numbered for it, and when it last granted a lease.
#[derive(Debug, Clone)]
pub struct LeaseIssuer {
    issued: u64,
    last_granted: Instant,
}

impl LeaseIssuer {
    /// A new incarnation's issuer, at `now`. It counts as having granted at
    /// `now`: the frontend may still hold a lease from this replica's
    /// previous incarnation, granted before this one started.
    pub fn new(now: Instant) -> Self {
        LeaseIssuer {
            issued: 0,
            last_granted: now,
        }
    }

    /// Numbers the next invalidation for the frontend, unless its lease has
    /// surely run out.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use pygmy_core::cache::lease::{LeaseIssuer, Push, LEASE};
    ///
    /// let start = Instant::now();
    /// let mut issuer = LeaseIssuer::new(start);
    /// assert!(matches!(issuer.plan(start), Push::Send { seq: 1, .. }));
    /// assert_eq!(issuer.grant(start), 1);
    /// let long_after = start + LEASE + Duration::from_secs(1);
    /// assert_eq!(issuer.plan(long_after), Push::Skip);
    /// ```
    pub fn plan(&mut self, now: Instant) -> Push {
        let deadline = self.last_granted + LEASE + LEASE_MARGIN;
        if now >= deadline {
            return Push::Skip;
        }
        self.issued += 1;
        Push::Send {
            seq: self.issued,
            deadline,
        }
    }

    /// Counts as having granted at `at` (if later than the last grant):
    /// a frontend may have learned of this replica only then, so until
    /// its leases from before have surely run out, it is pushed to.
    pub fn assume_granted(&mut self, at: Instant) {
        self.last_granted = self.last_granted.max(at);
    }

    /// Grants a lease at `now`: answers how many invalidations were
    /// numbered so far.
    pub fn grant(&mut self, now: Instant) -> u64 {
        self.last_granted = now;
        self.issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Leases {
        Leases::new(["a".to_owned(), "b".to_owned()])
    }

    #[test]
    fn the_cache_is_valid_only_with_a_lease_from_every_source() {
        let mut leases = two();
        let t = Instant::now();
        assert_eq!(leases.valid_until(), None);
        assert_eq!(
            leases.granted("a", "1", 0, t, t),
            Grant::ClearThenRenewed,
            "a first lease clears"
        );
        assert_eq!(leases.valid_until(), None, "none from b yet");
        leases.granted("b", "1", 0, t + LEASE / 2, t + LEASE / 2);
        assert_eq!(leases.valid_until(), Some(t + LEASE));
        let later = t + LEASE / 4;
        assert_eq!(leases.granted("a", "1", 0, later, later), Grant::Renewed);
        assert_eq!(leases.valid_until(), Some(later + LEASE));
    }

    /// A member learned from a grant is needed at once (the cache is
    /// unused until it grants); one no longer a member is forgotten; an
    /// older membership told later changes nothing.
    #[test]
    fn the_leases_follow_the_newest_membership() {
        let mut leases = two();
        let t = Instant::now();
        leases.granted("a", "1", 0, t, t);
        leases.granted("b", "1", 0, t, t);
        assert_eq!(leases.valid_until(), Some(t + LEASE));
        let abc = ["a", "b", "c"].map(str::to_owned);
        assert!(leases.learn(7, abc.clone()));
        assert_eq!(leases.valid_until(), None, "no grant from c yet");
        assert!(!leases.learn(7, abc.clone()), "the same membership");
        assert!(!leases.learn(5, ["a".to_owned()]), "an older one");
        leases.granted("c", "1", 0, t, t);
        assert_eq!(leases.valid_until(), Some(t + LEASE), "a and b kept theirs");
        assert!(leases.learn(9, ["a", "c"].map(str::to_owned)));
        let mut sources: Vec<&str> = leases.sources().collect();
        sources.sort_unstable();
        assert_eq!(sources, ["a", "c"]);
        assert_eq!(leases.valid_until(), Some(t + LEASE));
    }

    #[test]
    fn a_grant_waits_for_the_invalidations_it_counts() {
        let mut leases = two();
        let t = Instant::now();
        leases.granted("a", "1", 0, t, t);
        let t1 = t + Duration::from_millis(500);
        assert_eq!(leases.granted("a", "1", 2, t1, t1), Grant::Waiting);
        assert_eq!(leases.sources["a"].until, Some(t + LEASE), "not renewed");
        // They arrive out of order.
        leases.applied("a", "1", 2);
        leases.applied("a", "1", 1);
        let t2 = t + Duration::from_millis(1_000);
        assert_eq!(leases.granted("a", "1", 2, t2, t2), Grant::Renewed);
    }

    #[test]
    fn a_gap_still_open_at_the_next_grant_clears_the_cache() {
        let mut leases = two();
        let t = Instant::now();
        leases.granted("a", "1", 0, t, t);
        leases.applied("a", "1", 2);
        let t1 = t + Duration::from_millis(500);
        assert_eq!(leases.granted("a", "1", 2, t1, t1), Grant::Waiting);
        // 1 is lost for good; 3 is numbered meanwhile and may be on its way.
        let t2 = t + Duration::from_millis(1_000);
        assert_eq!(leases.granted("a", "1", 3, t2, t2), Grant::ClearThenRenewed);
        assert_eq!(leases.sources["a"].applied, 3);
        leases.applied("a", "1", 1);
        assert_eq!(leases.sources["a"].applied, 3, "a late one changes nothing");
    }

    #[test]
    fn a_lease_renewed_after_it_lapsed_clears_the_cache() {
        let mut leases = two();
        let t = Instant::now();
        leases.granted("a", "1", 0, t, t);
        let late = t + LEASE + Duration::from_millis(1);
        // Sent before the lapse, taken after it: still a clear.
        assert_eq!(
            leases.granted("a", "1", 0, t + LEASE / 2, late),
            Grant::ClearThenRenewed
        );
    }

    /// A replica that restarted counts its invalidations from 1 again, and
    /// its first grant clears the cache: its last incarnation may have
    /// stopped between a change and its push (seen failing when the grant
    /// only renewed).
    #[test]
    fn a_new_incarnation_counts_from_the_start_and_clears_first() {
        let mut leases = two();
        let t = Instant::now();
        leases.granted("a", "1", 0, t, t);
        leases.applied("a", "1", 1);
        leases.applied("a", "1", 2);
        let t1 = t + Duration::from_millis(500);
        assert_eq!(leases.granted("a", "2", 0, t1, t1), Grant::ClearThenRenewed);
        assert_eq!(leases.granted("a", "2", 0, t1, t1), Grant::Renewed);
        assert_eq!(leases.granted("a", "2", 1, t1, t1), Grant::Waiting);
        leases.applied("a", "2", 1);
        assert_eq!(leases.granted("a", "2", 1, t1, t1), Grant::Renewed);
        // Met first in a push, the new incarnation still clears at its
        // first grant.
        leases.applied("a", "3", 1);
        assert_eq!(leases.granted("a", "3", 1, t1, t1), Grant::ClearThenRenewed);
    }

    #[test]
    fn the_highest_numbers_do_not_overflow() {
        let mut leases = two();
        let t = Instant::now();
        leases.granted("a", "1", 0, t, t);
        leases.applied("a", "1", u64::MAX);
        let t1 = t + Duration::from_millis(500);
        assert_eq!(leases.granted("a", "1", u64::MAX, t1, t1), Grant::Waiting);
        let t2 = t + Duration::from_millis(1_000);
        assert_eq!(
            leases.granted("a", "1", u64::MAX, t2, t2),
            Grant::ClearThenRenewed
        );
        leases.applied("a", "1", u64::MAX);
        assert_eq!(leases.sources["a"].applied, u64::MAX);
    }

    #[test]
    fn an_unknown_source_grants_nothing() {
        let mut leases = two();
        let t = Instant::now();
        assert_eq!(leases.granted("z", "1", 0, t, t), Grant::Waiting);
        leases.applied("z", "1", 1);
        assert_eq!(leases.valid_until(), None);
    }
}
