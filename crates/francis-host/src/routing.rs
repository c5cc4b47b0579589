//! Which host runs a call: the actor's activation here, or its owner elsewhere, found through
//! the placement cache, the store, and (for an actor placed nowhere) a rendezvous choice among
//! the live hosts serving its type, claimed atomically in the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use francis_core::{ActorRef, Error};
use francis_placement::{Candidate, MembershipView, PlacementCache, PlacementError, rank_hosts};
use francis_store::{ClaimRefusal, Placement, StoreError};

use crate::clock::Clock;
use crate::policy::{owner_lease_over, still_unresponsive};
use crate::runtime::Activations;
use crate::state::Claim;

/// How long a membership view (the live hosts and what they serve) is reused.
const MEMBERSHIP_TTL: Duration = Duration::from_secs(1);

/// Whether a membership view stored at `at` may be reused at `now`: `at <= now < at +
/// MEMBERSHIP_TTL`. A `now` before `at` (the wall clock stepped back) is not fresh, so a clock
/// step cannot freeze the view.
fn membership_is_fresh(at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now.signed_duration_since(at)
        .to_std()
        .is_ok_and(|age| age < MEMBERSHIP_TTL)
}

/// The host's routing state: cached placements and the last membership view, both timed on the
/// host's one clock (the one its store calls and alarms read), so a paused or manual clock in
/// tests controls their expiry too.
pub(crate) struct Router {
    clock: Arc<dyn Clock>,
    cache: Mutex<PlacementCache>,
    membership: Mutex<Option<(DateTime<Utc>, Arc<MembershipView>)>>,
    /// Hosts that stopped answering, and when that was noticed (on the host's clock).
    unresponsive: Mutex<std::collections::HashMap<String, DateTime<Utc>>>,
}

/// Where a call goes.
pub(crate) enum Route {
    /// Run it on this host; with the placement routing just claimed for this host, when it
    /// claimed one, which the activation then uses instead of claiming again.
    Local(Option<Claim>),
    /// Send it to the owner.
    Remote(Placement),
}

impl Router {
    /// Routing state timed on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Router {
            clock,
            cache: Mutex::new(PlacementCache::new(francis_placement::MAX_CACHE_TTL)),
            membership: Mutex::new(None),
            unresponsive: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The last membership view read from the store, fresh or not.
    fn cached_membership(&self) -> Option<Arc<MembershipView>> {
        let cached = self.membership.lock().expect("membership lock");
        cached.as_ref().map(|(_, view)| view.clone())
    }

    /// The last membership view if it is still fresh ([`membership_is_fresh`]).
    fn fresh_membership(&self) -> Option<Arc<MembershipView>> {
        let cached = self.membership.lock().expect("membership lock");
        let (at, view) = cached.as_ref()?;
        membership_is_fresh(*at, self.clock.now()).then(|| view.clone())
    }

    /// Keeps `view` as the membership view, fresh from now.
    fn set_membership(&self, view: Arc<MembershipView>) {
        let mut cached = self.membership.lock().expect("membership lock");
        *cached = Some((self.clock.now(), view));
    }

    /// Shortens cache entries to `min(shortest idle timeout here, 5 s)`.
    pub fn set_cache_ttl(&self, ttl: Duration) {
        *self.cache.lock().expect("cache lock") = PlacementCache::new(ttl);
    }

    /// Forgets everything (after this host re-registered under a new id).
    pub fn clear(&self) {
        self.cache.lock().expect("cache lock").clear();
        self.unresponsive.lock().expect("unresponsive lock").clear();
        *self.membership.lock().expect("membership lock") = None;
    }

    /// Forgets every route to `host_id` and the membership view (the host left).
    pub fn forget_host(&self, host_id: &str) {
        self.cache
            .lock()
            .expect("cache lock")
            .invalidate_host(host_id);
        *self.membership.lock().expect("membership lock") = None;
    }

    /// Records that `host_id` stopped answering (and forgets every route to it).
    pub fn mark_unresponsive(&self, host_id: &str) {
        self.forget_host(host_id);
        let now = self.clock.now();
        let mut hosts = self.unresponsive.lock().expect("unresponsive lock");
        hosts.entry(host_id.to_owned()).or_insert(now);
    }

    /// When `host_id` was found to have stopped answering, if it was.
    fn unresponsive_since(&self, host_id: &str) -> Option<DateTime<Utc>> {
        let hosts = self.unresponsive.lock().expect("unresponsive lock");
        hosts.get(host_id).copied()
    }

