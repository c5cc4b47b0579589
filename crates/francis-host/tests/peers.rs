//! Hosts invoking actors on each other over the real peer transport (QUIC + mutual TLS).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use francis_core::{ActorRef, Envelope, ErrorKind};
use francis_store::{MemoryProvider, Provider};
use support::*;

const PSK: &str = "a-test-runtime-psk-that-is-long-enough";
const OTHER_PSK: &str = "another-cluster-psk-that-is-long-enough";

async fn peer_host(provider: Arc<dyn Provider>, psk: &str) -> (TestHost, SocketAddr) {
    let addr = free_udp_addr();
    let psk = psk.to_owned();
    let h = start_with(provider, options(), move |b| {
        b.address(addr.to_string()).runtime_psks([psk])
    })
    .await;
    (h, addr)
}

/// Two hosts of one cluster sharing a store; B's peer address.
async fn pair() -> (TestHost, TestHost, SocketAddr) {
    let store: Arc<dyn Provider> = Arc::new(MemoryProvider::new());
    let (a, _) = peer_host(store.clone(), PSK).await;
    let (b, b_addr) = peer_host(store, PSK).await;
    (a, b, b_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_invokes_an_actor_on_another_host() {
    let (a, b, b_addr) = pair().await;
    let via_a = a.service();
    let target = actor("x");
    for expected in 1..=3i64 {
        let out = via_a
            .invoke_on(
                b_addr,
                &b.host.host_id(),
                &target,
                "increment",
                Envelope::null(),
                false,
            )
            .await
            .unwrap();
        assert_eq!(out.output.unwrap().decode::<i64>().unwrap(), expected);
        assert_eq!(out.served_by, b_addr.to_string());
    }
    // it ran on B only
    assert_eq!(b.probe.created.load(Ordering::SeqCst), 1);
    assert_eq!(a.probe.created.load(Ordering::SeqCst), 0);
    assert_eq!(b.host.active_actors(), vec![target.clone()]);
    // a peek travels as a shared turn
    let peeked = via_a
        .invoke_on(
            b_addr,
            &b.host.host_id(),
            &target,
            "count",
            Envelope::null(),
            true,
        )
        .await
        .unwrap();
    assert_eq!(peeked.output.unwrap().decode::<i64>().unwrap(), 3);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_errors_keep_their_kind() {
    let (a, b, b_addr) = pair().await;
    let via_a = a.service();
    let b_id = b.host.host_id();
    let call = |actor: ActorRef, method: &'static str, read_only: bool| {
        let via_a = via_a.clone();
        let b_id = b_id.clone();
        async move {
            via_a
                .invoke_on(b_addr, &b_id, &actor, method, Envelope::null(), read_only)
                .await
                .unwrap_err()
        }
    };
    let err = call(actor("x"), "fail", false).await;
    assert_eq!(err.kind(), ErrorKind::Actor);
    assert_eq!(err.to_string(), "the actor said no");
    assert_eq!(
        call(actor("x"), "nope", false).await.kind(),
        ErrorKind::MethodNotImplemented
    );
    assert_eq!(
        call(actor("x"), "write", true).await.kind(),
        ErrorKind::ReadOnly
    );
    let unknown = ActorRef::new("unknown", "x").unwrap();
    assert_eq!(
        call(unknown, "m", false).await.kind(),
        ErrorKind::ActorTypeUnsupported
    );
    // refused before anything is sent
    let reserved = ActorRef::new("francis.builtin.t", "x").unwrap();
    assert_eq!(
        call(reserved, "m", false).await.kind(),
        ErrorKind::ActorTypeReserved
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_answers_not_hosted_for_an_actor_another_host_owns() {
    let (a, b, _) = pair().await;
    // x is placed on one of the two hosts (rendezvous decides); the other must refuse it
    // rather than activate a second copy
    let first = a
        .service()
        .invoke_traced(&actor("x"), "increment", Envelope::null())
        .await
        .unwrap();
    let (owner, other) = if first.served_by == a.host.address() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let err = owner
        .service()
        .invoke_on(
            other.host.address().parse().unwrap(),
            &other.host.host_id(),
            &actor("x"),
            "increment",
            Envelope::null(),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ActorNotHosted);
    assert!(err.is_retryable());
    assert_eq!(other.probe.created.load(Ordering::SeqCst), 0);
    assert_eq!(owner.probe.created.load(Ordering::SeqCst), 1);
    assert_eq!(increment(&b.service(), "x").await, 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_host_id_or_key_is_refused() {
    let (a, b, b_addr) = pair().await;
    let err = a
        .service()
        .invoke_on(
            b_addr,
            "someone-else",
            &actor("x"),
            "increment",
            Envelope::null(),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(err.is_retryable());
    // a host of another cluster (other PSK) cannot reach B's actors
    let (c, _) = peer_host(Arc::new(MemoryProvider::new()), OTHER_PSK).await;
    // the CA each host derives: identical within a cluster, different across clusters
    let ca = a.host.ca_pem().unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(b.host.ca_pem().unwrap(), ca);
    assert_ne!(c.host.ca_pem().unwrap(), ca);
    let err = c
        .service()
        .invoke_on(
            b_addr,
            &b.host.host_id(),
            &actor("x"),
            "increment",
            Envelope::null(),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert_eq!(b.probe.created.load(Ordering::SeqCst), 0);
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_clearly() {
    let short = francis_host::LocalHost::builder()
        .address("127.0.0.1:1")
        .provider(Arc::new(MemoryProvider::new()))
        .runtime_psks(["too-short"])
        .build()
        .await
        .unwrap_err();
    assert!(short.to_string().contains("runtime PSK #1"), "{short}");
    // a second host on an address whose port is taken fails to run, naming the address
    let (a, a_addr) = peer_host(Arc::new(MemoryProvider::new()), PSK).await;
    let second = francis_host::LocalHost::builder()
        .address(a_addr.to_string())
        .provider(Arc::new(MemoryProvider::new()))
        .runtime_psks([PSK])
        .build()
        .await
        .unwrap();
    let err = second
        .run(tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&a_addr.to_string()), "{err}");
    a.stop().await;
}

/// A bare peer of the cluster (no host behind it) that sends invocations with request ids of
/// its choosing, as a host resending a call does.
struct RawPeer(francis_transport::Transport);

struct Unsupported;

#[francis_core::async_trait]
impl francis_transport::RequestHandler for Unsupported {
    async fn handle(
        &self,
        _peer_host_id: &str,
        _request: francis_transport::proto::Request,
    ) -> francis_transport::proto::Response {
        francis_transport::proto::Response::unsupported()
    }
}

impl RawPeer {
    fn start() -> Self {
        let config = francis_transport::TransportConfig::new(
            "raw-peer",
            free_udp_addr(),
            vec![PSK.as_bytes().to_vec()],
        );
        RawPeer(francis_transport::Transport::start(config, Arc::new(Unsupported)).unwrap())
    }

    /// Invokes `method` of probe `id` on `owner` under `request_id`.
    fn invoke(
        &self,
        owner: &TestHost,
        id: &str,
        method: &str,
        request_id: &str,
    ) -> impl std::future::Future<Output = Result<Option<i64>, francis_core::Error>> + 'static {
        self.invoke_in_chain(owner, id, method, request_id, &[])
    }

    /// [`RawPeer::invoke`] as a call from a turn whose call chain holds the probes `chain`.
    fn invoke_in_chain(
        &self,
        owner: &TestHost,
        id: &str,
        method: &str,
        request_id: &str,
        chain: &[&str],
    ) -> impl std::future::Future<Output = Result<Option<i64>, francis_core::Error>> + 'static {
        use francis_transport::proto::{ChainLink, Invoke, TurnKind};
        let call_chain = chain
            .iter()
            .map(|c| ChainLink {
                actor_type: TYPE.to_owned(),
                actor_id: (*c).to_owned(),
            })
            .collect();
        let transport = self.0.clone();
        let addr: SocketAddr = owner.host.address().parse().unwrap();
        let owner_id = owner.host.host_id();
        let invoke = Invoke {
            actor_type: TYPE.to_owned(),
            actor_id: id.to_owned(),
            method: method.to_owned(),
            payload: bytes::Bytes::from_static(b"null"),
            request_id: request_id.to_owned(),
            read_only: false,
            kind: TurnKind::Invoke as i32,
            ttl_ms: None,
            call_chain,
            traceparent: String::new(),
        };
        async move {
            let out = transport.invoke(addr, &owner_id, invoke).await?;
            Ok(out.map(|b| serde_json::from_slice(&b).unwrap()))
        }
    }
}

/// Polls (real time, with a deadline) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn count_of(probe: &Probe, entry: &str) -> usize {
    probe.log().iter().filter(|e| *e == entry).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_runs_once_on_the_owner() {
    let (a, b, _) = pair().await;
    let raw = RawPeer::start();
    assert_eq!(
        raw.invoke(&b, "x", "increment", "req-1").await.unwrap(),
        Some(1)
    );
    // the resend answers the first result; the actor did not count twice
    assert_eq!(
        raw.invoke(&b, "x", "increment", "req-1").await.unwrap(),
        Some(1)
    );
    assert_eq!(b.service().resends_recognised(), 1);
    // an error is answered again too, with its kind, without running the actor again
    let first = raw.invoke(&b, "x", "fail", "req-2").await.unwrap_err();
    let again = raw.invoke(&b, "x", "fail", "req-2").await.unwrap_err();
    assert_eq!(
        (first.kind(), again.kind()),
        (ErrorKind::Actor, ErrorKind::Actor)
    );
    assert_eq!(again.to_string(), first.to_string());
    // another id is another call
    assert_eq!(
        raw.invoke(&b, "x", "increment", "req-3").await.unwrap(),
        Some(2)
    );
    assert_eq!(increment(&a.service(), "x").await, 3);
    assert_eq!(b.probe.created.load(Ordering::SeqCst), 1);
    // a turn that panicked ran: its resend answers the panic instead of activating y again
    for _ in 0..2 {
        let err = raw.invoke(&b, "y", "panic", "req-4").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Actor);
        assert!(
            err.to_string().contains("probe panicked on purpose"),
            "{err}"
        );
    }
    assert_eq!(b.probe.created.load(Ordering::SeqCst), 2);
    assert_eq!(b.service().resends_recognised(), 3);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_while_the_first_still_runs_waits_for_its_outcome() {
    let (a, b, _) = pair().await;
    let raw = RawPeer::start();
    let first = tokio::spawn(raw.invoke(&b, "x", "hold-increment", "req-held"));
    b.wait_for_log("hold-increment:start").await;
    let resend = tokio::spawn(raw.invoke(&b, "x", "hold-increment", "req-held"));
    // the resend reached the owner, which recognised it while the first turn is held
    let svc = b.service();
    until("the resend's arrival", || svc.resends_recognised() == 1).await;
    assert_eq!(count_of(&b.probe, "hold-increment:end"), 0);
    assert!(!resend.is_finished());
    b.probe.release.notify_one();
    assert_eq!(first.await.unwrap().unwrap(), Some(1));
    assert_eq!(resend.await.unwrap().unwrap(), Some(1));
    assert_eq!(count_of(&b.probe, "hold-increment:start"), 1);
    assert_eq!(increment(&a.service(), "x").await, 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_a_lost_answer_gets_the_first_result() {
    let (a, b, _) = pair().await;
    let raw = RawPeer::start();
    // the owner received the call and runs it; then the caller goes away (its answer is lost)
    let first = tokio::spawn(raw.invoke(&b, "x", "hold-increment", "req-lost"));
    b.wait_for_log("hold-increment:start").await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // the turn still finishes, and its outcome is kept for the resend
    b.probe.release.notify_one();
    until("the turn's end", || {
        count_of(&b.probe, "hold-increment:end") == 1
    })
    .await;
    let resend = tokio::spawn(raw.invoke(&b, "x", "hold-increment", "req-lost"));
    let probe = b.probe.clone();
    until("the resend's answer", || {
        assert_eq!(
            count_of(&probe, "hold-increment:start"),
            1,
            "the resend ran the call again"
        );
        resend.is_finished()
    })
    .await;
    assert_eq!(resend.await.unwrap().unwrap(), Some(1));
    assert_eq!(increment(&a.service(), "x").await, 2);
    a.stop().await;
    b.stop().await;
}

/// The owner checks the call chain too: a call that arrives from a peer with the target
/// already in its chain is refused with `reentrant_call` and does not run; the same call with
/// a chain that does not hold the target runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_refuses_a_call_whose_chain_holds_its_target() {
    let (a, b, _) = pair().await;
    let raw = RawPeer::start();
    let err = raw
        .invoke_in_chain(&b, "y", "increment", "req-chain-1", &["w", "y"])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), francis_core::ErrorKind::Reentrant, "{err}");
    assert!(
        err.to_string().contains("probe/w -> probe/y -> probe/y"),
        "{err}"
    );
    let ran = raw
        .invoke_in_chain(&b, "y", "increment", "req-chain-2", &["w"])
        .await
        .unwrap();
    assert_eq!(ran, Some(1), "the refused call did not count");
    a.stop().await;
    b.stop().await;
}
