//! OpenTelemetry export from the worker: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, a call's spans
//! reach an OTLP receiver (here, in the test) in the caller's trace, and the span id the worker
//! answers in `traceparent` is the id of its exported request span.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::Method;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::{Worker, eventually};

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Every span received, with the service name of its resource.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

async fn receive(State(received): State<Received>, body: Bytes) -> &'static [u8] {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    let mut spans = received.0.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
        }
    }
    b""
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_exports_a_call_s_spans_in_the_caller_s_trace() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

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
            let spans: Vec<(String, Span)> = received
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, s)| hex(&s.trace_id) == TRACE_ID)
                .cloned()
                .collect();
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
