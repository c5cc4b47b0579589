//! Alarms: storage, fencing and leases.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use francis_core::{ActorRef, AlarmProperties, Envelope, Interval};

use super::{ProviderHarness, TTL, actor, at, register};
use crate::error::StoreError;
use crate::provider::{AlarmCompletion, AlarmOutcome, Fence, LeaseRequest, LeasedAlarm, Provider};

const LEASE: Duration = Duration::from_secs(20);

fn request(
    host: &str,
    types: &[&str],
    horizon_ms: i64,
    limit: u32,
    lease_id: &str,
) -> LeaseRequest {
    LeaseRequest {
        host_id: host.into(),
        actor_types: types.iter().map(|t| (*t).to_string()).collect(),
        horizon: at(horizon_ms),
        limit,
        lease_duration: LEASE,
        lease_id: lease_id.into(),
    }
}

async fn set_once<P: Provider>(p: &P, a: &ActorRef, name: &str, due_ms: i64) {
    p.set_alarm(a, name, &AlarmProperties::once(at(due_ms)), Fence::Unfenced)
        .await
        .unwrap_or_else(|e| panic!("set alarm {a} {name}: {e}"));
}

fn keys(leased: &[LeasedAlarm]) -> Vec<(String, String)> {
    leased
        .iter()
        .map(|l| (l.lease.actor.actor_id().to_string(), l.lease.name.clone()))
        .collect()
}

fn repeating(due_ms: i64) -> AlarmProperties {
    AlarmProperties {
        due_time: at(due_ms),
        interval: Some(Interval::new(Duration::from_millis(60_000)).unwrap()),
        ttl: Some(at(due_ms + 600_000)),
        data: Some(Envelope::encode(&serde_json::json!({"hello": "world", "n": 3})).unwrap()),
    }
}

