//! Two hosts on loopback calling each other: round trips, concurrency, limits, restarts,
//! cancellation, certificate renewal and graceful shutdown.

mod support;

use std::time::Duration;

use bytes::Bytes;
use francis_core::ErrorKind;
use francis_transport::{Transport, TransportError};
use support::*;

#[tokio::test]
async fn round_trip_both_ways_with_errors_and_ping() {
    let (a, _) = start("host-a", &[PSK_OLD]);
    let (b, _) = start("host-b", &[PSK_OLD]);

    let reply = a
        .invoke(b.local_addr(), "host-b", invoke("echo", r#"{"n":1}"#))
        .await
        .unwrap();
    assert_eq!(reply, Some(Bytes::from_static(br#"{"n":1}"#)));

    // The handler sees the authenticated caller.
    let who = b
        .invoke(a.local_addr(), "host-a", invoke("whoami", "null"))
        .await
        .unwrap();
    assert_eq!(who, Some(Bytes::from_static(b"host-b")));
    let who = a
        .invoke(b.local_addr(), "host-b", invoke("whoami", "null"))
        .await
        .unwrap();
    assert_eq!(who, Some(Bytes::from_static(b"host-a")));

    // Remote errors keep their kind and retryability.
    let err = a
        .invoke(b.local_addr(), "host-b", invoke("fail", "null"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ActorNotHosted);
    assert!(err.is_retryable());
    assert!(err.to_string().contains("test/a1"), "{err}");

    assert!(a.ping(b.local_addr(), "host-b").await.is_ok());
    // Everything above went over one connection each way.
    assert_eq!(a.stats().connections_opened, 1);
    assert_eq!(b.stats().connections_accepted, 1);
    assert_eq!(a.ca_pem(), b.ca_pem());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_over_one_connection() {
    let in_flight = |l: &mut francis_transport::Limits| l.max_in_flight_per_connection = 1000;
    let (server, _) = start_with(config("server", &[PSK_OLD]).with_limits(limits(in_flight)));
    let (client, _) = start_with(config("client", &[PSK_OLD]).with_limits(limits(in_flight)));
    let addr = server.local_addr();
    let calls = (0..1000).map(|i| {
        let client = client.clone();
        async move {
            let payload = format!("{i}");
            let reply = client
                .invoke(addr, "server", invoke("echo", payload.clone()))
                .await;
            (payload, reply)
        }
    });
    let results = futures::future::join_all(calls).await;
    for (payload, reply) in results {
        assert_eq!(reply.unwrap(), Some(Bytes::from(payload)));
    }
    assert_eq!(server.stats().connections_accepted, 1);
    assert_eq!(client.stats().connections_opened, 1);
    assert_eq!(server.stats().requests_overloaded, 0);
    assert_eq!(server.stats().requests_served, 1000);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_burst_beyond_the_peers_limit_waits_on_the_callers_side() {
    // Both sides share the cluster's limits, as hosts of one cluster do: the caller keeps
    // at most what the peer accepts in flight, and the rest wait rather than being refused.
    let four = |l: &mut francis_transport::Limits| l.max_in_flight_per_connection = 4;
    let (server, handler) = start_with(config("server", &[PSK_OLD]).with_limits(limits(four)));
    let (client, _) = start_with(config("client", &[PSK_OLD]).with_limits(limits(four)));
    let addr = server.local_addr();
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .invoke(addr, "server", invoke("block", format!("{i}")))
                    .await
            })
        })
        .collect();
    eventually("4 requests in the handler", Duration::from_secs(10), || {
        handler.entered() == 4
    })
    .await;
    assert_eq!(server.stats().requests_overloaded, 0);
    handler.gate.add_permits(12);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(
            call.await.unwrap().unwrap(),
            Some(Bytes::from(format!("{i}")))
        );
    }
    assert_eq!(handler.entered(), 12);
    assert_eq!(server.stats().requests_overloaded, 0);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn excess_requests_get_a_retryable_overloaded_at_once() {
    let (server, handler) = start_with(
        config("server", &[PSK_OLD]).with_limits(limits(|l| l.max_in_flight_per_connection = 4)),
    );
    let (client, _) = start("client", &[PSK_OLD]);
    let addr = server.local_addr();
    let blocked: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .invoke(addr, "server", invoke("block", format!("{i}")))
                    .await
            })
        })
        .collect();
    eventually("4 requests in the handler", Duration::from_secs(10), || {
        handler.entered() == 4
    })
    .await;

    let err = client
        .request(addr, "server", invoke_request("echo", "5"))
        .await
        .unwrap_err();
    let TransportError::Rejected { error, .. } = &err else {
        panic!("expected an overloaded refusal, got {err}")
    };
    assert_eq!(error.code, "overloaded");
    assert!(err.is_retryable());
    let core: francis_core::Error = err.into();
    assert_eq!(core.kind(), ErrorKind::Overloaded);
    assert!(core.is_retryable());
    assert_eq!(core.retry_after(), Some(Duration::from_millis(100)));
    assert_eq!(server.stats().requests_overloaded, 1);

    // Nothing was lost: the blocked requests complete once released, and the refused one
    // succeeds when retried.
    handler.gate.add_permits(4);
    for (i, call) in blocked.into_iter().enumerate() {
        assert_eq!(
            call.await.unwrap().unwrap(),
            Some(Bytes::from(format!("{i}")))
        );
    }
    let reply = client
        .invoke(addr, "server", invoke("echo", "5"))
        .await
        .unwrap();
    assert_eq!(reply, Some(Bytes::from_static(b"5")));
}

