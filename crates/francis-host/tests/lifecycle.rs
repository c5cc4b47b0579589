//! Idle deactivation, halts, state, fencing and shutdown.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use francis_core::CancellationToken;
use francis_core::{ActorService, Envelope, ErrorKind, ListStatesOptions, SetStateOptions};
use francis_host::{DeactivationReason, Health, HostError, HostEvent, LocalHost};
use francis_store::{MemoryProvider, Provider};
use support::*;
use tokio::time::Instant;

fn deactivated(id: &'static str, why: DeactivationReason) -> impl Fn(&HostEvent) -> bool {
    move |e| matches!(e, HostEvent::Deactivated { actor, reason, .. } if actor.actor_id() == id && *reason == why)
}

#[tokio::test(start_paused = true)]
async fn idle_actors_deactivate_and_come_back_with_their_state() {
    let mut h = memory_host(options()).await;
    let svc = h.service();
    assert_eq!(increment(&svc, "a").await, 1);
    assert_eq!(increment(&svc, "a").await, 2);
    let last_turn = Instant::now();
    h.event(
        Duration::from_secs(60),
        deactivated("a", DeactivationReason::Idle),
    )
    .await;
    let idle = last_turn.elapsed();
    assert!(
        idle >= Duration::from_secs(10) && idle < Duration::from_secs(12),
        "deactivated after {idle:?}"
    );
    assert_eq!(h.probe.deactivated.load(Ordering::SeqCst), 1);
    assert!(h.host.active_actors().is_empty());
    assert_eq!(increment(&svc, "a").await, 3);
    assert_eq!(h.probe.created.load(Ordering::SeqCst), 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_busy_actor_is_never_deactivated_mid_turn() {
    let mut h = memory_host(options()).await;
    let svc = h.service();
    let hold = tokio::spawn({
        let svc = svc.clone();
        async move { invoke(&svc, "a", "hold").await }
    });
    h.wait_for_log("hold:start").await;
    // Far past the idle timeout while the turn runs: still active, never deactivated. Time
    // moves in steps so that heartbeats keep the lease (one jump would be a freeze).
    for _ in 0..30 {
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    while let Ok(e) = h.events.try_recv() {
        assert!(!matches!(e, HostEvent::Deactivated { .. }), "{e:?}");
    }
    assert_eq!(h.host.active_actors(), vec![actor("a")]);
    h.probe.release.notify_one();
    hold.await.unwrap().unwrap();
    h.event(
        Duration::from_secs(60),
        deactivated("a", DeactivationReason::Idle),
    )
    .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn idle_deactivation_can_be_disabled() {
    let opts = francis_host::ActorOptions {
        idle_timeout: None,
        ..options()
    };
    let h = memory_host(opts).await;
    let svc = h.service();
    increment(&svc, "a").await;
    // an hour, in steps that let heartbeats (every second) keep the lease
    for _ in 0..3600 {
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(h.host.active_actors(), vec![actor("a")]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn halt_from_inside_and_outside() {
    let mut h = memory_host(options()).await;
    let svc = h.service();
    increment(&svc, "a").await;
    // inside: after the current turn, which still answers
    let out: i64 = invoke(&svc, "a", "halt-self")
        .await
        .unwrap()
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(out, 1);
    h.event(
        Duration::from_secs(5),
        deactivated("a", DeactivationReason::Halted),
    )
    .await;
    assert_eq!(increment(&svc, "a").await, 2);
    // outside: the running turn sees its cancellation, then the actor deactivates
    let hold = tokio::spawn({
        let svc = svc.clone();
        async move { invoke(&svc, "a", "hold").await }
    });
    h.wait_for_log("hold:start").await;
    svc.halt(&actor("a")).await.unwrap();
    hold.await.unwrap().unwrap();
    assert!(h.probe.log().contains(&"hold:cancelled".to_owned()));
    h.event(
        Duration::from_secs(5),
        deactivated("a", DeactivationReason::Halted),
    )
    .await;
    // not active here
    let err = svc.halt(&actor("a")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ActorNotHosted);
    // halt_all
    increment(&svc, "b").await;
    increment(&svc, "c").await;
    svc.halt_all().await.unwrap();
    h.event(
        Duration::from_secs(5),
        deactivated("b", DeactivationReason::Halted),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while !h.host.active_actors().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!(increment(&svc, "a").await, 3);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn outside_state_writes_go_through_the_activation() {
    let h = memory_host(options()).await;
    let svc = h.service();
    assert_eq!(increment(&svc, "a").await, 1); // the actor's client caches n=1
    svc.set_state(
        &actor("a"),
        json(serde_json::json!({"n": 10})),
        SetStateOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(increment(&svc, "a").await, 11);
    assert_eq!(
        svc.get_state(&actor("a"))
            .await
            .unwrap()
            .decode::<serde_json::Value>()
            .unwrap(),
        serde_json::json!({"n": 11})
    );
    svc.delete_state(&actor("a")).await.unwrap();
    assert_eq!(increment(&svc, "a").await, 1);
    svc.delete_state(&actor("gone")).await.unwrap();
    let err = svc.get_state(&actor("gone")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StateNotFound);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn state_ttl_and_listing() {
    let h = memory_host(options()).await;
    let svc = h.service();
    svc.set_state(
        &actor("short"),
        json(serde_json::json!({"n": 5})),
        SetStateOptions::with_ttl(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert_eq!(
        invoke(&svc, "short", "get")
            .await
            .unwrap()
            .unwrap()
            .decode::<i64>()
            .unwrap(),
        5
    );
    // 11 s, in steps that let heartbeats keep the lease
    for _ in 0..11 {
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(
        svc.get_state(&actor("short")).await.unwrap_err().kind(),
        ErrorKind::StateNotFound
    );
    // the actor's cache did not keep the expired state
    assert_eq!(
        invoke(&svc, "short", "get")
            .await
            .unwrap()
            .unwrap()
            .decode::<i64>()
            .unwrap(),
        0
    );

    for id in ["e", "a", "d", "b", "c"] {
        increment(&svc, id).await;
    }
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = svc
            .list_states(
                TYPE,
                ListStatesOptions {
                    after: after.clone(),
                    limit: Some(2),
                    include_data: true,
                },
            )
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        for item in &page.items {
            assert_eq!(item.data.as_ref().unwrap().as_bytes(), br#"{"n":1}"#);
            ids.push(item.actor_id.clone());
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    let bad = svc
        .list_states(
            TYPE,
            ListStatesOptions {
                limit: Some(5000),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
    let reserved = svc
        .list_states("francis.builtin.x", ListStatesOptions::default())
        .await
        .unwrap_err();
    assert_eq!(reserved.kind(), ErrorKind::ActorTypeReserved);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stale_activation_is_fenced_and_deactivated() {
    let provider = Arc::new(MemoryProvider::new());
    let mut h = start(provider.clone(), options()).await;
    let svc = h.service();
    assert_eq!(increment(&svc, "a").await, 1);
    // Behind the host's back, the placement moves on (as if its lease had been lost).
    let placement = provider
        .lookup(&actor("a"), Utc::now(), Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    assert!(
        provider
            .release(&actor("a"), &placement.host_id, placement.epoch)
            .await
            .unwrap()
    );
    let newer = provider
        .claim(
            &actor("a"),
            &placement.host_id,
            Utc::now(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert!(newer.epoch > placement.epoch);
    let err = invoke(&svc, "a", "increment").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced);
    h.event(
        Duration::from_secs(5),
        deactivated("a", DeactivationReason::Fenced),
    )
    .await;
    // the stale write changed nothing; a fresh activation continues from the stored state
    assert_eq!(increment(&svc, "a").await, 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_host_that_cannot_heartbeat_fences_itself_before_its_lease_expires() {
    let provider = Arc::new(StallingProvider::new(MemoryProvider::new()));
    let never_idle = francis_host::ActorOptions {
        idle_timeout: None,
        ..options()
    };
    let mut h = start(provider.clone(), never_idle).await;
    let svc = h.service();
    increment(&svc, "a").await;
    let first_id = h.host.host_id();
    let stalled_at = Instant::now();
    provider.stall.store(true, Ordering::SeqCst);
    let fenced = h
        .event(Duration::from_secs(60), |e| {
            matches!(e, HostEvent::Fenced { .. })
        })
        .await;
    let after = stalled_at.elapsed();
    // The last heartbeat that succeeded was sent at most one interval (1 s) before the stall;
    // the host fences at three quarters of the deadline (8 s) after it, so before any other
    // host may take over.
    assert!(after <= Duration::from_secs(6), "fenced after {after:?}");
    assert!(
        after >= Duration::from_secs(5),
        "fenced too early: {after:?}"
    );
    assert!(matches!(fenced, HostEvent::Fenced { ref host_id, .. } if *host_id == first_id));
    assert!(matches!(h.host.health(), Health::Fenced(_)));
    let err = invoke(&svc, "b", "increment").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostUnavailable);
    h.event(
        Duration::from_secs(30),
        deactivated("a", DeactivationReason::Fenced),
    )
    .await;
    // It re-registers under a new id and serves again, state intact.
    provider.stall.store(false, Ordering::SeqCst);
    h.event(Duration::from_secs(30), |e| {
        matches!(e, HostEvent::Registered { .. })
    })
    .await;
    assert_ne!(h.host.host_id(), first_id);
    let mut health = h.host.health_watch();
    tokio::time::timeout(
        Duration::from_secs(5),
        health.wait_for(|s| *s == Health::Serving),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(increment(&svc, "a").await, 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_running_turn_finish_and_refuses_new_calls() {
    let h = memory_host(options()).await;
    let svc = h.service();
    increment(&svc, "a").await;
    let hold = tokio::spawn({
        let svc = svc.clone();
        async move { invoke(&svc, "a", "hold").await }
    });
    h.wait_for_log("hold:start").await;
    h.shutdown.cancel();
    let mut health = h.host.health_watch();
    health.wait_for(|s| *s == Health::Draining).await.unwrap();
    let err = invoke(&svc, "b", "increment").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShuttingDown);
    assert!(err.is_retryable());
    tokio::time::advance(Duration::from_secs(5)).await;
    h.probe.release.notify_one();
    hold.await.unwrap().unwrap();
    h.task.await.unwrap().unwrap();
    assert_eq!(h.host.health(), Health::Stopped);
    assert_eq!(h.probe.log(), ["hold:start", "hold:released"]);
    assert_eq!(h.probe.deactivated.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_turns_that_outlive_the_grace_period() {
    let provider = Arc::new(MemoryProvider::new());
    let h = start_with(provider.clone(), options(), |b| {
        b.shutdown_grace_period(Duration::from_secs(3))
    })
    .await;
    let svc = h.service();
    let hold = tokio::spawn({
        let svc = svc.clone();
        async move { invoke(&svc, "a", "hold").await }
    });
    h.wait_for_log("hold:start").await;
    let started = Instant::now();
    h.shutdown.cancel();
    h.task.await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3));
    hold.await.unwrap().unwrap();
    assert_eq!(h.probe.log(), ["hold:start", "hold:cancelled"]);
    // everything was released: no live host, no placement
    assert!(
        provider
            .lookup(&actor("a"), Utc::now(), Duration::from_secs(3600))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        provider
            .live_hosts(Utc::now(), Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
    let _ = Envelope::null();
}

#[tokio::test(start_paused = true)]
async fn a_host_past_its_lease_refuses_reads_and_turns_before_its_heartbeat_task_runs() {
    let provider = Arc::new(MemoryProvider::new());
    let never_idle = francis_host::ActorOptions {
        idle_timeout: None,
        ..options()
    };
    // The heartbeat task sleeps through the whole freeze: only the request path can notice.
    let mut h = start_with(provider.clone(), never_idle, |b| {
        b.with_timings(|t| {
            t.health_deadline = Duration::from_secs(20);
            t.heartbeat_interval = Duration::from_secs(19);
        })
    })
    .await;
    let svc = h.service();
    assert_eq!(increment(&svc, "a").await, 1);
    assert_eq!(increment(&svc, "b").await, 1);
    let hold = tokio::spawn({
        let svc = svc.clone();
        async move { invoke(&svc, "a", "hold").await }
    });
    h.wait_for_log("hold:start").await;
    // a peek and an invoke queue behind the running turn
    let queued_peek = tokio::spawn({
        let svc = svc.clone();
        async move { svc.peek(&actor("a"), "count", Envelope::null()).await }
    });
    let queued_invoke = tokio::spawn({
        let svc = svc.clone();
        async move { invoke(&svc, "a", "increment").await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    // The process is frozen past the fence point (15 s of 20 s), not yet to the next
    // heartbeat. Calls to b (active, its state cached) arrive first.
    tokio::time::advance(Duration::from_secs(16)).await;
    let fresh_peek = svc
        .peek(&actor("b"), "count", Envelope::null())
        .await
        .unwrap_err();
    let fresh_invoke = invoke(&svc, "b", "increment").await.unwrap_err();
    assert!(matches!(h.host.health(), Health::Fenced(_)));
    assert!(matches!(svc.health(), Health::Fenced(_)));
    h.probe.release.notify_one();
    let _ = hold.await.unwrap();
    for err in [
        fresh_peek,
        fresh_invoke,
        queued_peek.await.unwrap().unwrap_err(),
        queued_invoke.await.unwrap().unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::HostUnavailable, "{err}");
        assert!(err.is_retryable());
    }
    // nothing ran after the lease lapsed
    for id in ["a", "b"] {
        let stored = provider.get_state(&actor(id), Utc::now()).await.unwrap();
        assert_eq!(stored.unwrap().data, br#"{"n":1}"#.to_vec());
    }
    // the host fences itself and comes back under a new id
    h.event(Duration::from_secs(60), |e| {
        matches!(e, HostEvent::Fenced { .. })
    })
    .await;
    h.event(Duration::from_secs(60), |e| {
        matches!(e, HostEvent::Registered { .. })
    })
    .await;
    assert_eq!(increment(&svc, "a").await, 2);
    assert_eq!(increment(&svc, "b").await, 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_shorter_than_the_lease_does_not_fence_the_host() {
    // A Raft leader frozen for 4 s: heartbeats sent meanwhile never answer; a new leader
    // serves them again after the outage. The host must retry in time rather than fence
    // (at 6 s of the default 8 s deadline).
    let provider = Arc::new(StallingProvider::new(MemoryProvider::new()));
    let never_idle = francis_host::ActorOptions {
        idle_timeout: None,
        ..options()
    };
    let mut h = start(provider.clone(), never_idle).await;
    let svc = h.service();
    let first_id = h.host.host_id();
    assert_eq!(increment(&svc, "a").await, 1);
    // just after a heartbeat went through (every second)
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    *provider.heartbeat_outage_until.lock().unwrap() =
        Some(Instant::now() + Duration::from_secs(4));
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(h.host.health(), Health::Serving);
    }
    while let Ok(e) = h.events.try_recv() {
        assert!(!matches!(e, HostEvent::Fenced { .. }), "{e:?}");
    }
    assert_eq!(h.host.host_id(), first_id);
    assert_eq!(increment(&svc, "a").await, 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_host_never_says_a_type_it_serves_is_unsupported() {
    let provider = Arc::new(StallingProvider::new(MemoryProvider::new()));
    let h = start(provider.clone(), options()).await;
    let svc = h.service();
    // no membership view cached from start-up
    tokio::time::sleep(Duration::from_secs(2)).await;
    // One stale (empty) view, as right after re-registering from fencing: the host reads the
    // store again and places the actor.
    provider.hide_hosts.store(1, Ordering::SeqCst);
    assert_eq!(increment(&svc, "a").await, 1);
    // Still no live host in the fresh view: retryable, never actor_type_unsupported.
    tokio::time::sleep(Duration::from_secs(2)).await;
    provider.hide_hosts.store(2, Ordering::SeqCst);
    let err = invoke(&svc, "b", "increment").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHost, "{err}");
    assert!(err.is_retryable());
    assert_eq!(increment(&svc, "b").await, 1);
    // A type nobody serves is still unsupported, after a fresh look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    provider.hide_hosts.store(1, Ordering::SeqCst);
    let other = francis_core::ActorRef::new("nobody-serves-this", "x").unwrap();
    let err = svc.invoke(&other, "m", Envelope::null()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ActorTypeUnsupported);
    h.stop().await;
}

/// A host on an in-memory store whose peer transport binds `addr`.
async fn memory_host_on(addr: std::net::SocketAddr) -> LocalHost {
    LocalHost::builder()
        .address(addr.to_string())
        .runtime_psks([CLUSTER_PSK])
        .provider(Arc::new(MemoryProvider::new()))
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_host_that_cannot_start_says_so_on_its_health_watch_and_to_whoever_waits_for_it() {
    // Another socket holds the peer port: `run` fails, and a caller waiting for the host to
    // serve (with `run` spawned on a clone, its result unread) is told why instead of hanging.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let host = memory_host_on(addr).await;
    let runner = host.clone();
    let task = tokio::spawn(async move { runner.run(CancellationToken::new()).await });
    let err = tokio::time::timeout(Duration::from_secs(30), host.serving())
        .await
        .expect("serving answers")
        .unwrap_err();
    assert!(matches!(err, HostError::NotServing(_)), "{err}");
    assert!(err.to_string().contains("peer transport"), "{err}");
    assert!(
        matches!(host.health(), Health::Failed(_)),
        "{:?}",
        host.health()
    );
    let ran = task.await.unwrap();
    assert!(matches!(ran, Err(HostError::Transport(_))), "{ran:?}");
    // Nothing holds the port any more: a new host on it serves.
    drop(taken);
    let again = memory_host_on(addr).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (host, shutdown) = (again.clone(), shutdown.clone());
        async move { host.run(shutdown).await }
    });
    tokio::time::timeout(Duration::from_secs(30), again.serving())
        .await
        .expect("serving answers")
        .unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    // Once stopped, waiting to serve fails at once.
    assert!(matches!(
        again.serving().await,
        Err(HostError::NotServing(_))
    ));
}