/// Alarms are stored exactly (interval, TTL, data), replaced by name and deleted.
pub async fn alarm_set_get_replace_delete<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    let a = actor("t", "a");
    let b = actor("t", "b");
    assert!(p.get_alarm(&a, "tick").await.unwrap().is_none());
    let first = repeating(1_000);
    p.set_alarm(&a, "tick", &first, Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(p.get_alarm(&a, "tick").await.unwrap(), Some(first.clone()));
    // sub-millisecond intervals are kept exactly
    let fine = AlarmProperties {
        interval: Some(Interval::new(Duration::from_micros(1_500)).unwrap()),
        ..AlarmProperties::once(at(5))
    };
    p.set_alarm(&a, "fine", &fine, Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(p.get_alarm(&a, "fine").await.unwrap(), Some(fine));
    set_once(&p, &b, "tick", 7).await;
    let second = AlarmProperties::once(at(2_000));
    p.set_alarm(&a, "tick", &second, Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(
        p.get_alarm(&a, "tick").await.unwrap(),
        Some(second),
        "setting an existing name replaces it"
    );
    assert_eq!(
        p.get_alarm(&b, "tick").await.unwrap(),
        Some(AlarmProperties::once(at(7))),
        "names are per actor"
    );
    assert!(p.delete_alarm(&a, "tick", Fence::Unfenced).await.unwrap());
    assert!(!p.delete_alarm(&a, "tick", Fence::Unfenced).await.unwrap());
    assert!(p.get_alarm(&a, "tick").await.unwrap().is_none());
    assert!(p.get_alarm(&a, "fine").await.unwrap().is_some());
    assert!(p.get_alarm(&b, "tick").await.unwrap().is_some());
}

/// Alarm writes carrying a stale epoch are refused and change nothing.
pub async fn alarm_fencing<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t"], at(0)).await;
    let a = actor("t", "a");
    let old = p.claim(&a, "h1", at(0), TTL).await.unwrap();
    p.set_alarm(
        &a,
        "tick",
        &AlarmProperties::once(at(1)),
        Fence::Epoch(old.epoch),
    )
    .await
    .unwrap();
    assert!(p.release(&a, "h1", old.epoch).await.unwrap());
    let new = p.claim(&a, "h1", at(1), TTL).await.unwrap();
    match p
        .set_alarm(
            &a,
            "tick",
            &AlarmProperties::once(at(99)),
            Fence::Epoch(old.epoch),
        )
        .await
    {
        Err(StoreError::Fenced { actor, epoch }) => {
            assert_eq!(actor, a);
            assert_eq!(epoch, old.epoch);
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    match p.delete_alarm(&a, "tick", Fence::Epoch(old.epoch)).await {
        Err(StoreError::Fenced { epoch, .. }) => assert_eq!(epoch, old.epoch),
        other => panic!("expected Fenced, got {other:?}"),
    }
    match p
        .set_alarm(
            &actor("t", "unplaced"),
            "x",
            &AlarmProperties::once(at(1)),
            Fence::Epoch(new.epoch),
        )
        .await
    {
        Err(StoreError::Fenced { .. }) => {}
        other => panic!("an actor without placement is fenced, got {other:?}"),
    }
    assert_eq!(
        p.get_alarm(&a, "tick").await.unwrap(),
        Some(AlarmProperties::once(at(1))),
        "nothing changed"
    );
    p.set_alarm(
        &a,
        "tick",
        &AlarmProperties::once(at(2)),
        Fence::Epoch(new.epoch),
    )
    .await
    .unwrap();
    assert_eq!(
        p.get_alarm(&a, "tick").await.unwrap(),
        Some(AlarmProperties::once(at(2)))
    );
    assert!(
        p.delete_alarm(&a, "tick", Fence::Epoch(new.epoch))
            .await
            .unwrap()
    );
}

/// Leasing returns the alarms due by the horizon for the requested types, earliest first, with
/// their properties, attempts and lease expiry.
pub async fn alarm_lease_due_types_and_order<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    set_once(&p, &actor("t", "late"), "x", 1_500).await;
    set_once(&p, &actor("t", "early"), "x", -100).await;
    p.set_alarm(&actor("t", "rep"), "r", &repeating(500), Fence::Unfenced)
        .await
        .unwrap();
    set_once(&p, &actor("t", "future"), "x", 5_000).await;
    set_once(&p, &actor("other", "o"), "x", 0).await;
    set_once(&p, &actor("u", "u1"), "x", 1_000).await;

    let leased = p
        .lease_alarms(&request("h1", &["t", "u"], 2_000, 10, "l1"), at(0))
        .await
        .unwrap();
    assert_eq!(
        keys(&leased),
        [
            ("early".to_string(), "x".to_string()),
            ("rep".into(), "r".into()),
            ("u1".into(), "x".into()),
            ("late".into(), "x".into()),
        ],
        "due by the horizon, requested types only, earliest first"
    );
    for l in &leased {
        assert_eq!(l.lease.lease_id, "l1");
        assert_eq!(l.attempts, 0);
        assert_eq!(l.lease_expires_at, at(LEASE.as_millis() as i64));
    }
    assert_eq!(leased[1].properties, repeating(500));
    assert_eq!(leased[1].lease.actor, actor("t", "rep"));
    assert!(
        p.lease_alarms(&request("h1", &[], 10_000, 10, "l2"), at(0))
            .await
            .unwrap()
            .is_empty(),
        "no types, no alarms"
    );
}

/// A leased alarm is not leased again while its lease runs.
pub async fn alarm_lease_is_exclusive<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    for i in 0..5 {
        set_once(&p, &actor("t", &format!("a{i}")), "x", i).await;
    }
    let first = p
        .lease_alarms(&request("h1", &["t"], 100, 3, "l1"), at(0))
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let second = p
        .lease_alarms(&request("h2", &["t"], 100, 10, "l2"), at(1))
        .await
        .unwrap();
    assert_eq!(
        keys(&second),
        [
            ("a3".to_string(), "x".to_string()),
            ("a4".into(), "x".into())
        ]
    );
    assert!(
        p.lease_alarms(&request("h1", &["t"], 100, 10, "l3"), at(2))
            .await
            .unwrap()
            .is_empty(),
        "all leased"
    );
}

/// Concurrent leasers never get the same alarm, and together get all of them.
pub async fn alarm_lease_concurrent_exclusive<H: ProviderHarness>(mut h: H) {
    let p = Arc::new(h.fresh().await);
    const ALARMS: usize = 40;
    for i in 0..ALARMS {
        set_once(&*p, &actor("t", &format!("a{i:02}")), "x", i as i64).await;
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.lease_alarms(
                &request(&format!("h{i}"), &["t"], 1_000, 7, &format!("lease-{i}")),
                at(0),
            )
            .await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task").expect("lease"));
    }
    let unique: HashSet<_> = keys(&all).into_iter().collect();
    assert_eq!(unique.len(), all.len(), "an alarm was leased twice");
    assert_eq!(all.len(), ALARMS, "8 x 7 slots cover all {ALARMS} alarms");
}

/// An expired lease lets another leaser take the alarm; the old lease is then dead.
pub async fn alarm_lease_expiry_then_relase<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    let a = actor("t", "a");
    set_once(&p, &a, "x", 0).await;
    let mut short = request("h1", &["t"], 0, 10, "l1");
    short.lease_duration = Duration::from_millis(1_000);
    let first = p.lease_alarms(&short, at(0)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].lease_expires_at, at(1_000));
    assert!(
        p.lease_alarms(&request("h2", &["t"], 5_000, 10, "l2"), at(999))
            .await
            .unwrap()
            .is_empty(),
        "held until it expires"
    );
    let second = p
        .lease_alarms(&request("h2", &["t"], 5_000, 10, "l3"), at(1_000))
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "leasable once the lease expired");
    assert_eq!(second[0].lease.lease_id, "l3");
    assert!(
        p.renew_alarm_leases("h1", &[first[0].lease.clone()], at(1_001), LEASE)
            .await
            .unwrap()
            .is_empty(),
        "the expired lease cannot be renewed"
    );
    assert!(
        !p.complete_alarm(&first[0].lease, AlarmOutcome::Delete)
            .await
            .unwrap()
    );
    assert!(!p.release_alarm(&first[0].lease).await.unwrap());
    assert!(
        p.get_alarm(&a, "x").await.unwrap().is_some(),
        "nothing changed"
    );
    assert!(
        p.complete_alarm(&second[0].lease, AlarmOutcome::Delete)
            .await
            .unwrap()
    );
}

