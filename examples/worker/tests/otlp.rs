//! OpenTelemetry export from the worker: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, a call's spans
//! reach an OTLP receiver (here, in the test) in the caller's trace, and the span id the worker
//! answers in `traceparent` is the id of its exported request span.

mod support;

use std::time::Duration;

use axum::http::Method;
use opentelemetry_proto::tonic::trace::v1::Span;
use receiver::{Receiver, hex};
use support::{Worker, eventually};

#[path = "../../../crates/francis-otlp/tests/receiver/mod.rs"]
mod receiver;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_exports_a_call_s_spans_in_the_caller_s_trace() {
    let (received, endpoint) = Receiver::start().await;

    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::start_with_env(
        dir.path(),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Send batches every 100 ms rather than every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    w.wait_ready().await;
    let r = w
        .http
        .try_send_with(
            Method::POST,
            "/invoke/myactor/o1/increment",
            r#"{"In": 1}"#,
            &[("traceparent", CALLER)],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let answered = r.header("traceparent").expect("a traceparent answer");
    let answered_span = answered.split('-').nth(2).unwrap().to_owned();

    let spans = eventually(
        "the call's spans reach the receiver",
        Duration::from_secs(20),
        || {
            let spans: Vec<(String, Span)> = received.of_trace(TRACE_ID);
            let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
            let all = names.contains(&"worker.request") && names.contains(&"francis.invoke");
            async move { all.then_some(spans) }
        },
    )
    .await;
    assert!(spans.iter().all(|(service, _)| service == "francis-worker"));
    let request = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "worker.request")
        .unwrap();
    let invoke = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "francis.invoke")
        .unwrap();
    // The answered traceparent names the exported request span, a child of the caller's.
    assert_eq!(hex(&request.span_id), answered_span);
    assert_eq!(hex(&request.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(invoke.parent_span_id, request.span_id);
    w.sigterm();
    assert!(w.wait_exit(Duration::from_secs(30)).await.success());
}

#[test]
fn export_settings_this_build_cannot_honour_stop_the_worker_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_to_exit(
        dir.path(),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && stderr.contains("http/protobuf"),
        "{stderr}"
    );
}
