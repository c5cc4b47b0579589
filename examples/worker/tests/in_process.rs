//! The worker as a library, in this process: bind on a free port, run, stop with the token.

mod support;

use std::time::{Duration, Instant};

use francis_core::CancellationToken;
use support::{DEADLINE, Http, eventually};
use worker::{Config, Worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_cancels_a_waiting_call_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        worker_address: "127.0.0.1:0".into(),
        actor_host_address: format!("127.0.0.1:{}", support::free_udp_port()),
        data: dir.path().join("w.db"),
        peers: Vec::new(),
        ..Config::default()
    };
    let host_address = config.actor_host_address.clone();
    let worker = Worker::bind(config).await.expect("bind the worker");
    let http = Http::new(&worker.local_addr().to_string());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    eventually("the worker to serve", DEADLINE, || async {
        let r = http
            .try_send(axum::http::Method::GET, "/healthz", "")
            .await
            .ok()?;
        (r.status == 200).then_some(())
    })
    .await;

    let r = http.post("/invoke/myactor/w/reset", r#"{"In": 3}"#).await;
    assert_eq!(r.json()["Out"], 3);
    assert_eq!(r.header("x-francis-host"), Some(host_address));

    // A 25 s call, halted a moment after it started: it fails at once with a retryable
    // `cancelled`, and the increment it would have made never happens.
    let started = Instant::now();
    let slow = tokio::spawn({
        let http = http.clone();
        async move {
            http.post("/invoke/myactor/w/increment-wait", r#"{"In": 1}"#)
                .await
        }
    });
    // Halt until the call has answered: a halt that lands before the call reached the actor
    // only deactivates it (the call then re-activates it), the next one cuts the wait short.
    // A call caught between activation and its turn gets `actor_halted`; both are retryable.
    eventually("the waiting call to be cut short", DEADLINE, || async {
        let _ = http.post("/halt/myactor/w", "").await;
        slow.is_finished().then_some(())
    })
    .await;
    let r = slow.await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        ["cancelled", "actor_halted"].contains(&r.code().as_str()),
        "{r:?}"
    );
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the wait was not cut short"
    );
    let r = http.post("/peek/myactor/w/peek", "").await;
    assert_eq!(r.json()["Out"], 3);

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, running)
        .await
        .expect("the worker stops")
        .unwrap()
        .expect("a clean stop");
}
