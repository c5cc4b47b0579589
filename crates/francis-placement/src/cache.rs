//! Placements seen recently, trusted for a short time.
//!
//! The cache only saves store lookups: a stale entry is harmless because the owner re-confirms
//! ownership before activating and answers "not hosted" otherwise, and the caller then drops
//! the entry ([`PlacementCache::invalidate`]) and resolves again through the store.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use francis_core::ActorRef;
use francis_store::Placement;

/// No cache entry is trusted for longer than this, whatever the idle timeout.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(5);

/// How long a cached placement is trusted: `min(idle_timeout, MAX_CACHE_TTL)`.
///
/// An actor idle for `idle_timeout` is deactivated and its placement released, so an entry
/// older than that is likely stale; the 5 s cap bounds how long a caller keeps routing to a host
/// that lost the actor in other ways (fencing, failover).
pub fn cache_entry_ttl(idle_timeout: Duration) -> Duration {
    idle_timeout.min(MAX_CACHE_TTL)
}

/// Whether an entry seen at `seen_at` is still trusted at `now`: `seen_at <= now < seen_at +
/// ttl`. A `now` before `seen_at` (the wall clock stepped back) is not trusted either, so a
/// clock step cannot stretch an entry's life; dropping an entry is always safe.
fn is_fresh(seen_at: DateTime<Utc>, now: DateTime<Utc>, ttl: Duration) -> bool {
    now.signed_duration_since(seen_at)
        .to_std()
        .is_ok_and(|age| age < ttl)
}

#[derive(Debug, Clone)]
struct Entry {
    placement: Placement,
    seen_at: DateTime<Utc>,
}

/// A map from actor to its last known [`Placement`], each entry valid for a fixed TTL from its
/// insertion.
///
/// Time is an argument (`now`), read by the caller from its clock (the host passes its one
/// injected clock, so paused-time and manual-clock tests control expiry). Expired
/// entries are never returned; they are dropped lazily by [`get`](Self::get), by
/// [`purge_expired`](Self::purge_expired), and by [`insert`](Self::insert) whenever the map has
/// doubled since its last sweep, so the map stays proportional to the live entries without a
/// background task.
#[derive(Debug, Clone)]
pub struct PlacementCache {
    ttl: Duration,
    entries: HashMap<ActorRef, Entry>,
    sweep_at: usize,
}

/// The map is swept on insert once it holds this many entries (then twice as many as remain).
const MIN_SWEEP: usize = 64;

