//! Activation, turns and their ordering.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use francis_core::{ActorService, Envelope, ErrorKind};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_are_exact_and_never_overlap() {
    let h = memory_host(options()).await;
    let svc = h.service();
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { increment(&svc, "counter").await })
        })
        .collect();
    let mut seen: Vec<i64> = Vec::new();
    for c in calls {
        seen.push(c.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, (1..=100).collect::<Vec<_>>());
    assert_eq!(increment(&svc, "counter").await, 101);
    assert_eq!(h.probe.violations.load(Ordering::SeqCst), 0);
    // a burst of first calls activated the actor exactly once
    assert_eq!(h.probe.created.load(Ordering::SeqCst), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn peeks_overlap_each_other_but_never_an_invoke() {
    let h = memory_host(options()).await;
    let svc = h.service();
    increment(&svc, "a").await;
    // Two peeks meet at a barrier of two: they can only finish if they run at the same time.
    let a = actor("a");
    let (p1, p2) = tokio::join!(
        svc.peek(&a, "barrier", Envelope::null()),
        svc.peek(&a, "barrier", Envelope::null())
    );
    p1.unwrap();
    p2.unwrap();
    // A mix of invokes and peeks: no peek ever sees an invoke running, and vice versa.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                increment(&svc, "a").await;
            } else {
                svc.peek(&actor("a"), "count", Envelope::null())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(h.probe.violations.load(Ordering::SeqCst), 0);
    assert!(h.probe.max_shared.load(Ordering::SeqCst) >= 2);
    assert_eq!(increment(&svc, "a").await, 22);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn waiting_turns_are_served_first_come_first_served() {
    let h = memory_host(options()).await;
    let svc = h.service();
    increment(&svc, "a").await;
    let hold = tokio::spawn({
        let svc = svc.clone();
        async move { invoke(&svc, "a", "hold").await }
    });
    h.wait_for_log("hold:start").await;
    // Queue, in this order: peek p1, invoke i2, peek p3. Let each reach the queue first.
    let mut queued = Vec::new();
    for (tag, read_only) in [("p1", true), ("i2", false), ("p3", true)] {
        let svc = svc.clone();
        queued.push(tokio::spawn(async move {
            let a = actor("a");
            let data = Envelope::encode(tag).unwrap();
            if read_only {
                svc.peek(&a, "log", data).await
            } else {
                svc.invoke(&a, "log", data).await
            }
        }));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
    h.probe.release.notify_one();
    hold.await.unwrap().unwrap();
    for q in queued {
        q.await.unwrap().unwrap();
    }
    // Reader-preferring locks would have let p3 join p1 ahead of i2.
    assert_eq!(
        h.probe.log(),
        [
            "hold:start",
            "hold:released",
            "p1:start",
            "p1:end",
            "i2:start",
            "i2:end",
            "p3:start",
            "p3:end"
        ]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_leaves_the_queue() {
    let h = memory_host(options()).await;
    let svc = h.service();
    let hold = tokio::spawn({
        let svc = svc.clone();
        async move { invoke(&svc, "a", "hold").await }
    });
    h.wait_for_log("hold:start").await;
    let gave_up = tokio::time::timeout(
        Duration::from_secs(1),
        svc.invoke(&actor("a"), "log", Envelope::encode("abandoned").unwrap()),
    )
    .await;
    assert!(gave_up.is_err(), "the call should still have been waiting");
    h.probe.release.notify_one();
    hold.await.unwrap().unwrap();
    svc.invoke(&actor("a"), "log", Envelope::encode("next").unwrap())
        .await
        .unwrap();
    assert_eq!(
        h.probe.log(),
        ["hold:start", "hold:released", "next:start", "next:end"]
    );
    h.stop().await;
}

/// A host on a memory store whose calls time out after 5 s.
async fn host_with_a_5_s_invoke_timeout() -> TestHost {
    start_with(
        Arc::new(francis_store::MemoryProvider::new()),
        options(),
        |b| b.with_timings(|t| t.invoke_timeout = Duration::from_secs(5)),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn invoke_timeout_cancels_the_turn_and_answers_timeout() {
    let h = host_with_a_5_s_invoke_timeout().await;
    let svc = h.service();
    let started = tokio::time::Instant::now();
    let err = invoke(&svc, "a", "hold").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    h.wait_for_log("hold:cancelled").await;
    // the actor is free again
    assert_eq!(increment(&svc, "a").await, 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_queued_behind_a_long_turn_times_out_at_its_own_deadline_and_never_runs() {
    let h = host_with_a_5_s_invoke_timeout().await;
    let svc = h.service();
    // The first turn waits for its release whatever its caller does, then counts.
    let long = tokio::spawn({
        let svc = svc.clone();
        async move { invoke(&svc, "a", "hold-increment").await }
    });
    h.wait_for_log("hold-increment:start").await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let queued_at = tokio::time::Instant::now();
    let queued = tokio::spawn({
        let svc = svc.clone();
        async move {
            let err = svc
                .invoke(&actor("a"), "log", Envelope::encode("queued").unwrap())
                .await
                .unwrap_err();
            (err, queued_at.elapsed())
        }
    });
    // The long turn's caller is answered at its deadline; its turn goes on.
    assert_eq!(long.await.unwrap().unwrap_err().kind(), ErrorKind::Timeout);
    let (err, waited) = tokio::time::timeout(Duration::from_secs(60), queued)
        .await
        .expect("the queued call was answered while the long turn still ran")
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(waited, Duration::from_secs(5));
    // Released, the long turn finishes its increment; the queued call never ran.
    h.probe.release.notify_one();
    assert_eq!(increment(&svc, "a").await, 2);
    assert!(
        !h.probe.log().iter().any(|l| l.starts_with("queued")),
        "{:?}",
        h.probe.log()
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn errors_keep_their_kind() {
    let h = memory_host(options()).await;
    let svc = h.service();
    let reserved = francis_core::ActorRef::new("francis.builtin.x", "a").unwrap();
    let cases = [
        (
            svc.invoke(&reserved, "m", Envelope::null()).await,
            ErrorKind::ActorTypeReserved,
        ),
        (
            svc.invoke(&actor("a"), "francis.builtin.m", Envelope::null())
                .await,
            ErrorKind::MethodReserved,
        ),
        (
            svc.invoke(&actor("a"), "", Envelope::null()).await,
            ErrorKind::InvalidReference,
        ),
        (
            svc.invoke(
                &francis_core::ActorRef::new("nope", "a").unwrap(),
                "m",
                Envelope::null(),
            )
            .await,
            ErrorKind::ActorTypeUnsupported,
        ),
        (invoke(&svc, "a", "fail").await, ErrorKind::Actor),
        (
            invoke(&svc, "a", "unknown").await,
            ErrorKind::MethodNotImplemented,
        ),
        (
            svc.peek(&actor("a"), "write", Envelope::null()).await,
            ErrorKind::ReadOnly,
        ),
        (
            svc.peek(
                &francis_core::ActorRef::new("empty", "e").unwrap(),
                "m",
                Envelope::null(),
            )
            .await,
            ErrorKind::MethodNotImplemented,
        ),
    ];
    for (i, (result, kind)) in cases.into_iter().enumerate() {
        assert_eq!(result.unwrap_err().kind(), kind, "case {i}");
    }
    let err = invoke(&svc, "a", "fail").await.unwrap_err();
    assert_eq!(err.to_string(), "the actor said no");
    // the read-only violation wrote nothing
    assert_eq!(increment(&svc, "a").await, 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_actor_is_an_error_and_is_deactivated() {
    let mut h = memory_host(options()).await;
    let svc = h.service();
    assert_eq!(increment(&svc, "a").await, 1);
    let err = invoke(&svc, "a", "panic").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Actor);
    assert!(err.to_string().contains("panicked on purpose"), "{err}");
    h.event(Duration::from_secs(5), |e| {
        matches!(e, francis_host::HostEvent::Deactivated { .. })
    })
    .await;
    assert_eq!(increment(&svc, "a").await, 2);
    assert_eq!(h.probe.created.load(Ordering::SeqCst), 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn registration_rules() {
    let host = francis_host::LocalHost::builder()
        .address("127.0.0.1:1")
        .provider(Arc::new(francis_store::MemoryProvider::new()))
        .build()
        .await
        .unwrap();
    host.register_actor("t", |_| Empty, options()).unwrap();
    let dup = host.register_actor("t", |_| Empty, options()).unwrap_err();
    assert!(dup.to_string().contains("already registered"), "{dup}");
    let reserved = host
        .register_actor("francis.builtin.t", |_| Empty, options())
        .unwrap_err();
    assert!(reserved.to_string().contains("reserved"), "{reserved}");
    assert!(host.register_actor("a/b", |_| Empty, options()).is_err());
    let bad = francis_host::ActorOptions {
        max_attempts: 0,
        ..options()
    };
    assert!(host.register_actor("u", |_| Empty, bad).is_err());
    // before run: calls are refused with a retryable error
    let err = host
        .service()
        .invoke(
            &francis_core::ActorRef::new("t", "x").unwrap(),
            "m",
            Envelope::null(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostUnavailable);
    assert!(err.is_retryable());
    // a builder without address or store is refused
    let no_store = francis_host::LocalHost::builder()
        .address("x")
        .build()
        .await;
    assert!(
        no_store
            .unwrap_err()
            .to_string()
            .contains("store is required")
    );
    let no_addr = francis_host::LocalHost::builder()
        .provider(Arc::new(francis_store::MemoryProvider::new()))
        .build()
        .await;
    assert!(no_addr.unwrap_err().to_string().contains("address"));
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_is_enforced_by_placement() {
    let opts = francis_host::ActorOptions {
        concurrency_limit: Some(2),
        ..options()
    };
    let mut h = memory_host(opts).await;
    let svc = h.service();
    increment(&svc, "a").await;
    increment(&svc, "b").await;
    let err = invoke(&svc, "c", "increment").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHost);
    assert!(err.to_string().contains("concurrency limit"), "{err}");
    // once one is halted, there is room again
    svc.halt(&actor("a")).await.unwrap();
    h.event(Duration::from_secs(5), |e| {
        matches!(e, francis_host::HostEvent::Deactivated { actor, .. } if actor.actor_id() == "a")
    })
    .await;
    assert_eq!(increment(&svc, "c").await, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_above_the_message_limit_is_refused_even_for_a_local_actor() {
    let h = memory_host(options()).await;
    let svc = h.service();
    assert_eq!(increment(&svc, "big").await, 1);
    let limit = francis_transport::DEFAULT_MAX_MESSAGE_SIZE;
    let doc = |len: usize| {
        let mut d = br#"{"pad":""#.to_vec();
        d.resize(len - 2, b'x');
        d.extend_from_slice(br#""}"#);
        Envelope::from_json(d).unwrap()
    };
    let actor = actor("big");
    // At the limit: runs (the method ignores its data); one byte more: bad input, whichever
    // host the actor lives on, and the actor never sees it.
    svc.invoke(&actor, "increment", doc(limit)).await.unwrap();
    let err = svc
        .invoke(&actor, "increment", doc(limit + 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(!err.is_retryable());
    assert_eq!(increment(&svc, "big").await, 3);
    h.stop().await;
}

/// A call chain that comes back to an actor already in it (a -> b -> a) fails at once with
/// `reentrant_call` naming the chain, instead of waiting out the invoke timeout, and the inner
/// call never runs; peeks, self-calls and outside state writes are refused alike; a chain that
/// does not come back runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_back_into_its_own_chain_is_refused_at_once() {
    let h = memory_host(options()).await;
    let svc = h.service();
    let err = relay(&svc, "a", &["b", "a"], false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reentrant, "{err}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("probe/a -> probe/b -> probe/a"),
        "{err}"
    );
    // The inner call never ran: nobody counted.
    for id in ["a", "b"] {
        assert_eq!(peek_count(&svc, id).await, 0, "{id} was not counted");
    }
    // A peek back into the chain waits on the same turn: refused too.
    let err = relay(&svc, "a", &["b", "a"], true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reentrant, "{err}");
    // An actor calling itself.
    let err = relay(&svc, "a", &["a"], false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reentrant, "{err}");
    // A chain that does not come back runs: c counts once.
    let out = relay(&svc, "a", &["b", "c"], false).await.unwrap().unwrap();
    assert_eq!(out.decode::<i64>().unwrap(), 1);
    // Outside the chain, the same actors serve as before.
    assert_eq!(increment(&svc, "a").await, 1);
    h.stop().await;
}

/// Activating a new actor costs one placement round trip on the common path: routing claims
/// at once on a cache miss (no lookup first), and the activation uses that claim instead of
/// claiming again. An actor already active here costs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_actor_is_placed_and_activated_with_one_claim() {
    let provider = Arc::new(StallingProvider::new(francis_store::MemoryProvider::new()));
    let h = start(provider.clone(), options()).await;
    let svc = h.service();
    let placement_ops = || {
        provider
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|n| matches!(**n, "claim" | "lookup"))
            .count()
    };
    let before = placement_ops();
    assert_eq!(increment(&svc, "fresh").await, 1);
    assert_eq!(
        placement_ops() - before,
        1,
        "{:?}",
        provider.seen.lock().unwrap()
    );
    assert_eq!(increment(&svc, "fresh").await, 2);
    assert_eq!(
        placement_ops() - before,
        1,
        "an active actor needs no claim"
    );
    h.stop().await;
}
