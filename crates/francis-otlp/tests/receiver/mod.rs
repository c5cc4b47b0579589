//! An OTLP/HTTP trace receiver for tests: a real HTTP server on a free port that decodes each
//! export request's protobuf and keeps every span with its resource's service name. Shared by
//! this crate's tests and the worker's (`#[path]`).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// The receiver: what it got so far.
#[derive(Clone, Default)]
pub struct Receiver(Arc<Mutex<Vec<(String, Span)>>>);

impl Receiver {
    /// Serves on a free port of 127.0.0.1; answers the base URL (`http://127.0.0.1:PORT`),
    /// whose `/v1/traces` takes exports.
    pub async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, base)
    }

    /// Every span received in the trace `trace_id` (hex), with its service name.
    pub fn of_trace(&self, trace_id: &str) -> Vec<(String, Span)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect()
    }
}

async fn receive(State(received): State<Receiver>, body: Bytes) -> &'static [u8] {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    let mut spans = received.0.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| string(kv.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
        }
    }
    // An empty ExportTraceServiceResponse.
    b""
}

fn string(value: &Value) -> Option<String> {
    Some(match value {
        Value::StringValue(s) => s.clone(),
        other => format!("{other:?}"),
    })
}

/// A span's attribute, as a string.
#[allow(dead_code)]
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string(kv.value.as_ref()?.value.as_ref()?))
}

/// Bytes as lowercase hex (trace and span ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