impl PlacementCache {
    /// A cache whose entries live for `ttl`, capped at [`MAX_CACHE_TTL`].
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl: ttl.min(MAX_CACHE_TTL),
            entries: HashMap::new(),
            sweep_at: MIN_SWEEP,
        }
    }

    /// A cache whose entries live for [`cache_entry_ttl`]`(idle_timeout)`.
    pub fn for_idle_timeout(idle_timeout: Duration) -> Self {
        Self::new(cache_entry_ttl(idle_timeout))
    }

    /// How long each entry lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records a placement seen at `now`, replacing any entry for the same actor; it is returned
    /// by [`get`](Self::get) while `now <= now' < now + ttl`. With a zero TTL nothing is cached.
    pub fn insert(&mut self, placement: Placement, now: DateTime<Utc>) {
        if self.ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.sweep_at {
            self.purge_expired(now);
            self.sweep_at = (self.entries.len() * 2).max(MIN_SWEEP);
        }
        self.entries.insert(
            placement.actor.clone(),
            Entry {
                placement,
                seen_at: now,
            },
        );
    }

    /// The cached placement of `actor` if its entry is fresh at `now` (seen at or before `now`,
    /// less than the TTL ago); an entry that is not is removed.
    pub fn get(&mut self, actor: &ActorRef, now: DateTime<Utc>) -> Option<&Placement> {
        let expired = !is_fresh(self.entries.get(actor)?.seen_at, now, self.ttl);
        if expired {
            self.entries.remove(actor);
            return None;
        }
        self.entries.get(actor).map(|e| &e.placement)
    }

    /// Drops the entry of `actor` (after a "not hosted" answer); returns it if there was one.
    pub fn invalidate(&mut self, actor: &ActorRef) -> Option<Placement> {
        self.entries.remove(actor).map(|e| e.placement)
    }

    /// Drops the entry of `actor` only if it is still the placement with `epoch`, so a fresher
    /// placement cached meanwhile by another task survives a late "not hosted" for the old
    /// one. Returns whether it dropped an entry.
    pub fn invalidate_epoch(&mut self, actor: &ActorRef, epoch: u64) -> bool {
        if self
            .entries
            .get(actor)
            .is_some_and(|e| e.placement.epoch == epoch)
        {
            self.entries.remove(actor);
            return true;
        }
        false
    }

    /// Drops every entry placed on `host_id` (it left the membership or fenced itself);
    /// returns how many.
    pub fn invalidate_host(&mut self, host_id: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.placement.host_id != host_id);
        before - self.entries.len()
    }

    /// Drops every entry not fresh at `now` (expired, or seen after `now`); returns how many.
    pub fn purge_expired(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.entries.len();
        let ttl = self.ttl;
        self.entries.retain(|_, e| is_fresh(e.seen_at, now, ttl));
        before - self.entries.len()
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many entries are held, expired or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: &str) -> ActorRef {
        ActorRef::new("counter", id).unwrap()
    }

    fn placement(id: &str, host: &str, epoch: u64) -> Placement {
        Placement {
            actor: actor(id),
            host_id: host.into(),
            address: format!("{host}:7000"),
            epoch,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn ttl_is_the_idle_timeout_capped_at_five_seconds() {
        assert_eq!(cache_entry_ttl(Duration::from_secs(300)), MAX_CACHE_TTL);
        assert_eq!(cache_entry_ttl(Duration::from_secs(5)), MAX_CACHE_TTL);
        assert_eq!(
            cache_entry_ttl(Duration::from_millis(1_500)),
            Duration::from_millis(1_500)
        );
        assert_eq!(cache_entry_ttl(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            PlacementCache::for_idle_timeout(Duration::from_secs(300)).ttl(),
            MAX_CACHE_TTL
        );
        assert_eq!(
            PlacementCache::for_idle_timeout(Duration::from_secs(2)).ttl(),
            Duration::from_secs(2)
        );
        assert_eq!(
            PlacementCache::new(Duration::from_secs(60)).ttl(),
            MAX_CACHE_TTL,
            "new() also caps"
        );
    }

    #[test]
    fn entries_expire_exactly_at_the_ttl() {
        let t0 = t0();
        let ttl = Duration::from_secs(2);
        let mut cache = PlacementCache::new(ttl);
        cache.insert(placement("a", "h1", 7), t0);
        assert_eq!(cache.get(&actor("a"), t0), Some(&placement("a", "h1", 7)));
        assert_eq!(
            cache.get(&actor("a"), t0 + ttl - MS).map(|p| p.epoch),
            Some(7)
        );
        assert_eq!(
            cache.get(&actor("a"), t0 + ttl),
            None,
            "expired at t0 + ttl"
        );
        assert!(
            cache.is_empty(),
            "an expired entry is removed when looked up"
        );
        assert_eq!(cache.get(&actor("missing"), t0), None);
    }

    #[test]
    fn a_clock_stepped_back_does_not_stretch_an_entry() {
        let t0 = t0();
        let mut cache = PlacementCache::new(Duration::from_secs(2));
        cache.insert(placement("a", "h1", 1), t0);
        cache.insert(placement("b", "h1", 2), t0);
        assert!(cache.get(&actor("a"), t0 - MS).is_none(), "seen after now");
        assert_eq!(cache.purge_expired(t0 - Duration::from_secs(3_600)), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn reinsert_replaces_and_restarts_the_ttl() {
        let t0 = t0();
        let ttl = Duration::from_secs(1);
        let mut cache = PlacementCache::new(ttl);
        cache.insert(placement("a", "h1", 1), t0);
        cache.insert(placement("a", "h2", 2), t0 + ttl / 2);
        assert_eq!(cache.len(), 1);
        let got = cache.get(&actor("a"), t0 + ttl).expect("fresh entry");
        assert_eq!((got.host_id.as_str(), got.epoch), ("h2", 2));
        assert_eq!(cache.get(&actor("a"), t0 + ttl + ttl / 2), None);
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let t0 = t0();
        let mut cache = PlacementCache::for_idle_timeout(Duration::ZERO);
        cache.insert(placement("a", "h1", 1), t0);
        assert!(cache.is_empty());
        assert_eq!(cache.get(&actor("a"), t0), None);
    }

    #[test]
    fn invalidation_drops_only_what_it_names() {
        let t0 = t0();
        let mut cache = PlacementCache::new(MAX_CACHE_TTL);
        cache.insert(placement("a", "h1", 1), t0);
        cache.insert(placement("b", "h1", 2), t0);
        cache.insert(placement("c", "h2", 3), t0);

        assert_eq!(cache.invalidate(&actor("a")), Some(placement("a", "h1", 1)));
        assert_eq!(cache.invalidate(&actor("a")), None, "idempotent");
        assert_eq!(cache.get(&actor("a"), t0), None);
        assert!(cache.get(&actor("b"), t0).is_some());

        // A late "not hosted" for an older epoch leaves a fresher entry alone.
        cache.insert(placement("b", "h2", 5), t0);
        assert!(!cache.invalidate_epoch(&actor("b"), 2));
        assert_eq!(cache.get(&actor("b"), t0).map(|p| p.epoch), Some(5));
        assert!(cache.invalidate_epoch(&actor("b"), 5));
        assert_eq!(cache.get(&actor("b"), t0), None);
        assert!(!cache.invalidate_epoch(&actor("zzz"), 1));

        cache.insert(placement("d", "h2", 6), t0);
        cache.insert(placement("e", "h1", 7), t0);
        assert_eq!(cache.invalidate_host("h2"), 2);
        assert_eq!(cache.get(&actor("c"), t0), None);
        assert_eq!(cache.get(&actor("d"), t0), None);
        assert_eq!(cache.get(&actor("e"), t0).map(|p| p.epoch), Some(7));
        assert_eq!(cache.invalidate_host("h2"), 0);

        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn purge_and_insert_sweep_bound_the_map() {
        let t0 = t0();
        let ttl = Duration::from_secs(1);
        let mut cache = PlacementCache::new(ttl);
        for i in 0..100 {
            cache.insert(placement(&format!("old-{i}"), "h1", i), t0);
        }
        cache.insert(placement("young", "h1", 1_000), t0 + ttl / 2);
        assert_eq!(cache.purge_expired(t0 + ttl - MS), 0);
        assert_eq!(cache.purge_expired(t0 + ttl), 100);
        assert_eq!(cache.len(), 1);

        // Without explicit purges, inserts keep the map near the number of live entries.
        let mut cache = PlacementCache::new(ttl);
        for i in 0..10_000u64 {
            let now = t0 + MS * u32::try_from(i).unwrap();
            cache.insert(placement(&format!("a-{i}"), "h1", i), now);
            // at most ttl/1ms = 1000 entries are live at any time
            assert!(cache.len() <= 2 * 1_000 + MIN_SWEEP, "len {}", cache.len());
        }
        let last = t0 + MS * 9_999;
        assert!(cache.get(&actor("a-9999"), last).is_some());
        assert!(cache.get(&actor("a-8999"), last).is_none());
    }
}
