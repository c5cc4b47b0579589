//! Trace context on the worker's HTTP API: a call's `traceparent` is accepted and answered, and
//! the call's spans on every host it crosses carry that trace id, as its JSON log lines do.

mod support;

use axum::http::Method;
use serde_json::Value;
use std::time::Duration;
use support::{Cluster, Worker, eventually, free_udp_port};

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The `traceparent` a reply answered, split into (trace id, span id).
fn answered(reply: &support::Reply) -> (String, String) {
    let value = reply.header("traceparent").expect("a traceparent answer");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    assert_eq!(parts[3], "01", "{value}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_joins_the_caller_s_trace_and_answers_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut w =
        Worker::start_with_default_logs(dir.path(), free_udp_port(), &["-log-format", "json"]);
    w.wait_ready().await;
    let r = w
        .http
        .try_send_with(
            Method::POST,
            "/invoke/myactor/t1/increment",
            r#"{"In": 1}"#,
            &[("traceparent", CALLER)],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let (trace, span) = answered(&r);
    assert_eq!(trace, TRACE_ID);
    assert_ne!(
        span, "00f067aa0ba902b7",
        "the worker's own span, a child of the caller's"
    );
    // The activation's log line was written inside the call's spans: it carries the trace.
    let lines = w.wait_for_log(&["actor activated", "t1"], 1).await;
    let line: Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    let spans = line["spans"].as_array().expect("the line's spans");
    let invoke = spans
        .iter()
        .find(|s| s["name"] == "francis.invoke")
        .unwrap_or_else(|| panic!("no francis.invoke span on {line}"));
    assert_eq!(invoke["trace_id"], TRACE_ID, "{line}");
    assert_eq!(invoke["parent_span_id"], span.as_str(), "{line}");
    assert_eq!(invoke["actor_id"], "t1", "{line}");

    // Without a traceparent (or with a malformed one) the call starts a trace of its own.
    for headers in [&[][..], &[("traceparent", "00-garbage")][..]] {
        let r = w
            .http
            .try_send_with(
                Method::POST,
                "/invoke/myactor/t2/increment",
                r#"{"In": 1}"#,
                headers,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let (trace, _) = answered(&r);
        assert_eq!(trace.len(), 32);
        assert_ne!(trace, TRACE_ID);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_routed_to_another_worker_stays_in_one_trace() {
    let root = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(root.path(), 2);
    let mut workers: Vec<Worker> = (0..2)
        .map(|i| cluster.start(i, &["-log-format", "json"]))
        .collect();
    for w in &mut workers {
        w.wait_ready().await;
    }
    // New actors, called through the first worker in the caller's trace, until one lives on
    // the second.
    let (first, second) = (&workers[0], &workers[1]);
    let id = eventually(
        "an actor placed on the second worker",
        Duration::from_secs(30),
        || async {
            for n in 0..64 {
                let id = format!("x{n}-{}", rand_suffix());
                let r = first
                    .http
                    .try_send_with(
                        Method::POST,
                        &format!("/invoke/myactor/{id}/increment"),
                        r#"{"In": 1}"#,
                        &[("traceparent", CALLER)],
                    )
                    .await
                    .ok()?;
                if r.status != 200 {
                    continue;
                }
                assert_eq!(answered(&r).0, TRACE_ID);
                if r.header("x-francis-host").as_deref() == Some(second.host_address.as_str()) {
                    return Some(id);
                }
            }
            None
        },
    )
    .await;
    // The owner activated it inside the call's span there, in the same trace.
    let lines = second.wait_for_log(&["actor activated", &id], 1).await;
    let line: Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    let spans = line["spans"].as_array().expect("the line's spans");
    let serve = spans
        .iter()
        .find(|s| s["name"] == "francis.serve")
        .unwrap_or_else(|| panic!("no francis.serve span on {line}"));
    assert_eq!(serve["trace_id"], TRACE_ID, "{line}");
    assert_eq!(serve["host"], second.host_address.as_str(), "{line}");
}

/// A suffix that keeps actor ids of separate attempts apart.
fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