    /// When `host_id` stopped answering, while it is still taken for gone
    /// ([`still_unresponsive`]): judged by its heartbeat in `view`, or by what was noticed
    /// alone when the store could not be read (`None`).
    fn silent_since(
        &self,
        host_id: &str,
        view: Option<&MembershipView>,
        deadline: Duration,
    ) -> Option<DateTime<Utc>> {
        let noticed = self.unresponsive_since(host_id)?;
        let heartbeat = match view {
            Some(view) => view.host(host_id).map(|h| h.last_heartbeat),
            None => Some(noticed),
        };
        still_unresponsive(noticed, heartbeat, self.clock.now(), deadline).then_some(noticed)
    }

    /// Why a call to `host_id` should not be sent now: it stopped answering, and has shown no
    /// sign of life since ([`still_unresponsive`]); `None` to send it.
    pub async fn unresponsive(&self, act: &Activations, host_id: &str) -> Option<Error> {
        self.unresponsive_since(host_id)?;
        let deadline = act.timings.health_deadline;
        let view = self.membership(act, false).await.ok();
        if let Some(noticed) = self.silent_since(host_id, view.as_deref(), deadline) {
            let ago = (self.clock.now() - noticed).to_std().unwrap_or_default();
            return Some(Error::HostUnavailable(format!(
                "host {host_id} stopped answering {:.1} s ago; its actors are unavailable until \
                 it answers again or its lease runs out (at most {deadline:?} after it stopped), \
                 when they move to another host",
                ago.as_secs_f64()
            )));
        }
        self.unresponsive
            .lock()
            .expect("unresponsive lock")
            .remove(host_id);
        None
    }

    /// Forgets where `actor` lives (after a "not hosted" answer or a failed send).
    pub fn forget(&self, actor: &ActorRef) {
        self.cache.lock().expect("cache lock").invalidate(actor);
    }

    // The clock is read under the cache lock, so entries are stamped and read in clock order.
    fn cached(&self, actor: &ActorRef) -> Option<Placement> {
        let mut cache = self.cache.lock().expect("cache lock");
        cache.get(actor, self.clock.now()).cloned()
    }

    fn remember(&self, placement: Placement) {
        let mut cache = self.cache.lock().expect("cache lock");
        cache.insert(placement, self.clock.now());
    }
}

/// `ranked`, with the hosts `unresponsive` says stopped answering moved to the end (in their
/// order): placing a new actor tries hosts that answer first, and still tries the others when
/// no other host is left.
fn responsive_first(ranked: Vec<Candidate>, unresponsive: impl Fn(&str) -> bool) -> Vec<Candidate> {
    let (answering, silent): (Vec<_>, Vec<_>) =
        ranked.into_iter().partition(|c| !unresponsive(&c.host_id));
    answering.into_iter().chain(silent).collect()
}

fn refusal(e: &Error) -> Option<ClaimRefusal> {
    let Error::Store(source) = e else {
        return None;
    };
    match source.downcast_ref::<StoreError>() {
        Some(StoreError::ClaimRefused { reason, .. }) => Some(*reason),
        _ => None,
    }
}

/// The error when no candidate can take `actor`. "No host serves the type" is final
/// (`ActorTypeUnsupported`) only when this host does not serve it either: a host that serves
/// the type and sees no live host serving it is re-registering, or its view lags, so the
/// answer is the retryable `NoHost`.
fn no_host(actor: &ActorRef, candidates: &[Candidate], served_here: bool) -> Error {
    match francis_placement::require_host(actor, candidates) {
        Err(PlacementError::NoHostServesType { actor_type }) if !served_here => {
            Error::ActorTypeUnsupported(actor_type)
        }
        Err(PlacementError::NoHostServesType { actor_type }) => Error::NoHost {
            actor: actor.clone(),
            reason: format!(
                "no live host serving {actor_type:?} is known yet (this host is registering); \
                 retry shortly"
            ),
        },
        Err(other) => Error::NoHost {
            actor: actor.clone(),
            reason: other.to_string(),
        },
        Ok(_) => Error::NoHost {
            actor: actor.clone(),
            reason: "no eligible host".into(),
        },
    }
}