/// `held_alarm_leases` answers which leases the host still holds, in the order asked, and
/// changes nothing: another host, an unknown lease, a deleted alarm and an expired lease are
/// not held, and a lease that was checked expires when it would have.
pub async fn alarm_held_leases_are_read_without_change<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    for id in ["a", "b", "c"] {
        set_once(&p, &actor("t", id), "x", 0).await;
    }
    let mut req = request("h1", &["t"], 0, 10, "l1");
    req.lease_duration = Duration::from_millis(1_000);
    let leased = p.lease_alarms(&req, at(0)).await.unwrap();
    let leases: Vec<_> = leased.iter().map(|l| l.lease.clone()).collect();
    assert_eq!(leases.len(), 3);
    assert!(
        p.delete_alarm(&actor("t", "b"), "x", Fence::Unfenced)
            .await
            .unwrap()
    );
    let mut unknown = leases[2].clone();
    unknown.lease_id = "not-mine".into();
    let asked = [
        leases[2].clone(),
        leases[1].clone(),
        unknown,
        leases[0].clone(),
    ];
    assert_eq!(
        p.held_alarm_leases("h1", &asked, at(500)).await.unwrap(),
        [leases[2].clone(), leases[0].clone()],
        "held, in the order asked; not the deleted alarm's nor an unknown lease"
    );
    assert!(
        p.held_alarm_leases("h2", &leases, at(500))
            .await
            .unwrap()
            .is_empty(),
        "another host holds none of them"
    );
    assert!(
        p.held_alarm_leases("h1", &leases, at(1_000))
            .await
            .unwrap()
            .is_empty(),
        "expired at 1000: the checks did not extend them"
    );
    let again = p
        .lease_alarms(&request("h2", &["t"], 0, 10, "l2"), at(1_000))
        .await
        .unwrap();
    assert_eq!(again.len(), 2, "leasable by another host once expired");
    assert!(
        p.held_alarm_leases("h1", &[], at(0))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Renewing extends only the leases the host still holds.
pub async fn alarm_renew<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    set_once(&p, &actor("t", "a"), "x", 0).await;
    set_once(&p, &actor("t", "b"), "x", 0).await;
    let mut req = request("h1", &["t"], 0, 10, "l1");
    req.lease_duration = Duration::from_millis(1_000);
    let leased = p.lease_alarms(&req, at(0)).await.unwrap();
    assert_eq!(leased.len(), 2);
    let leases: Vec<_> = leased.iter().map(|l| l.lease.clone()).collect();
    assert!(
        p.renew_alarm_leases("h2", &leases, at(500), LEASE)
            .await
            .unwrap()
            .is_empty(),
        "another host cannot renew them"
    );
    let renewed = p
        .renew_alarm_leases("h1", &leases, at(500), Duration::from_millis(1_000))
        .await
        .unwrap();
    assert_eq!(renewed, leases);
    assert!(
        p.lease_alarms(&request("h2", &["t"], 0, 10, "l2"), at(1_200))
            .await
            .unwrap()
            .is_empty(),
        "renewed until 1500"
    );
    assert!(
        p.complete_alarm(&leases[0], AlarmOutcome::Delete)
            .await
            .unwrap()
    );
    let mut unknown = leases[1].clone();
    unknown.lease_id = "not-mine".into();
    let renewed = p
        .renew_alarm_leases(
            "h1",
            &[leases[0].clone(), leases[1].clone(), unknown],
            at(1_300),
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(renewed, vec![leases[1].clone()], "only leases still held");
    assert!(
        p.renew_alarm_leases("h1", &[], at(1_300), LEASE)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Completing deletes the alarm or moves it to its next occurrence, and ends the lease.
pub async fn alarm_complete_delete_and_reschedule<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    let once = actor("t", "once");
    let rep = actor("t", "rep");
    set_once(&p, &once, "x", 0).await;
    p.set_alarm(&rep, "r", &repeating(0), Fence::Unfenced)
        .await
        .unwrap();
    let leased = p
        .lease_alarms(&request("h1", &["t"], 0, 10, "l1"), at(0))
        .await
        .unwrap();
    assert_eq!(leased.len(), 2);
    let lease_of = |id: &str| {
        leased
            .iter()
            .find(|l| l.lease.actor.actor_id() == id)
            .expect("leased")
            .lease
            .clone()
    };
    assert!(
        p.complete_alarm(&lease_of("once"), AlarmOutcome::Delete)
            .await
            .unwrap()
    );
    assert!(p.get_alarm(&once, "x").await.unwrap().is_none());
    let outcome = AlarmOutcome::Reschedule {
        due: at(60_000),
        attempts: 2,
    };
    assert!(p.complete_alarm(&lease_of("rep"), outcome).await.unwrap());
    let stored = p.get_alarm(&rep, "r").await.unwrap().expect("kept");
    assert_eq!(stored.due_time, at(60_000));
    assert_eq!(stored.interval, repeating(0).interval);
    assert_eq!(stored.data, repeating(0).data);
    assert!(
        !p.complete_alarm(&lease_of("rep"), AlarmOutcome::Delete)
            .await
            .unwrap(),
        "the lease ended with the first completion"
    );
    assert!(
        p.lease_alarms(&request("h1", &["t"], 59_999, 10, "l2"), at(1))
            .await
            .unwrap()
            .is_empty(),
        "not due before its new time"
    );
    let again = p
        .lease_alarms(&request("h2", &["t"], 60_000, 10, "l3"), at(2))
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "the lease was cleared");
    assert_eq!(again[0].attempts, 2);
    assert_eq!(again[0].properties.due_time, at(60_000));
}

/// A lease ends when its alarm is replaced or deleted: completing or releasing it then
/// returns `false` and changes nothing.
pub async fn alarm_complete_after_replace_or_delete<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    let a = actor("t", "a");
    set_once(&p, &a, "x", 0).await;
    set_once(&p, &a, "y", 0).await;
    let leased = p
        .lease_alarms(&request("h1", &["t"], 0, 10, "l1"), at(0))
        .await
        .unwrap();
    assert_eq!(leased.len(), 2);
    let lease_x = leased
        .iter()
        .find(|l| l.lease.name == "x")
        .unwrap()
        .lease
        .clone();
    let lease_y = leased
        .iter()
        .find(|l| l.lease.name == "y")
        .unwrap()
        .lease
        .clone();

    let replacement = AlarmProperties::once(at(10));
    p.set_alarm(&a, "x", &replacement, Fence::Unfenced)
        .await
        .unwrap();
    assert!(
        !p.complete_alarm(&lease_x, AlarmOutcome::Delete)
            .await
            .unwrap()
    );
    assert!(
        !p.complete_alarm(
            &lease_x,
            AlarmOutcome::Reschedule {
                due: at(99),
                attempts: 1
            }
        )
        .await
        .unwrap()
    );
    assert!(!p.release_alarm(&lease_x).await.unwrap());
    assert_eq!(p.get_alarm(&a, "x").await.unwrap(), Some(replacement));
    // the replacement is unleased, with no failed attempts
    let fresh = p
        .lease_alarms(&request("h2", &["t"], 10, 10, "l2"), at(1))
        .await
        .unwrap();
    assert_eq!(keys(&fresh), [("a".to_string(), "x".to_string())]);
    assert_eq!(fresh[0].attempts, 0);

    assert!(p.delete_alarm(&a, "y", Fence::Unfenced).await.unwrap());
    assert!(
        !p.complete_alarm(&lease_y, AlarmOutcome::Delete)
            .await
            .unwrap()
    );
    assert!(
        !p.complete_alarm(
            &lease_y,
            AlarmOutcome::Reschedule {
                due: at(5),
                attempts: 0
            }
        )
        .await
        .unwrap()
    );
    assert!(
        p.get_alarm(&a, "y").await.unwrap().is_none(),
        "completing a deleted alarm does not resurrect it"
    );
}