#[tokio::test]
async fn client_reconnects_after_the_server_restarts_on_the_same_port() {
    let (server, _) = start("server", &[PSK_OLD]);
    let addr = server.local_addr();
    let (client, _) = start("client", &[PSK_OLD]);
    client.ping(addr, "server").await.unwrap();

    server.shutdown().await;
    drop(server);
    // The old socket is released asynchronously once the endpoint is gone.
    let mut restarted = None;
    eventually(
        "the port to be free again",
        Duration::from_secs(10),
        || match Transport::start(
            francis_transport::TransportConfig::new("server", addr, vec![PSK_OLD.to_vec()]),
            TestHandler::new(),
        ) {
            Ok(t) => {
                restarted = Some(t);
                true
            }
            Err(TransportError::Bind { .. }) => false,
            Err(e) => panic!("{e}"),
        },
    )
    .await;
    let server = restarted.unwrap();
    assert_eq!(server.local_addr(), addr);

    // The first call learns that the old server closed its connection (retryable, not sent);
    // the next one connects to the restarted server.
    let err = client
        .invoke(addr, "server", invoke("echo", "again"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("not sent"), "{err}");
    let reply = client
        .invoke(addr, "server", invoke("echo", "again"))
        .await
        .unwrap();
    assert_eq!(reply, Some(Bytes::from_static(b"again")));
    assert_eq!(client.stats().connections_opened, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_the_call_aborts_the_stream_and_the_handler() {
    let (server, handler) = start("server", &[PSK_OLD]);
    let (client, _) = start("client", &[PSK_OLD]);
    let addr = server.local_addr();
    let mut call = Box::pin(client.invoke(addr, "server", invoke("block", "null")));
    // Drive the call until the handler runs, then drop it.
    tokio::select! {
        _ = &mut call => panic!("the blocked call finished"),
        _ = eventually("the handler to start", Duration::from_secs(10), || handler.entered() == 1) => {}
    }
    drop(call);
    eventually("the handler to be dropped", Duration::from_secs(10), || {
        handler.dropped() == 1
    })
    .await;
    // The connection still serves.
    assert_eq!(
        client
            .invoke(addr, "server", invoke("echo", "1"))
            .await
            .unwrap(),
        Some(Bytes::from_static(b"1"))
    );
    assert_eq!(client.stats().connections_opened, 1);
}

#[tokio::test]
async fn a_request_that_takes_too_long_times_out() {
    let (server, handler) = start("server", &[PSK_OLD]);
    let (client, _) = start_with(
        config("client", &[PSK_OLD])
            .with_limits(limits(|l| l.request_timeout = Duration::from_millis(300))),
    );
    let err = client
        .request(
            server.local_addr(),
            "server",
            invoke_request("block", "null"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("request to host server"), "{err}");
    let core: francis_core::Error = err.into();
    assert_eq!(core.kind(), ErrorKind::Timeout);
    eventually("the handler to be dropped", Duration::from_secs(10), || {
        handler.dropped() == 1
    })
    .await;
}

#[tokio::test]
async fn leaf_certificates_are_renewed_without_dropping_traffic() {
    let mut server_config = config("server", &[PSK_OLD]);
    server_config.leaf_lifetime = Duration::from_millis(1500);
    let (server, _) = start_with(server_config);
    let addr = server.local_addr();
    let first_leaf = server.leaf_certificate_der();
    let (client, _) = start("client", &[PSK_OLD]);
    client.ping(addr, "server").await.unwrap();

    eventually("a renewal", Duration::from_secs(10), || {
        server.stats().certificate_renewals >= 1
    })
    .await;
    let renewed = server.leaf_certificate_der();
    assert_ne!(renewed, first_leaf);
    assert_eq!(
        francis_transport::testing::host_id_of_cert(&renewed).unwrap(),
        "server"
    );
    // The established connection keeps working...
    client.ping(addr, "server").await.unwrap();
    assert_eq!(client.stats().connections_opened, 1);
    // ...and a new one is made with the new certificate.
    let (other, _) = start("other", &[PSK_OLD]);
    other.ping(addr, "server").await.unwrap();
    assert_eq!(server.stats().connections_accepted, 2);
}

#[tokio::test]
async fn shutdown_delivers_in_flight_answers_then_refuses_calls() {
    let (server, handler) = start("server", &[PSK_OLD]);
    let (client, _) = start("client", &[PSK_OLD]);
    let addr = server.local_addr();
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.invoke(addr, "server", invoke("block", "last")).await })
    };
    eventually("the handler to start", Duration::from_secs(10), || {
        handler.entered() == 1
    })
    .await;
    let stopping = {
        let server = server.clone();
        tokio::spawn(async move { server.shutdown().await })
    };
    handler.gate.add_permits(1);
    assert_eq!(
        call.await.unwrap().unwrap(),
        Some(Bytes::from_static(b"last"))
    );
    stopping.await.unwrap();
    assert!(matches!(
        server
            .request(addr, "server", invoke_request("echo", "x"))
            .await,
        Err(TransportError::Closed)
    ));
    // The stopped host no longer answers.
    let err = client
        .request(addr, "server", invoke_request("echo", "x"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_peer_that_crashed_and_restarted_resets_stale_connections_at_once() {
    // The server runs on its own runtime, torn down with no goodbye to anyone: a crash.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let crashed = {
        let _runtime = server_runtime.enter();
        start("server", &[PSK_OLD]).0
    };
    let addr = crashed.local_addr();
    // Long enough that a stale connection could only be noticed through a reset.
    let patient = |l: &mut francis_transport::Limits| {
        l.request_timeout = Duration::from_secs(20);
        l.idle_timeout = Duration::from_secs(60);
    };
    let (client, _) = start_with(config("client", &[PSK_OLD]).with_limits(limits(patient)));
    client.ping(addr, "server").await.unwrap();
    server_runtime.shutdown_background();
    drop(crashed);

    let mut restarted = None;
    eventually(
        "the port to be free again",
        Duration::from_secs(10),
        || match Transport::start(
            francis_transport::TransportConfig::new("server", addr, vec![PSK_OLD.to_vec()]),
            TestHandler::new(),
        ) {
            Ok(t) => {
                restarted = Some(t);
                true
            }
            Err(TransportError::Bind { .. }) => false,
            Err(e) => panic!("{e}"),
        },
    )
    .await;
    let _server = restarted.unwrap();

    // The restarted host does not know the old connection and resets it (its reset key is
    // derived from the PSK and address), so the caller learns at once instead of timing out.
    match client.ping(addr, "server").await {
        Ok(_) => {}
        Err(TransportError::ConnectionLost { reason, .. }) => {
            assert!(reason.contains("reset"), "{reason}")
        }
        Err(e) => panic!("expected a reset connection, got {e}"),
    }
    client.ping(addr, "server").await.unwrap();
    assert_eq!(client.stats().connections_opened, 2);
}

#[tokio::test]
async fn a_peer_that_goes_silent_fails_the_request_in_flight_within_the_idle_timeout() {
    // The server runs on a runtime of its own with one worker thread; blocking that thread
    // freezes it like SIGSTOP would: no answers, no acknowledgements, no keep-alives.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = {
        let _runtime = server_runtime.enter();
        start("server", &[PSK_OLD]).0
    };
    let addr = server.local_addr();
    // A request timeout far above the idle timeout: only noticing the silence can end the
    // call early.
    let patient = |l: &mut francis_transport::Limits| l.request_timeout = Duration::from_secs(60);
    let (client, _) = start_with(config("client", &[PSK_OLD]).with_limits(limits(patient)));
    client.ping(addr, "server").await.unwrap();

    let (frozen_tx, frozen_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    server_runtime.spawn(async move {
        frozen_tx.send(()).unwrap();
        // Blocks the server's only worker thread until the test is done.
        let _ = release_rx.recv();
    });
    frozen_rx.recv().unwrap();

    let started = std::time::Instant::now();
    let err = client
        .invoke(addr, "server", invoke("echo", "1"))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_retryable(), "{err}");
    assert!(
        !matches!(err.kind(), ErrorKind::Timeout),
        "the call ran into its own timeout ({waited:?}) instead of noticing the silent peer: {err}"
    );
    // Within a few idle timeouts (4 s by default), never the 30 s it once took.
    let limits = francis_transport::Limits::default();
    assert!(
        waited < limits.idle_timeout * 3,
        "noticed only after {waited:?}: {err}"
    );
    release_tx.send(()).unwrap();
    server_runtime.shutdown_background();
}
