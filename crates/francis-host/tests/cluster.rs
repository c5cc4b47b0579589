//! Several hosts sharing one SQLite file (opened by each host as a separate process would):
//! what the peer transport adds to the scenarios of `scenarios.rs` (run there on every
//! backend): a peer restarted under a new id, a call in flight to an owner that dies, and a call
//! chain across hosts. Real time and real QUIC; conditions are polled with deadlines.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use francis_core::{ActorService, Envelope, ErrorKind};
use francis_store::Provider;
use francis_store_sqlite::{SqliteOptions, SqliteProvider};
use support::*;
use tokio::time::Instant;

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
    start_with_probe(provider, cluster_options(), probe, move |b| {
        cluster_host(b, addr, FAILOVER)
    })
    .await
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