/// Completing many alarms in one operation applies each outcome as completing it alone
/// would: deletions and reschedules land, a lease that ended (its alarm replaced or deleted)
/// is skipped and changes nothing, and the answer lists the recorded leases in order. A lease
/// listed twice is refused and nothing changes.
pub async fn alarm_complete_many<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    let a = actor("t", "a");
    for name in ["d1", "d2", "gone", "replaced"] {
        set_once(&p, &a, name, 0).await;
    }
    p.set_alarm(&a, "rep", &repeating(0), Fence::Unfenced)
        .await
        .unwrap();
    let leased = p
        .lease_alarms(&request("h1", &["t"], 0, 10, "l1"), at(0))
        .await
        .unwrap();
    assert_eq!(leased.len(), 5);
    let lease = |name: &str| {
        leased
            .iter()
            .find(|l| l.lease.name == name)
            .expect("leased")
            .lease
            .clone()
    };
    assert!(p.delete_alarm(&a, "gone", Fence::Unfenced).await.unwrap());
    let replacement = AlarmProperties::once(at(10));
    p.set_alarm(&a, "replaced", &replacement, Fence::Unfenced)
        .await
        .unwrap();
    let done = |name: &str, outcome| AlarmCompletion {
        lease: lease(name),
        outcome,
    };
    let resched = AlarmOutcome::Reschedule {
        due: at(60_000),
        attempts: 1,
    };
    let twice = vec![done("d1", AlarmOutcome::Delete), done("d1", resched)];
    assert!(matches!(
        p.complete_alarms(&twice).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(
        p.get_alarm(&a, "d1").await.unwrap().is_some(),
        "a refused completion changes nothing"
    );
    let recorded = p
        .complete_alarms(&[
            done("d2", AlarmOutcome::Delete),
            done("gone", AlarmOutcome::Delete),
            done("rep", resched),
            done("replaced", AlarmOutcome::Delete),
            done("d1", AlarmOutcome::Delete),
        ])
        .await
        .unwrap();
    assert_eq!(recorded, vec![lease("d2"), lease("rep"), lease("d1")]);
    assert!(p.get_alarm(&a, "d1").await.unwrap().is_none());
    assert!(p.get_alarm(&a, "d2").await.unwrap().is_none());
    assert!(
        p.get_alarm(&a, "gone").await.unwrap().is_none(),
        "completing a deleted alarm does not resurrect it"
    );
    assert_eq!(
        p.get_alarm(&a, "replaced").await.unwrap(),
        Some(replacement)
    );
    let kept = p.get_alarm(&a, "rep").await.unwrap().expect("rescheduled");
    assert_eq!(kept.due_time, at(60_000));
    assert_eq!(kept.data, repeating(0).data);
    // The rescheduled alarm's lease ended: another host leases it at its new time, with the
    // attempt recorded; the replacement is unleased.
    let again = p
        .lease_alarms(&request("h2", &["t"], 60_000, 10, "l2"), at(1))
        .await
        .unwrap();
    let mut names: Vec<_> = again.iter().map(|l| l.lease.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["rep", "replaced"]);
    let rep = again.iter().find(|l| l.lease.name == "rep").unwrap();
    assert_eq!(rep.attempts, 1);
    assert!(p.complete_alarms(&[]).await.unwrap().is_empty());
}

/// Releasing ends a lease without changing the alarm.
pub async fn alarm_release<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    let a = actor("t", "a");
    let props = repeating(0);
    p.set_alarm(&a, "r", &props, Fence::Unfenced).await.unwrap();
    let leased = p
        .lease_alarms(&request("h1", &["t"], 0, 10, "l1"), at(0))
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert!(p.release_alarm(&leased[0].lease).await.unwrap());
    assert!(
        !p.release_alarm(&leased[0].lease).await.unwrap(),
        "already released"
    );
    assert_eq!(p.get_alarm(&a, "r").await.unwrap(), Some(props));
    let again = p
        .lease_alarms(&request("h2", &["t"], 0, 10, "l2"), at(1))
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "leasable again at once");
    assert!(
        !p.complete_alarm(&leased[0].lease, AlarmOutcome::Delete)
            .await
            .unwrap()
    );
}