impl Router {
    /// Decides where `actor`'s call runs. An actor active here runs here; otherwise the cached or
    /// stored placement decides; an actor placed nowhere is claimed for the rendezvous choice among
    /// live hosts serving its type (walking down the ranking when a claim is refused).
    pub async fn route(&self, act: &Activations, actor: &ActorRef) -> Result<Route, Error> {
        if act.active(actor).is_some() {
            return Ok(Route::Local(None));
        }
        let me = act.host_id();
        let cached = match self.cached(actor) {
            // A cached route to a host that stopped renewing its lease is dropped.
            Some(p)
                if p.host_id != me && !self.membership(act, false).await?.is_live(&p.host_id) =>
            {
                self.forget(actor);
                None
            }
            other => other,
        };
        match cached {
            Some(p) if p.host_id == me => Ok(Route::Local(None)),
            Some(p) => Ok(Route::Remote(p)),
            None => {
                // Boxed: a cache miss is the rare path, and its future is large.
                let claim = Box::pin(self.resolve(act, actor)).await?;
                if claim.places(actor, &me) {
                    Ok(Route::Local(Some(claim)))
                } else {
                    Ok(Route::Remote(claim.placement().clone()))
                }
            }
        }
    }

    /// The actor's placement, from one claim on the common path: a claim answers the live
    /// placement when there is one (wherever it is), and otherwise places the actor on the
    /// candidate, so no lookup goes first.
    async fn resolve(&self, act: &Activations, actor: &ActorRef) -> Result<Claim, Error> {
        let store = &act.store;
        let deadline = act.timings.health_deadline;
        let mut fresh = false;
        loop {
            let view = self.membership(act, fresh).await?;
            let candidates = view.candidates_for(actor.actor_type());
            let ranked: Vec<Candidate> = rank_hosts(actor, &candidates)
                .into_iter()
                .cloned()
                .collect();
            // A host that stopped answering is tried last: a new actor goes to one that answers.
            let ranked = responsive_first(ranked, |host_id| {
                self.silent_since(host_id, Some(&view), deadline).is_some()
            });
            if ranked.is_empty() {
                // The view may predate a registration (this host's own, after fencing): read the
                // store again before answering that nobody serves the type.
                if !fresh {
                    fresh = true;
                    continue;
                }
                let served_here = act.type_entry(actor.actor_type()).is_ok();
                return Err(no_host(actor, &candidates, served_here));
            }
            for candidate in &ranked {
                match store.claim(actor, &candidate.host_id, deadline).await {
                    Ok(claim) => {
                        self.remember(claim.placement().clone());
                        return Ok(claim);
                    }
                    Err(e) if refusal(&e).is_some() => continue,
                    Err(e) => return Err(e),
                }
            }
            // Every candidate refused: the view may be stale (a host left or joined); look once more.
            if fresh {
                return Err(Error::NoHost {
                    actor: actor.clone(),
                    reason: format!(
                        "every live host serving {:?} refused it (all at their concurrency limit)",
                        actor.actor_type()
                    ),
                });
            }
            fresh = true;
        }
    }

    /// The live hosts, reused for a second unless `fresh` is asked for.
    pub async fn membership(
        &self,
        act: &Activations,
        fresh: bool,
    ) -> Result<Arc<MembershipView>, Error> {
        if !fresh && let Some(view) = self.fresh_membership() {
            return Ok(view);
        }
        let store = &act.store;
        let now = store.clock.now();
        let deadline = act.timings.health_deadline;
        let hosts = store.call(store.provider.live_hosts(now, deadline)).await?;
        let view = Arc::new(MembershipView::new(hosts, now, deadline));
        self.set_membership(view.clone());
        Ok(view)
    }

