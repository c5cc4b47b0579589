//! Placement: claims, lookups, releases, epochs.

use std::collections::HashSet;
use std::sync::Arc;

use super::{ProviderHarness, TTL, actor, at, register, registration};
use crate::error::StoreError;
use crate::provider::{ClaimRefusal, Provider};

fn ttl_ms() -> i64 {
    TTL.as_millis() as i64
}

/// A first claim places the actor on the candidate; later claims (whatever the candidate)
/// return the same placement while its host is live.
pub async fn claim_new_then_existing<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t"], at(0)).await;
    register(&p, "h2", &["t"], at(0)).await;
    let a = actor("t", "a");
    assert!(p.lookup(&a, at(0), TTL).await.unwrap().is_none());
    let first = p.claim(&a, "h1", at(1), TTL).await.unwrap();
    assert_eq!(first.actor, a);
    assert_eq!(first.host_id, "h1");
    assert_eq!(first.address, "addr-h1");
    for candidate in ["h2", "h1", "not-a-host"] {
        let again = p.claim(&a, candidate, at(2), TTL).await.unwrap();
        assert_eq!(
            again, first,
            "claim with candidate {candidate} returns the placement"
        );
    }
    assert_eq!(p.lookup(&a, at(2), TTL).await.unwrap(), Some(first));
    assert_eq!(p.count_placements("h1", "t").await.unwrap(), 1);
    assert_eq!(p.count_placements("h2", "t").await.unwrap(), 0);
}

/// Every new placement gets an epoch greater than any before it, even after releases.
pub async fn claim_epochs_never_reused<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t", "u"], at(0)).await;
    let mut last = 0;
    for round in 0..3 {
        for (t, id) in [("t", "a"), ("u", "a"), ("t", "b")] {
            let a = actor(t, id);
            let placement = p.claim(&a, "h1", at(1), TTL).await.unwrap();
            assert!(
                placement.epoch > last,
                "round {round}: epoch {} after {last}",
                placement.epoch
            );
            last = placement.epoch;
            assert!(p.release(&a, "h1", placement.epoch).await.unwrap());
        }
    }
}

/// A placement on a dead host is replaced by a claim for a live candidate, with a greater
/// epoch; the old owner can no longer release it.
pub async fn claim_replaces_dead_owner<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t"], at(0)).await;
    register(&p, "h2", &["t"], at(0)).await;
    let a = actor("t", "a");
    let old = p.claim(&a, "h1", at(0), TTL).await.unwrap();
    let later = at(ttl_ms() + 1);
    p.heartbeat("h2", later).await.unwrap();
    assert!(
        p.lookup(&a, later, TTL).await.unwrap().is_none(),
        "a placement on a dead host is not returned"
    );
    let new = p.claim(&a, "h2", later, TTL).await.unwrap();
    assert_eq!(new.host_id, "h2");
    assert_eq!(new.address, "addr-h2");
    assert!(new.epoch > old.epoch);
    assert_eq!(p.lookup(&a, later, TTL).await.unwrap(), Some(new.clone()));
    assert!(!p.release(&a, "h1", old.epoch).await.unwrap());
    assert_eq!(p.count_placements("h1", "t").await.unwrap(), 0);
    assert_eq!(p.count_placements("h2", "t").await.unwrap(), 1);
    // even if the old host comes back, the placement stays with the new owner
    p.heartbeat("h1", later).await.unwrap();
    assert_eq!(p.claim(&a, "h1", later, TTL).await.unwrap(), new);
}

fn expect_refusal<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    want_actor: &francis_core::ActorRef,
    want_candidate: &str,
    want: ClaimRefusal,
) {
    match result {
        Err(StoreError::ClaimRefused {
            actor,
            candidate,
            reason,
        }) => {
            assert_eq!(&actor, want_actor);
            assert_eq!(candidate, want_candidate);
            assert_eq!(reason, want);
        }
        other => panic!("expected ClaimRefused({want:?}), got {other:?}"),
    }
}

/// Claims are refused for candidates that are not live, do not serve the type, or are full.
pub async fn claim_refusals<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    let a = actor("t", "a");
    expect_refusal(
        p.claim(&a, "ghost", at(0), TTL).await,
        &a,
        "ghost",
        ClaimRefusal::CandidateNotLive,
    );
    register(&p, "old", &["t"], at(0)).await;
    expect_refusal(
        p.claim(&a, "old", at(ttl_ms()), TTL).await,
        &a,
        "old",
        ClaimRefusal::CandidateNotLive,
    );
    p.register_host(
        &registration("small", "addr-small", &[("t", Some(1)), ("u", None)]),
        at(0),
        TTL,
    )
    .await
    .unwrap();
    let x = actor("x", "a");
    expect_refusal(
        p.claim(&x, "small", at(1), TTL).await,
        &x,
        "small",
        ClaimRefusal::TypeNotServed,
    );
    let first = p.claim(&a, "small", at(1), TTL).await.unwrap();
    let b = actor("t", "b");
    expect_refusal(
        p.claim(&b, "small", at(1), TTL).await,
        &b,
        "small",
        ClaimRefusal::AtCapacity,
    );
    // capacity is per type
    p.claim(&actor("u", "b"), "small", at(1), TTL)
        .await
        .unwrap();
    // refusals changed nothing
    assert!(p.lookup(&b, at(1), TTL).await.unwrap().is_none());
    assert!(p.lookup(&x, at(1), TTL).await.unwrap().is_none());
    assert_eq!(p.count_placements("small", "t").await.unwrap(), 1);
    // room again after a release
    assert!(p.release(&a, "small", first.epoch).await.unwrap());
    let second = p.claim(&b, "small", at(2), TTL).await.unwrap();
    assert!(second.epoch > first.epoch);
}