/// Alarms of actors placed on the leasing host come first, then by due time.
pub async fn alarm_lease_prefers_local_actors<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t"], at(0)).await;
    register(&p, "h2", &["t"], at(0)).await;
    for (id, due) in [("a1", -40), ("a2", -30), ("a3", -20), ("a4", -10)] {
        set_once(&p, &actor("t", id), "x", due).await;
    }
    p.claim(&actor("t", "a4"), "h1", at(0), TTL).await.unwrap();
    p.claim(&actor("t", "a2"), "h1", at(0), TTL).await.unwrap();
    p.claim(&actor("t", "a1"), "h2", at(0), TTL).await.unwrap();
    let leased = p
        .lease_alarms(&request("h1", &["t"], 0, 3, "l1"), at(0))
        .await
        .unwrap();
    let ids: Vec<String> = keys(&leased).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        ["a2", "a4", "a1"],
        "local first (by due), then the earliest other"
    );
}

/// The preference for local actors applies among the earliest
/// [`lease_candidates`](crate::policy::lease_candidates) alarms only: a local alarm due later
/// than those waits, so a lease never sorts the whole backlog.
pub async fn alarm_lease_prefers_local_actors_among_the_earliest_only<H: ProviderHarness>(
    mut h: H,
) {
    let p = h.fresh().await;
    register(&p, "h1", &["t", "u"], at(0)).await;
    register(&p, "h2", &["t", "u"], at(0)).await;
    // Earliest first: b1 (u, elsewhere), a2 (t, elsewhere), then a3 and a4 (t, local).
    set_once(&p, &actor("u", "b1"), "x", -40).await;
    set_once(&p, &actor("t", "a2"), "x", -30).await;
    set_once(&p, &actor("t", "a3"), "x", -20).await;
    set_once(&p, &actor("t", "a4"), "x", -10).await;
    p.claim(&actor("u", "b1"), "h2", at(0), TTL).await.unwrap();
    p.claim(&actor("t", "a3"), "h1", at(0), TTL).await.unwrap();
    p.claim(&actor("t", "a4"), "h1", at(0), TTL).await.unwrap();
    let window = crate::policy::lease_candidates(1) as usize;
    assert_eq!(
        window, 2,
        "this case is written for two candidates per alarm"
    );
    let one = p
        .lease_alarms(&request("h1", &["t", "u"], 0, 1, "l1"), at(0))
        .await
        .unwrap();
    assert_eq!(
        keys(&one),
        [("b1".to_string(), "x".to_string())],
        "the two earliest (of either type) are not local: the earliest of them"
    );
    let two = p
        .lease_alarms(&request("h1", &["t", "u"], 0, 2, "l2"), at(0))
        .await
        .unwrap();
    let ids: Vec<String> = keys(&two).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        ["a3", "a4"],
        "of the four earliest left (a2, a3, a4), the local ones first"
    );
}

/// Leasing honours the limit (earliest first) and the horizon (inclusive).
pub async fn alarm_lease_limit_and_horizon<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    for i in 0..10 {
        set_once(&p, &actor("t", &format!("a{i}")), "x", i * 100).await;
    }
    let first = p
        .lease_alarms(&request("h1", &["t"], 10_000, 3, "l1"), at(0))
        .await
        .unwrap();
    let ids: Vec<String> = keys(&first).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["a0", "a1", "a2"]);
    let bounded = p
        .lease_alarms(&request("h1", &["t"], 500, 10, "l2"), at(0))
        .await
        .unwrap();
    let ids: Vec<String> = keys(&bounded).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        ["a3", "a4", "a5"],
        "due exactly at the horizon is included"
    );
    let one = p
        .lease_alarms(&request("h1", &["t"], 10_000, 1, "l3"), at(0))
        .await
        .unwrap();
    assert_eq!(keys(&one), [("a6".to_string(), "x".to_string())]);
}
