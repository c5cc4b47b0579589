//! Several hosts sharing one store (a real SQLite file, opened by each host as a separate
//! process would): single activation, routing, failover, alarms across hosts. Real time and
//! real QUIC; conditions are polled with deadlines.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use francis_core::{ActorService, Envelope, ErrorKind};
use francis_host::{ActorOptions, HostEvent, HostService};
use francis_store::Provider;
use francis_store_sqlite::{SqliteOptions, SqliteProvider};
use support::*;
use tokio::time::Instant;

const PSK: &str = "a-test-runtime-psk-that-is-long-enough";
const DEADLINE: Duration = Duration::from_secs(2);

async fn open(path: &Path) -> SqliteProvider {
    SqliteProvider::open(path, SqliteOptions::default())
        .await
        .unwrap()
}

/// A host on its own connection to the shared file, with a short health deadline.
async fn host_on(provider: Arc<dyn Provider>, probe: Arc<Probe>) -> TestHost {
    host_at(provider, probe, free_udp_addr()).await
}

/// [`host_on`] at a given peer address.
async fn host_at(
    provider: Arc<dyn Provider>,
    probe: Arc<Probe>,
    addr: std::net::SocketAddr,
) -> TestHost {
    let opts = ActorOptions {
        idle_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    start_with_probe(provider, opts, probe, move |b| {
        b.address(addr.to_string())
            .runtime_psks([PSK])
            .with_timings(|t| {
                t.health_deadline = DEADLINE;
                t.heartbeat_interval = Duration::from_millis(250);
                t.store_timeout = Duration::from_secs(1);
                t.alarm_poll_interval = Duration::from_millis(100);
                t.alarm_fetch_ahead = Duration::from_millis(200);
                t.alarm_lease = Duration::from_secs(1);
                t.invoke_timeout = Duration::from_secs(10);
            })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_stay_exact_and_single_activation_holds_across_three_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let probe = Arc::new(Probe::default());
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(host_on(Arc::new(open(&path).await), probe.clone()).await);
    }
    let services: Vec<HostService> = hosts.iter().map(|h| h.service()).collect();
    let ids: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    let mut calls = Vec::new();
    for round in 0..20 {
        for (i, id) in ids.iter().enumerate() {
            let svc = services[(round + i) % 3].clone();
            let id = id.clone();
            calls.push(tokio::spawn(async move { served_by(&svc, &id).await }));
        }
    }
    let mut owners = std::collections::HashMap::<String, std::collections::HashSet<String>>::new();
    for (n, call) in calls.into_iter().enumerate() {
        let (_, host) = call.await.unwrap();
        owners
            .entry(ids[n % ids.len()].clone())
            .or_default()
            .insert(host);
    }
    // every id was served by exactly one host, whichever host received the call
    for (id, hosts) in &owners {
        assert_eq!(hosts.len(), 1, "{id} served by {hosts:?}");
    }
    let distinct: std::collections::HashSet<_> = owners.values().flatten().collect();
    assert!(
        distinct.len() >= 2,
        "placement did not spread: {distinct:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        let (n, _) = served_by(&services[i % 3], id).await;
        assert_eq!(n, 21, "{id}");
    }
    assert_eq!(probe.double_activations.load(Ordering::SeqCst), 0);
    assert_eq!(probe.created.load(Ordering::SeqCst), ids.len());
    for h in hosts {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_moves_actors_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let probe = Arc::new(Probe::default());
    let a = host_on(Arc::new(open(&path).await), probe.clone()).await;
    let b = host_on(Arc::new(open(&path).await), probe.clone()).await;
    let via_b = b.service();
    // Place actors until a few land on A (each lands there with probability 1/2).
    let mut on_a = Vec::new();
    for i in 0..64 {
        let id = format!("g{i}");
        let (_, host) = served_by(&via_b, &id).await;
        if host == a.host.address() {
            on_a.push(id);
        }
        if on_a.len() == 3 {
            break;
        }
    }
    assert!(!on_a.is_empty(), "no actor landed on A");
    a.stop().await;
    // A released everything on its way out: B serves A's actors now, without waiting for
    // A's lease to expire, and their state is intact.
    let started = Instant::now();
    for id in &on_a {
        let (n, host) = served_by(&via_b, id).await;
        assert_eq!((n, host.as_str()), (2, b.host.address()));
    }
    assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());
    assert_eq!(probe.double_activations.load(Ordering::SeqCst), 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_freezes_fences_itself_and_its_actors_move_after_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let probe = Arc::new(Probe::default());
    let frozen_store = Arc::new(StallingProvider::new(open(&path).await));
    let a = host_on(frozen_store.clone(), probe.clone()).await;
    let b = host_on(Arc::new(open(&path).await), probe.clone()).await;
    let via_b = b.service();
    // find an actor owned by A, with two acknowledged increments
    let mut victim = None;
    for i in 0..20 {
        let id = format!("k{i}");
        let (_, host) = served_by(&via_b, &id).await;
        if host == a.host.address() {
            served_by(&via_b, &id).await;
            victim = Some(id);
            break;
        }
    }
    let victim = victim.expect("some actor lands on A");
    // A's store access freezes (as if its process hung): it cannot heartbeat.
    let mut a_events = a.host.events();
    let fenced_at = tokio::spawn(async move {
        loop {
            if let Ok(HostEvent::Fenced { .. }) = a_events.recv().await {
                return Instant::now();
            }
        }
    });
    let frozen_at = Instant::now();
    frozen_store.stall.store(true, Ordering::SeqCst);
    let (n, host) = increment_eventually(&via_b, &victim, Duration::from_secs(20)).await;
    let moved_at = Instant::now();
    assert_eq!(host, b.host.address());
    assert_eq!(n, 3, "an acknowledged increment was lost");
    // B could take over only once A's lease expired in the store...
    let moved_after = moved_at - frozen_at;
    assert!(
        moved_after >= DEADLINE - Duration::from_millis(300),
        "{moved_after:?}"
    );
    // ...and A had fenced itself before that.
    let fenced_at = tokio::time::timeout(Duration::from_secs(1), fenced_at)
        .await
        .expect("A never fenced itself")
        .unwrap();
    assert!(
        fenced_at < moved_at,
        "A fenced {:?} after B took over",
        fenced_at - moved_at
    );
    assert!(matches!(a.host.health(), francis_host::Health::Fenced(_)));
    assert_eq!(probe.double_activations.load(Ordering::SeqCst), 0);
    frozen_store.stall.store(false, Ordering::SeqCst);
    b.stop().await;
    a.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), a.task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_route_is_corrected_invisibly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let probe = Arc::new(Probe::default());
    let a = host_on(Arc::new(open(&path).await), probe.clone()).await;
    let b = host_on(Arc::new(open(&path).await), probe.clone()).await;
    let c = host_on(Arc::new(open(&path).await), probe.clone()).await;
    let via_a = a.service();
    // an actor that A routes to another host (so A caches that route)
    let mut pick = None;
    for i in 0..30 {
        let id = format!("s{i}");
        let (_, host) = served_by(&via_a, &id).await;
        if host != a.host.address() {
            pick = Some((id, host));
            break;
        }
    }
    let (id, first_owner) = pick.expect("some actor lands off A");
    let (owner, other) = if first_owner == b.host.address() {
        (&b, &c)
    } else {
        (&c, &b)
    };
    // The owner lets it go; the other host takes it (A does not know).
    owner.service().halt(&actor(&id)).await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    let moved = loop {
        match other
            .service()
            .invoke_on(
                other.host.address().parse().unwrap(),
                &other.host.host_id(),
                &actor(&id),
                "increment",
                Envelope::null(),
                false,
            )
            .await
        {
            Ok(out) => break out,
            Err(e) if e.is_retryable() && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(moved.output.unwrap().decode::<i64>().unwrap(), 2);
    // A's cached route is stale: the old owner answers "not hosted", A re-resolves, and the
    // caller sees an ordinary answer from the new owner.
    let (n, host) = served_by(&via_a, &id).await;
    assert_eq!((n, host.as_str()), (3, other.host.address()));
    assert_eq!(probe.double_activations.load(Ordering::SeqCst), 0);
    for h in [a, b, c] {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_run_on_the_owner_and_keep_their_cadence_across_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let probe = Arc::new(Probe::default());
    let frozen_store = Arc::new(StallingProvider::new(open(&path).await));
    let a = host_on(frozen_store.clone(), probe.clone()).await;
    let b = host_on(Arc::new(open(&path).await), probe.clone()).await;
    let victim = actor_owned_by(&b.service(), &a, "t").await;
    alarm_cadence_survives_an_owner_freeze(&b.service(), &victim, &frozen_store, &probe).await;
    b.stop().await;
    a.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), a.task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_under_a_new_id_is_re_resolved_invisibly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let probe = Arc::new(Probe::default());
    let a_store = Arc::new(StallingProvider::new(open(&path).await));
    let a = host_on(a_store.clone(), probe.clone()).await;
    let b = host_on(Arc::new(open(&path).await), probe.clone()).await;
    let via_a = a.service();
    let id = actor_owned_by(&via_a, &b, "r").await;
    // A's view of the cluster lags: it still sees B, which restarts under a new id at the
    // same address.
    a_store.freeze_view().await;
    let b_addr: std::net::SocketAddr = b.host.address().parse().unwrap();
    let b_id = b.host.host_id();
    b.stop().await;
    let b2 = host_at(Arc::new(open(&path).await), probe.clone(), b_addr).await;
    // A's transport has learnt that its connection to B is closed (a call outside routing
    // found it so); A's next call to that address opens a new connection, to B2.
    let closed = via_a
        .invoke_on(
            b_addr,
            &b_id,
            &actor("other"),
            "get",
            Envelope::null(),
            false,
        )
        .await
        .unwrap_err();
    assert!(closed.is_retryable(), "{closed}");
    // A's route still names the old B; the new one's certificate names another host, so the
    // call certainly never ran: A re-resolves and the caller sees an ordinary answer.
    let (n, _) = served_by(&via_a, &id).await;
    assert_eq!(n, 2);
    assert_eq!(probe.double_activations.load(Ordering::SeqCst), 0);
    *a_store.frozen_view.lock().unwrap() = None;
    for h in [a, b2] {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_to_an_owner_that_dies_ends_soon_even_without_a_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let probe = Arc::new(Probe::default());
    let a_store = Arc::new(StallingProvider::new(open(&path).await));
    let b_store = Arc::new(StallingProvider::new(open(&path).await));
    let a = host_on(a_store.clone(), probe.clone()).await;
    let b = host_on(b_store.clone(), probe.clone()).await;
    let via_a = a.service();
    let id = actor_owned_by(&via_a, &b, "d").await;
    let call = tokio::spawn({
        let via_a = via_a.clone();
        let id = id.clone();
        async move {
            via_a
                .invoke(&actor(&id), "hold-forever", Envelope::null())
                .await
        }
    });
    let until = Instant::now() + Duration::from_secs(5);
    while !probe.log().iter().any(|e| e == "hold-forever:start") {
        assert!(Instant::now() < until, "the call never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B stops renewing its lease and will never answer; A cannot read the membership either
    // (the store has no quorum).
    let died = Instant::now();
    b_store.stall.store(true, Ordering::SeqCst);
    a_store.fail_live_hosts.store(true, Ordering::SeqCst);
    let err = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call still waits for the dead owner")
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.kind(),
        francis_core::ErrorKind::HostUnavailable,
        "{err}"
    );
    // within about a deadline (2 s) of B's last heartbeat, plus one membership period
    assert!(
        died.elapsed() < Duration::from_secs(5),
        "{:?}",
        died.elapsed()
    );
    a_store.fail_live_hosts.store(false, Ordering::SeqCst);
    a.stop().await;
    b.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), b.task).await;
}

/// The call chain travels between hosts: a -> b -> a with a and b owned by different hosts
/// fails at once with `reentrant_call` (raised where b calls a), and nothing counted; a chain
/// across the hosts that does not come back runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_back_into_its_chain_across_hosts_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let probe = Arc::new(Probe::default());
    let h1 = host_on(Arc::new(open(&path).await), probe.clone()).await;
    let h2 = host_on(Arc::new(open(&path).await), probe.clone()).await;
    let svc = h1.service();
    let a = actor_owned_by(&svc, &h1, "ra").await;
    let b = actor_owned_by(&svc, &h2, "rb").await;
    // actor_owned_by counted each once.
    let err = relay(&svc, &a, &[&b, &a], false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reentrant, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("probe/{a} -> probe/{b} -> probe/{a}")),
        "{err}"
    );
    for id in [&a, &b] {
        let n = peek_count(&svc, id).await;
        assert_eq!(n, 1, "{id} counted only by actor_owned_by");
    }
    let out = relay(&svc, &a, &[&b], false).await.unwrap().unwrap();
    assert_eq!(out.decode::<i64>().unwrap(), 2, "b counts once more");
    h1.stop().await;
    h2.stop().await;
}
