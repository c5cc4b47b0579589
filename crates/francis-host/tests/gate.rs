//! The output gate: a turn's answer (and any call it makes) leaves only once every write it
//! could have observed is durable, while the next turns run and share the next commit.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use francis_core::ErrorKind;
use francis_host::{DeactivationReason, HostEvent};
use francis_store::MemoryProvider;
use support::*;

const LIMIT: Duration = Duration::from_secs(10);

fn held_store() -> Arc<StallingProvider> {
    Arc::new(StallingProvider::new(MemoryProvider::new()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_wait_for_the_commit_and_the_turns_behind_share_the_next() {
    let store = held_store();
    let h = start(store.clone(), options()).await;
    let svc = h.service();
    assert_eq!(increment(&svc, "hot").await, 1);
    let writes = store.count("set_state");
    let turns = h.probe.turns.load(Ordering::SeqCst);

    store.hold_writes.store(true, Ordering::SeqCst);
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { increment(&svc, "hot").await }
    });
    until("the first commit reaches the store", LIMIT, || {
        store.count("set_state") == writes + 1
    })
    .await;
    // Twenty more turns run while that commit waits: they read the written-behind state.
    let rest: Vec<_> = (0..20)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { increment(&svc, "hot").await })
        })
        .collect();
    until("the turns behind the commit ran", LIMIT, || {
        h.probe.turns.load(Ordering::SeqCst) == turns + 21
    })
    .await;
    assert!(
        !first.is_finished(),
        "an answer left before its write was durable"
    );
    assert!(rest.iter().all(|c| !c.is_finished()));
    assert_eq!(
        store.count("set_state"),
        writes + 1,
        "one commit in flight at a time"
    );

    store.release_writes();
    let mut seen = vec![first.await.unwrap()];
    for c in rest {
        seen.push(c.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, (2..=22).collect::<Vec<_>>());
    // The twenty turns behind the first commit shared one more.
    assert_eq!(store.count("set_state"), writes + 2);
    assert_eq!(h.probe.violations.load(Ordering::SeqCst), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_commit_fails_the_answers_it_held_and_the_next_call_reads_the_stored_state() {
    let store = held_store();
    let mut h = start(store.clone(), options()).await;
    let svc = h.service();
    assert_eq!(increment(&svc, "hot").await, 1);

    store.hold_writes.store(true, Ordering::SeqCst);
    store.fence_writes.store(true, Ordering::SeqCst);
    let turns = h.probe.turns.load(Ordering::SeqCst);
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { invoke(&svc, "hot", "increment").await })
        })
        .collect();
    until("the five turns ran", LIMIT, || {
        h.probe.turns.load(Ordering::SeqCst) >= turns + 2
    })
    .await;
    store.release_writes();
    // Every write is fenced: the held answers fail, and so do the turns handed on to the
    // next activation.
    for c in calls {
        let e = c
            .await
            .unwrap()
            .expect_err("a fenced write is never answered as a success");
        assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
        assert!(e.is_retryable(), "a lost write is worth retrying: {e}");
    }
    h.event(LIMIT, |e| {
        matches!(
            e,
            HostEvent::Deactivated {
                reason: DeactivationReason::Fenced,
                ..
            }
        )
    })
    .await;

    store.fence_writes.store(false, Ordering::SeqCst);
    // The next activation reads what was stored: no caller ever saw the lost counts.
    assert_eq!(get_count(&svc, "hot").await, 1);
    assert_eq!(increment(&svc, "hot").await, 2);
    assert_eq!(h.probe.double_activations.load(Ordering::SeqCst), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_another_actor_leaves_only_after_the_callers_write_is_durable() {
    let store = held_store();
    let h = start(store.clone(), options()).await;
    let svc = h.service();
    assert_eq!(increment(&svc, "a").await, 1);
    assert_eq!(increment(&svc, "b").await, 1);
    let writes = store.count("set_state");
    let turns = h.probe.turns.load(Ordering::SeqCst);

    store.hold_writes.store(true, Ordering::SeqCst);
    let call = tokio::spawn({
        let svc = svc.clone();
        async move { relay_counting(&svc, "a", "b").await }
    });
    until("a's write reaches the store", LIMIT, || {
        store.count("set_state") == writes + 1
    })
    .await;
    assert_eq!(
        h.probe.turns.load(Ordering::SeqCst),
        turns + 1,
        "b was called before a's write was durable"
    );
    store.release_writes();
    assert_eq!(call.await.unwrap(), 2, "b counted once");
    assert_eq!(get_count(&svc, "a").await, 2);
    h.stop().await;
}

/// `a` counts, then calls `b`, which counts too; returns `b`'s count.
async fn relay_counting(svc: &francis_host::HostService, a: &str, b: &str) -> i64 {
    use francis_core::ActorService;
    let hops = Relay {
        hops: vec![b.to_owned()],
        peek: false,
    };
    svc.invoke(
        &actor(a),
        "count-and-relay",
        francis_core::Envelope::encode(&hops).unwrap(),
    )
    .await
    .unwrap()
    .unwrap()
    .decode()
    .unwrap()
}

async fn get_count(svc: &francis_host::HostService, id: &str) -> i64 {
    invoke(svc, id, "get")
        .await
        .unwrap()
        .unwrap()
        .decode()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_too_large_to_store_is_refused_at_once_and_the_activation_stays() {
    use francis_core::ActorService;
    let h = memory_host(options()).await;
    let svc = h.service();
    assert_eq!(increment(&svc, "big").await, 1);
    let huge = francis_core::Envelope::encode(&"x".repeat(16 * 1024 * 1024)).unwrap();
    let e = svc
        .set_state(&actor("big"), huge, Default::default())
        .await
        .expect_err("a value above the message limit is refused");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(!e.is_retryable());
    assert_eq!(increment(&svc, "big").await, 2, "nothing was lost");
    assert_eq!(h.probe.created.load(Ordering::SeqCst), 1, "not discarded");
    h.stop().await;
}