    /// Completes once `host_id` has lost its lease: the store says it is no longer live, or the
    /// store cannot be read (no quorum, unreachable) and this host has not heard of a heartbeat of
    /// it for a whole deadline ([`owner_lease_over`], on this host's clock). A call in flight to it
    /// will get no answer.
    pub async fn lost(&self, act: &Activations, host_id: &str) {
        let deadline = act.timings.health_deadline;
        let cached = self.cached_membership();
        // Without a view of it, the owner was believed live when the call started.
        let mut last_known = cached
            .and_then(|view| view.host(host_id).map(|h| h.last_heartbeat))
            .unwrap_or_else(|| act.store.clock.now());
        loop {
            tokio::time::sleep(MEMBERSHIP_TTL).await;
            match tokio::time::timeout(MEMBERSHIP_TTL, self.membership(act, false)).await {
                Ok(Ok(view)) => match view.host(host_id) {
                    None => return,
                    Some(h) => last_known = last_known.max(h.last_heartbeat),
                },
                // The store cannot confirm the lease: judge by the last heartbeat heard of.
                Ok(Err(_)) | Err(_) => {
                    if owner_lease_over(last_known, act.store.clock.now(), deadline) {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use francis_core::ErrorKind;
    use francis_store::HostRecord;

    /// A clock that moves only when the test moves it: real time (std's or tokio's) passing
    /// does not change what routing sees, and routing sees every step the test takes.
    struct ManualClock(Mutex<DateTime<Utc>>);

    impl ManualClock {
        fn set(&self, now: DateTime<Utc>) {
            *self.0.lock().unwrap() = now;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    const MS: Duration = Duration::from_millis(1);

    fn manual_router() -> (Arc<ManualClock>, Router, DateTime<Utc>) {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let clock = Arc::new(ManualClock(Mutex::new(t0)));
        (clock.clone(), Router::new(clock), t0)
    }

    #[test]
    fn the_placement_cache_expires_on_the_host_clock() {
        let (clock, router, t0) = manual_router();
        let ttl = Duration::from_secs(2);
        router.set_cache_ttl(ttl);
        let actor = ActorRef::new("t", "a").unwrap();
        router.remember(Placement {
            actor: actor.clone(),
            host_id: "h2".into(),
            address: "127.0.0.1:2".into(),
            epoch: 3,
        });
        assert_eq!(router.cached(&actor).map(|p| p.epoch), Some(3));
        clock.set(t0 + ttl - MS);
        assert_eq!(
            router.cached(&actor).map(|p| p.epoch),
            Some(3),
            "trusted until the host clock reaches the TTL"
        );
        clock.set(t0 + ttl);
        assert!(
            router.cached(&actor).is_none(),
            "expired once the host clock reaches the TTL"
        );

        // A clock stepped back does not make the entry live longer.
        router.remember(Placement {
            actor: actor.clone(),
            host_id: "h2".into(),
            address: "127.0.0.1:2".into(),
            epoch: 4,
        });
        clock.set(t0);
        assert!(router.cached(&actor).is_none());
    }

    #[test]
    fn the_membership_view_expires_on_the_host_clock() {
        let (clock, router, t0) = manual_router();
        let host = HostRecord {
            host_id: "h1".into(),
            address: "127.0.0.1:1".into(),
            actor_types: vec![],
            last_heartbeat: t0,
        };
        let view = Arc::new(MembershipView::new(vec![host], t0, Duration::from_secs(20)));
        assert!(router.fresh_membership().is_none(), "nothing read yet");
        router.set_membership(view);
        assert!(router.fresh_membership().is_some());
        clock.set(t0 + MEMBERSHIP_TTL - MS);
        assert!(
            router.fresh_membership().is_some(),
            "reused until the host clock reaches the TTL"
        );
        clock.set(t0 + MEMBERSHIP_TTL);
        assert!(
            router.fresh_membership().is_none(),
            "read again once the host clock reaches the TTL"
        );
        let stale = router.cached_membership().expect("the stale view is kept");
        assert!(stale.is_live("h1"));

        // A clock stepped back does not freeze the view.
        router.set_membership(stale);
        clock.set(t0);
        assert!(router.fresh_membership().is_none());
    }

    #[test]
    fn a_type_served_here_is_never_unsupported() {
        let actor = ActorRef::new("t", "a").unwrap();
        assert_eq!(
            no_host(&actor, &[], false).kind(),
            ErrorKind::ActorTypeUnsupported
        );
        let err = no_host(&actor, &[], true);
        assert_eq!(err.kind(), ErrorKind::NoHost);
        assert!(err.is_retryable());
        let full = Candidate {
            host_id: "h".into(),
            address: "127.0.0.1:1".into(),
            serves_type: true,
            capacity_left: Some(0),
        };
        assert_eq!(no_host(&actor, &[full], false).kind(), ErrorKind::NoHost);
    }

    #[test]
    fn hosts_that_stopped_answering_are_tried_last_in_their_order() {
        let candidate = |id: &str| Candidate {
            host_id: id.into(),
            address: "127.0.0.1:1".into(),
            serves_type: true,
            capacity_left: None,
        };
        let ids = |cs: Vec<Candidate>| cs.into_iter().map(|c| c.host_id).collect::<Vec<_>>();
        let ranked = || {
            vec![
                candidate("a"),
                candidate("b"),
                candidate("c"),
                candidate("d"),
            ]
        };
        let silent = |id: &str| id == "a" || id == "c";
        assert_eq!(
            ids(responsive_first(ranked(), silent)),
            ["b", "d", "a", "c"]
        );
        assert_eq!(
            ids(responsive_first(ranked(), |_| false)),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            ids(responsive_first(ranked(), |_| true)),
            ["a", "b", "c", "d"]
        );
    }
}
