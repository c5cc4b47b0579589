//! Which host runs a call: the actor's activation here, or its owner elsewhere, found through
//! the placement cache, the store, and (for an actor placed nowhere) a rendezvous choice among
//! the live hosts serving its type, claimed atomically in the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

// The host's one monotonic clock: tokio's (paused in tests), also for the placement cache.
use tokio::time::Instant;

use francis_core::{ActorRef, Error};
use francis_placement::{Candidate, MembershipView, PlacementCache, PlacementError, rank_hosts};
use francis_store::{ClaimRefusal, Placement, StoreError};

use crate::policy::owner_lease_over;
use crate::runtime::HostInner;

/// How long a membership view (the live hosts and what they serve) is reused.
const MEMBERSHIP_TTL: Duration = Duration::from_secs(1);

/// The host's routing state: cached placements and the last membership view.
pub(crate) struct Router {
    cache: Mutex<PlacementCache>,
    membership: Mutex<Option<(Instant, Arc<MembershipView>)>>,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            cache: Mutex::new(PlacementCache::new(francis_placement::MAX_CACHE_TTL)),
            membership: Mutex::new(None),
        }
    }
}

/// Where a call goes.
pub(crate) enum Route {
    /// Run it on this host.
    Local,
    /// Send it to the owner.
    Remote(Placement),
}

impl Router {
    /// The last membership view read from the store, and when.
    fn cached_membership(&self) -> Option<(Instant, Arc<MembershipView>)> {
        self.membership.lock().expect("membership lock").clone()
    }

    /// Shortens cache entries to `min(shortest idle timeout here, 5 s)`.
    pub fn set_cache_ttl(&self, ttl: Duration) {
        *self.cache.lock().expect("cache lock") = PlacementCache::new(ttl);
    }

    /// Forgets everything (after this host re-registered under a new id).
    pub fn clear(&self) {
        self.cache.lock().expect("cache lock").clear();
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

    /// Forgets where `actor` lives (after a "not hosted" answer or a failed send).
    pub fn forget(&self, actor: &ActorRef) {
        self.cache.lock().expect("cache lock").invalidate(actor);
    }

    fn cached(&self, actor: &ActorRef) -> Option<Placement> {
        self.cache
            .lock()
            .expect("cache lock")
            .get(actor, Instant::now().into_std())
            .cloned()
    }

    fn remember(&self, placement: Placement) {
        self.cache
            .lock()
            .expect("cache lock")
            .insert(placement, Instant::now().into_std());
    }
}

/// Decides where `actor`'s call runs. An actor active here runs here; otherwise the cached or
/// stored placement decides; an actor placed nowhere is claimed for the rendezvous choice among
/// live hosts serving its type (walking down the ranking when a claim is refused).
pub(crate) async fn route(inner: &Arc<HostInner>, actor: &ActorRef) -> Result<Route, Error> {
    if inner.active(actor).is_some() {
        return Ok(Route::Local);
    }
    let me = inner.host_id();
    let cached = match inner.router.cached(actor) {
        // A cached route to a host that stopped renewing its lease is dropped.
        Some(p) if p.host_id != me && !membership(inner, false).await?.is_live(&p.host_id) => {
            inner.router.forget(actor);
            None
        }
        other => other,
    };
    let placement = match cached {
        Some(p) => p,
        None => resolve(inner, actor).await?,
    };
    if placement.host_id == me {
        Ok(Route::Local)
    } else {
        Ok(Route::Remote(placement))
    }
}

async fn resolve(inner: &Arc<HostInner>, actor: &ActorRef) -> Result<Placement, Error> {
    let store = &inner.store;
    let deadline = inner.timings.health_deadline;
    if let Some(p) = store
        .call(store.provider.lookup(actor, store.clock.now(), deadline))
        .await?
    {
        inner.router.remember(p.clone());
        return Ok(p);
    }
    let mut fresh = false;
    loop {
        let view = membership(inner, fresh).await?;
        let candidates = view.candidates_for(actor.actor_type());
        let ranked: Vec<Candidate> = rank_hosts(actor, &candidates)
            .into_iter()
            .cloned()
            .collect();
        if ranked.is_empty() {
            // The view may predate a registration (this host's own, after fencing): read the
            // store again before answering that nobody serves the type.
            if !fresh {
                fresh = true;
                continue;
            }
            let served_here = inner.type_entry(actor.actor_type()).is_ok();
            return Err(no_host(actor, &candidates, served_here));
        }
        for candidate in &ranked {
            let claimed = store
                .call(
                    store
                        .provider
                        .claim(actor, &candidate.host_id, store.clock.now(), deadline),
                )
                .await;
            match claimed {
                Ok(p) => {
                    inner.router.remember(p.clone());
                    return Ok(p);
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

/// The live hosts, reused for a second unless `fresh` is asked for.
pub(crate) async fn membership(
    inner: &Arc<HostInner>,
    fresh: bool,
) -> Result<Arc<MembershipView>, Error> {
    if !fresh
        && let Some((at, view)) = inner.router.cached_membership()
        && at.elapsed() < MEMBERSHIP_TTL
    {
        return Ok(view);
    }
    let store = &inner.store;
    let now = store.clock.now();
    let deadline = inner.timings.health_deadline;
    let hosts = store.call(store.provider.live_hosts(now, deadline)).await?;
    let view = Arc::new(MembershipView::new(hosts, now, deadline));
    *inner.router.membership.lock().expect("membership lock") =
        Some((Instant::now(), view.clone()));
    Ok(view)
}

/// Completes once `host_id` has lost its lease: the store says it is no longer live, or the
/// store cannot be read (no quorum, unreachable) and this host has not heard of a heartbeat of
/// it for a whole deadline ([`owner_lease_over`], on this host's clock). A call in flight to it
/// will get no answer.
pub(crate) async fn lost(inner: &Arc<HostInner>, host_id: &str) {
    let deadline = inner.timings.health_deadline;
    let cached = inner.router.cached_membership();
    // Without a view of it, the owner was believed live when the call started.
    let mut last_known = cached
        .and_then(|(_, view)| view.host(host_id).map(|h| h.last_heartbeat))
        .unwrap_or_else(|| inner.store.clock.now());
    loop {
        tokio::time::sleep(MEMBERSHIP_TTL).await;
        match tokio::time::timeout(MEMBERSHIP_TTL, membership(inner, false)).await {
            Ok(Ok(view)) => match view.host(host_id) {
                None => return,
                Some(h) => last_known = last_known.max(h.last_heartbeat),
            },
            // The store cannot confirm the lease: judge by the last heartbeat heard of.
            Ok(Err(_)) | Err(_) => {
                if owner_lease_over(last_known, inner.store.clock.now(), deadline) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use francis_core::ErrorKind;

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
}
