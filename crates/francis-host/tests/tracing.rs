//! Spans across hosts: a call entering host A and running on host B yields `francis.invoke` on
//! A and `francis.serve` and `francis.turn` on B, all with the caller's trace id, captured by an
//! in-process span recorder.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use francis_core::ActorRef;
use francis_host::TraceContext;
use support::{Probe, host_on, invoke_until_routed, serve_probe};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One recorded span: its name and fields.
#[derive(Clone, Debug)]
struct Recorded {
    name: &'static str,
    fields: HashMap<String, String>,
}

/// Keeps every `francis.*` span with its fields (and fields recorded later, like `outcome`).
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<Vec<Recorded>>>,
    ids: Arc<Mutex<HashMap<u64, usize>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let name = attrs.metadata().name();
        if !name.starts_with("francis.") {
            return;
        }
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        self.ids.lock().unwrap().insert(id.into_u64(), spans.len());
        spans.push(Recorded { name, fields });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let Some(&i) = self.ids.lock().unwrap().get(&id.into_u64()) else {
            return;
        };
        values.record(&mut Fields(&mut self.spans.lock().unwrap()[i].fields));
    }
}

impl Recorder {
    fn find(&self, name: &str, field: &str, value: &str) -> Vec<Recorded> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name && s.fields.get(field).map(String::as_str) == Some(value))
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_across_hosts_is_one_trace() {
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder.clone()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let probe = Arc::new(Probe::default());
    // Only B serves the probe type, so every call through A runs on B.
    let a = host_on(&path, |_| {}).await;
    let b = host_on(&path, |h| serve_probe(h, &probe)).await;
    let caller =
        TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap();
    let traced = a.host.service().traced(caller);
    let id = ActorRef::new(support::TYPE, "t1").unwrap();
    // A learns of B's actor types from the store's membership: retry until it routes there.
    invoke_until_routed(&traced, &id, "increment").await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let invoke: Vec<_> = recorder
        .find("francis.invoke", "trace_id", trace)
        .into_iter()
        .filter(|s| s.fields.get("outcome").map(String::as_str) == Some("ok"))
        .collect();
    assert_eq!(invoke.len(), 1, "{invoke:?}");
    let invoke = &invoke[0];
    assert_eq!(invoke.fields["host"], a.host.address());
    assert_eq!(invoke.fields["actor_id"], "t1");
    assert_eq!(invoke.fields["method"], "increment");
    assert_eq!(invoke.fields["parent_span_id"], "00f067aa0ba902b7");
    let serve = recorder.find("francis.serve", "trace_id", trace);
    assert!(!serve.is_empty(), "no francis.serve span");
    assert!(serve.iter().all(|s| s.fields["host"] == b.host.address()));
    let turns = recorder.find("francis.turn", "trace_id", trace);
    let turn = turns
        .iter()
        .find(|s| s.fields.get("outcome").map(String::as_str) == Some("ok"))
        .unwrap_or_else(|| panic!("no finished turn: {turns:?}"));
    assert_eq!(turn.fields["host"], b.host.address());
    assert_eq!(turn.fields["turn"], "invoke");
    // The turn's span is a child of the invoke span that sent it.
    assert_eq!(turn.fields["parent_span_id"], invoke.fields["span_id"]);
    assert_ne!(turn.fields["span_id"], invoke.fields["span_id"]);
    a.stop().await;
    b.stop().await;
}
