//! OTLP export end to end: two hosts sharing a SQLite file, a call entering host A and running
//! on host B, exported over real HTTP to an in-process OTLP receiver, arrives as spans of both
//! hosts in the caller's trace, with Francis's own span ids and their parent links.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use francis_core::{ErrorKind, TypedActor, actor};
use francis_host::{ActorOptions, LocalHost, TraceContext};
use francis_otlp::Otlp;
use opentelemetry_proto::tonic::trace::v1::Span;
use receiver::{Receiver, attribute, hex};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

mod receiver;

struct Counter {
    n: i64,
}

#[actor]
impl Counter {
    /// Adds `by`; answers the new count.
    pub async fn add(&mut self, by: i64) -> i64 {
        self.n += by;
        self.n
    }
}

fn free_udp_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn host(path: &std::path::Path, serves: bool) -> (Arc<LocalHost>, CancellationToken) {
    let host = LocalHost::builder()
        .sqlite(path)
        .address(free_udp_addr().to_string())
        .runtime_psks(["an-otlp-test-cluster-key-long-enough"])
        .build()
        .await
        .unwrap();
    if serves {
        host.register::<Counter>(|_| Counter { n: 0 }, ActorOptions::default())
            .unwrap();
    }
    let host = Arc::new(host);
    let stop = CancellationToken::new();
    tokio::spawn({
        let (host, stop) = (host.clone(), stop.clone());
        async move { host.run(stop).await }
    });
    tokio::time::timeout(Duration::from_secs(30), host.serving())
        .await
        .expect("the host serves in time")
        .unwrap();
    (host, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_across_hosts_is_exported_as_one_trace() {
    let (received, base) = Receiver::start().await;
    let endpoint = format!("{base}/v1/traces");

    let otlp = Arc::new(Otlp::to_endpoint(&endpoint, "otlp-test").unwrap());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_target("francis", tracing::Level::DEBUG),
        )
        .with(otlp.layer())
        .init();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    // Only B serves counters, so a call through A runs on B.
    let (a, stop_a) = host(&path, false).await;
    let (b, stop_b) = host(&path, true).await;
    let caller =
        TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap();
    let counter = Counter::handle(a.service().traced(caller), "c").unwrap();
    // A learns of B's actor types from the store's membership: retry until it routes there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match counter.add(2).await {
            Ok(n) => {
                assert_eq!(n, 2);
                break;
            }
            Err(e) if e.is_retryable() || e.kind() == ErrorKind::ActorTypeUnsupported => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    // A span is exported once it has closed everywhere (the turn holds the invoke span until it
    // ends, which can be a moment after the caller has its answer): flush until all arrived.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let spans = loop {
        // Flushing blocks the thread: off the runtime's workers, which serve the receiver. A
        // flush that timed out is tried again until the deadline.
        let o = otlp.clone();
        let _ = tokio::task::spawn_blocking(move || o.flush())
            .await
            .unwrap();
        let spans: Vec<(String, Span)> = received.of_trace(trace);
        let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
        if ["francis.invoke", "francis.serve", "francis.turn"]
            .iter()
            .all(|n| names.contains(n))
        {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans so far: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let find = |name: &str, host: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| {
                s.name == name
                    && attribute(s, "host").as_deref() == Some(host)
                    && attribute(s, "outcome").as_deref() != Some("actor_type_unsupported")
            })
            .unwrap_or_else(|| {
                let seen: Vec<_> = spans
                    .iter()
                    .map(|(_, s)| (&s.name, attribute(s, "host"), attribute(s, "outcome")))
                    .collect();
                panic!("no {name} on {host}: {seen:?}")
            })
            .clone()
    };
    let invoke = find("francis.invoke", a.address());
    let serve = find("francis.serve", b.address());
    let turn = find("francis.turn", b.address());
    assert!(spans.iter().all(|(service, _)| service == "otlp-test"));
    // The invoke span is the caller's child; B's spans are the invoke span's.
    assert_eq!(hex(&invoke.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(serve.parent_span_id, invoke.span_id);
    assert_eq!(turn.parent_span_id, invoke.span_id);
    assert_eq!(attribute(&invoke, "actor_id").as_deref(), Some("c"));
    assert_eq!(attribute(&invoke, "method").as_deref(), Some("add"));
    assert_eq!(attribute(&turn, "outcome").as_deref(), Some("ok"));
    // The status says how it went: ok here.
    let status = invoke.status.expect("a status");
    assert_eq!(status.code, 1, "STATUS_CODE_OK: {status:?}");
    stop_a.cancel();
    stop_b.cancel();
    // Shutting the export down blocks too.
    tokio::task::spawn_blocking(move || drop(otlp))
        .await
        .unwrap();
}