/// Many tasks claiming one actor at once, with different candidates: exactly one placement
/// wins, and every task sees it.
pub async fn claim_concurrent_single_winner<H: ProviderHarness>(mut h: H) {
    let p = Arc::new(h.fresh().await);
    let hosts = ["h1", "h2", "h3", "h4", "h5"];
    for host in hosts {
        register(&*p, host, &["t"], at(0)).await;
    }
    let actors = [actor("t", "a"), actor("t", "b"), actor("t", "c")];
    let mut tasks = Vec::new();
    for i in 0..60 {
        let p = p.clone();
        let a = actors[i % actors.len()].clone();
        let candidate = hosts[i % hosts.len()];
        tasks.push(tokio::spawn(async move {
            p.claim(&a, candidate, at(1), TTL).await.map(|pl| (a, pl))
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task").expect("claim succeeds"));
    }
    for a in &actors {
        let seen: HashSet<_> = results
            .iter()
            .filter(|(x, _)| x == a)
            .map(|(_, pl)| (pl.host_id.clone(), pl.epoch))
            .collect();
        assert_eq!(
            seen.len(),
            1,
            "{a}: every claimer sees one placement, saw {seen:?}"
        );
        let (host, epoch) = seen.into_iter().next().expect("one");
        let stored = p.lookup(a, at(1), TTL).await.unwrap().expect("placed");
        assert_eq!((stored.host_id, stored.epoch), (host, epoch));
    }
    let mut total = 0;
    for host in hosts {
        total += p.count_placements(host, "t").await.unwrap();
    }
    assert_eq!(total, actors.len() as u64, "one placement per actor");
}

/// `lookup` returns a placement only while its host is live.
pub async fn lookup_only_live<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t"], at(0)).await;
    let a = actor("t", "a");
    assert!(p.lookup(&a, at(0), TTL).await.unwrap().is_none());
    let placement = p.claim(&a, "h1", at(0), TTL).await.unwrap();
    assert_eq!(
        p.lookup(&a, at(ttl_ms() - 1), TTL).await.unwrap(),
        Some(placement.clone())
    );
    assert!(p.lookup(&a, at(ttl_ms()), TTL).await.unwrap().is_none());
    assert!(
        p.lookup(&actor("t", "other"), at(0), TTL)
            .await
            .unwrap()
            .is_none()
    );
    // a heartbeat makes it visible again (nobody else took it)
    p.heartbeat("h1", at(ttl_ms())).await.unwrap();
    assert_eq!(
        p.lookup(&a, at(ttl_ms()), TTL).await.unwrap(),
        Some(placement)
    );
}

/// `release` removes a placement only for its exact owner and epoch.
pub async fn release_requires_owner_and_epoch<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t"], at(0)).await;
    register(&p, "h2", &["t"], at(0)).await;
    let a = actor("t", "a");
    let placement = p.claim(&a, "h1", at(0), TTL).await.unwrap();
    assert!(
        !p.release(&a, "h2", placement.epoch).await.unwrap(),
        "wrong host"
    );
    assert!(
        !p.release(&a, "h1", placement.epoch + 1).await.unwrap(),
        "wrong epoch"
    );
    assert!(!p.release(&a, "h1", u64::MAX).await.unwrap(), "huge epoch");
    assert!(
        !p.release(&actor("t", "b"), "h1", placement.epoch)
            .await
            .unwrap(),
        "other actor"
    );
    assert_eq!(
        p.lookup(&a, at(0), TTL).await.unwrap(),
        Some(placement.clone())
    );
    assert!(p.release(&a, "h1", placement.epoch).await.unwrap());
    assert!(
        !p.release(&a, "h1", placement.epoch).await.unwrap(),
        "already released"
    );
    assert!(p.lookup(&a, at(0), TTL).await.unwrap().is_none());
    // now it may be placed anywhere
    let next = p.claim(&a, "h2", at(1), TTL).await.unwrap();
    assert_eq!(next.host_id, "h2");
    assert!(next.epoch > placement.epoch);
}

/// Placements are counted per host and per type.
pub async fn count_placements_per_host_and_type<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t", "u"], at(0)).await;
    register(&p, "h2", &["t"], at(0)).await;
    for id in ["a", "b", "c"] {
        p.claim(&actor("t", id), "h1", at(0), TTL).await.unwrap();
    }
    p.claim(&actor("u", "a"), "h1", at(0), TTL).await.unwrap();
    p.claim(&actor("t", "d"), "h2", at(0), TTL).await.unwrap();
    assert_eq!(p.count_placements("h1", "t").await.unwrap(), 3);
    assert_eq!(p.count_placements("h1", "u").await.unwrap(), 1);
    assert_eq!(p.count_placements("h2", "t").await.unwrap(), 1);
    assert_eq!(p.count_placements("h2", "u").await.unwrap(), 0);
    assert_eq!(p.count_placements("nobody", "t").await.unwrap(), 0);
}
