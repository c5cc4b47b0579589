//! What an actor logs during a turn carries the call's trace, even under a filter that leaves
//! out `francis.turn` (at debug): the turn then runs inside the caller's `francis.invoke`, and
//! the calls it makes are children of that span.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use francis_core::{Actor, ActorContext, ActorRef, ActorService, Envelope, Error, async_trait};
use francis_host::{ActorOptions, LocalHost, TraceContext};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// An event's message, with the `trace_id` of the nearest span around it that has one.
type Line = (String, Option<String>);

/// Every event seen, and the `(span_id, parent_span_id)` of every `francis.invoke`.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Line>>>, Arc<Mutex<Vec<(String, String)>>>);

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// A span's `trace_id`, kept in its extensions.
struct TraceField(String);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Events {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if attrs.metadata().name() == "francis.invoke" {
            let get = |k: &str| fields.0.get(k).cloned().unwrap_or_default();
            self.1
                .lock()
                .unwrap()
                .push((get("span_id"), get("parent_span_id")));
        }
        if let (Some(trace), Some(span)) = (fields.0.remove("trace_id"), ctx.span(id)) {
            span.extensions_mut().insert(TraceField(trace));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let trace = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<TraceField>().map(|t| t.0.clone()))
        });
        let message = fields.0.remove("message").unwrap_or_default();
        self.0.lock().unwrap().push((message, trace));
    }
}

struct Chatty;

/// Calls a chatty actor from its turn.
struct Relay;

#[async_trait]
impl Actor for Relay {
    async fn invoke(
        &mut self,
        ctx: &ActorContext,
        _method: &str,
        _data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        let chatty = ActorRef::new("chatty", "c").unwrap();
        ctx.service()
            .invoke(&chatty, "speak", Envelope::null())
            .await
    }
}

#[async_trait]
impl Actor for Chatty {
    async fn invoke(
        &mut self,
        _ctx: &ActorContext,
        _method: &str,
        _data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        tracing::info!("the actor speaks inside its turn");
        Ok(None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_s_lines_carry_the_call_s_trace() {
    let events = Events::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(events.clone().with_filter(LevelFilter::INFO)),
    )
    .unwrap();
    // Not bound: a host without peers serves no peer port.
    let host = LocalHost::builder()
        .address("127.0.0.1:7571")
        .in_memory()
        .build()
        .await
        .unwrap();
    let host = Arc::new(host);
    host.register_actor("chatty", |_| Chatty, ActorOptions::default())
        .unwrap();
    host.register_actor("relay", |_| Relay, ActorOptions::default())
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (host, stop) = (host.clone(), stop.clone());
        async move { host.run(stop).await }
    });
    host.serving().await.unwrap();
    let caller =
        TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap();
    let chatty = ActorRef::new("chatty", "c").unwrap();
    host.service()
        .traced(caller)
        .invoke(&chatty, "speak", Envelope::null())
        .await
        .unwrap();
    let seen = events.0.lock().unwrap().clone();
    let line = seen
        .iter()
        .find(|(message, _)| message.contains("the actor speaks"))
        .unwrap_or_else(|| panic!("the actor's line was not seen: {seen:?}"));
    assert_eq!(
        line.1.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{line:?}"
    );

    // A call made from a turn is a child of the span that turn ran in (the caller's
    // `francis.invoke`, `francis.turn` being filtered out), never of a span nobody saw.
    events.1.lock().unwrap().clear();
    let relay = ActorRef::new("relay", "r").unwrap();
    host.service()
        .traced(caller)
        .invoke(&relay, "relay", Envelope::null())
        .await
        .unwrap();
    let invokes = events.1.lock().unwrap().clone();
    assert_eq!(invokes.len(), 2, "{invokes:?}");
    let (outer, inner) = (&invokes[0], &invokes[1]);
    assert_eq!(outer.1, "00f067aa0ba902b7", "{invokes:?}");
    assert_eq!(inner.1, outer.0, "{invokes:?}");
    stop.cancel();
    run.await.unwrap().unwrap();
}
