//! Many writers at once, and reopening a store.

use std::sync::Arc;
use std::time::Duration;

use francis_core::{AlarmProperties, Envelope, Interval};

use super::{ProviderHarness, TTL, actor, at, register};
use crate::provider::{Fence, LeaseRequest, Provider};

const WRITERS: usize = 200;

async fn write_many<P: Provider>(p: Arc<P>) {
    let mut tasks = Vec::with_capacity(WRITERS);
    for i in 0..WRITERS {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let a = actor("t", &format!("a{i:04}"));
            p.set_state(&a, format!("{i}").as_bytes(), None, Fence::Unfenced)
                .await?;
            if i % 4 == 0 {
                p.set_alarm(
                    &a,
                    "tick",
                    &AlarmProperties::once(at(i as i64)),
                    Fence::Unfenced,
                )
                .await?;
            }
            Ok::<_, crate::StoreError>(())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        t.await
            .expect("task")
            .unwrap_or_else(|e| panic!("writer {i} failed: {e}"));
    }
}

async fn check_many<P: Provider>(p: &P) {
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let page = p
            .list_states("t", after.as_deref(), 64, true, at(0))
            .await
            .unwrap();
        for item in &page.items {
            let i: usize = item.actor_id[1..].parse().expect("id");
            assert_eq!(item.data.as_deref(), Some(format!("{i}").as_bytes()));
            seen += 1;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, WRITERS, "every acknowledged write landed");
    for i in (0..WRITERS).step_by(4) {
        let a = actor("t", &format!("a{i:04}"));
        let alarm = p.get_alarm(&a, "tick").await.unwrap();
        assert_eq!(alarm.map(|x| x.due_time), Some(at(i as i64)));
    }
}

/// Hundreds of concurrent writes all succeed and all land.
pub async fn concurrent_writers_all_land<H: ProviderHarness>(mut h: H) {
    let p = Arc::new(h.fresh().await);
    write_many(p.clone()).await;
    check_many(&*p).await;
}

/// Everything acknowledged before a store is closed is there after it is reopened, and
/// epochs keep growing.
pub async fn durability_reopen<H: ProviderHarness>(mut h: H) {
    let p = h.fresh().await;
    register(&p, "h1", &["t"], at(0)).await;
    let a = actor("t", "a");
    let placement = p.claim(&a, "h1", at(0), TTL).await.unwrap();
    p.set_state(
        &a,
        br#"{"n":1}"#,
        Some(at(100_000)),
        Fence::Epoch(placement.epoch),
    )
    .await
    .unwrap();
    let alarm = AlarmProperties {
        due_time: at(50),
        interval: Some(Interval::new(Duration::from_millis(1_500)).unwrap()),
        ttl: Some(at(90_000)),
        data: Some(Envelope::encode(&serde_json::json!({"k": [1, 2]})).unwrap()),
    };
    p.set_alarm(&a, "tick", &alarm, Fence::Epoch(placement.epoch))
        .await
        .unwrap();
    let request = |lease_id: &str| LeaseRequest {
        host_id: "h1".into(),
        actor_types: vec!["t".into()],
        horizon: at(100),
        limit: 10,
        lease_duration: Duration::from_secs(30),
        lease_id: lease_id.into(),
    };
    let leased = p.lease_alarms(&request("l1"), at(60)).await.unwrap();
    assert_eq!(leased.len(), 1);
    let released = p.claim(&actor("t", "b"), "h1", at(0), TTL).await.unwrap();
    assert!(
        p.release(&actor("t", "b"), "h1", released.epoch)
            .await
            .unwrap()
    );

    let p = h.reopen(p).await;
    let hosts = p.live_hosts(at(1), TTL).await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].host_id, "h1");
    assert_eq!(hosts[0].actor_types.len(), 1);
    assert_eq!(
        p.lookup(&a, at(1), TTL).await.unwrap(),
        Some(placement.clone())
    );
    let state = p
        .get_state(&a, at(1))
        .await
        .unwrap()
        .expect("state survived");
    assert_eq!(state.data, br#"{"n":1}"#.to_vec());
    assert_eq!(state.expires_at, Some(at(100_000)));
    assert_eq!(p.get_alarm(&a, "tick").await.unwrap(), Some(alarm));
    // the lease survived too
    assert!(
        p.lease_alarms(&request("l2"), at(61))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        p.renew_alarm_leases(
            "h1",
            &[leased[0].lease.clone()],
            at(62),
            Duration::from_secs(30)
        )
        .await
        .unwrap(),
        vec![leased[0].lease.clone()]
    );
    // the epoch counter survived: no epoch is reused, not even a released one
    let next = p.claim(&actor("t", "c"), "h1", at(2), TTL).await.unwrap();
    assert!(next.epoch > released.epoch && released.epoch > placement.epoch);
    // and fencing still holds
    p.set_state(&a, b"2", None, Fence::Epoch(placement.epoch))
        .await
        .unwrap();
}

/// Writes acknowledged under heavy concurrency all survive a reopen.
pub async fn durability_concurrent_writes_survive_reopen<H: ProviderHarness>(mut h: H) {
    let p = Arc::new(h.fresh().await);
    write_many(p.clone()).await;
    let p = Arc::try_unwrap(p).unwrap_or_else(|_| panic!("writers are done"));
    let p = h.reopen(p).await;
    check_many(&p).await;
}
