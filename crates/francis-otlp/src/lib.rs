//! OpenTelemetry export of Francis's spans, over OTLP (HTTP and protobuf).
//!
//! A host records its work as `tracing` spans (`francis.invoke`, `francis.serve`,
//! `francis.turn`, `francis.alarm`) carrying the call's W3C trace context as `trace_id`,
//! `span_id` and `parent_span_id` fields. [`Otlp::layer`] is a `tracing-subscriber` layer that
//! turns those spans into OpenTelemetry spans **with the same ids**, so the trace id in a log line,
//! in the worker's `traceparent` answer and in the tracing backend is one and the same, and the
//! spans of one call on every host land in one trace. A span of the application's own is
//! exported when it carries a `trace_id` field (with `span_id` and `parent_span_id`, all in hex,
//! as Francis's do) or is opened inside an exported span (in a turn, say), as that span's child.
//!
//! Configuration is the standard environment ([`Otlp::from_env`]): nothing is exported unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (or
//! `OTEL_TRACES_EXPORTER=otlp`); `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turns
//! it off; `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` describe the process;
//! `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT` and `OTEL_BSP_*` tune the exporter and its batches.
//! Spans are batched and sent from a background thread, never on the path of a call; when the
//! collector is slow or away, spans beyond the queue are dropped, calls are not held up.
//!
//! A span's ids are read when it starts: Francis's spans carry their own (`francis.serve`, which
//! has no `span_id` field, gets a random one); a span of the application's that should start
//! a trace declares `trace_id` (with `span_id`, `parent_span_id`) with its values, not as
//! `Empty` to be recorded later. A span is exported when it closes, that is when every clone of
//! it is dropped: a call's `francis.invoke` stays open until the turn it asked for ends, even
//! if the caller stopped waiting.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! // Keep `otlp` until the end of main: dropping it stops the export.
//! let otlp = francis_otlp::Otlp::from_env("my-service").expect("OTEL_* settings");
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer())
//!     .with(otlp.as_ref().map(|o| o.layer()))
//!     .init();
//! let runtime = tokio::runtime::Runtime::new().unwrap();
//! // ... runtime.block_on(run the host) ...
//! drop(runtime);
//! drop(otlp); // sends what is still queued (blocking, up to 5 s), outside the runtime
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanProcessor};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Why export could not be set up, or why a flush or shutdown did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An `OTEL_*` variable has a value this build does not support. Retrying cannot help:
    /// the setting is wrong.
    #[error("{variable}={value:?}: {reason}")]
    Unsupported {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is supported instead.
        reason: &'static str,
    },
    /// The OTLP exporter refused its settings (an endpoint that is not a URL, say). Retrying
    /// cannot help: the setting is wrong.
    #[error("the OTLP exporter cannot be built: {0}")]
    Exporter(String),
    /// A flush or shutdown did not complete: the collector did not answer in time or refused
    /// the spans, or the export was already shut down. A later flush may succeed once the
    /// collector is back (spans it did not take are dropped, not retried).
    #[error("the spans could not be sent: {0}")]
    Export(String),
}

impl Error {
    /// Whether trying again can help: only for [`Error::Export`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Export(_))
    }
}

/// Why an `https://` endpoint is refused.
const PLAIN_HTTP_ONLY: &str = "this build exports over plain HTTP: send to a collector on this \
                               host or network (`http://...`), which can forward over TLS";

/// Whether `OTEL_RESOURCE_ATTRIBUTES` (`key=value,key=value`) names the service.
fn names_the_service(attributes: &str) -> bool {
    attributes.split(',').any(|pair| {
        pair.split('=')
            .next()
            .is_some_and(|k| k.trim() == "service.name")
    })
}

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Export nothing.
    Off,
    /// Export with the exporter's own reading of the environment.
    On,
}

/// Decides from `OTEL_*` variables (read through `var`) whether to export: off unless an
/// endpoint is set or OTLP is asked for by name; only HTTP with protobuf, without TLS, is built in.
fn decide(var: impl Fn(&str) -> Option<String>) -> Result<Decision, Error> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(Decision::Off);
    }
    let asked_by_name = match set("OTEL_TRACES_EXPORTER") {
        None => false,
        Some(v) if v.trim() == "none" => return Ok(Decision::Off),
        Some(v) if v.trim() == "otlp" => true,
        Some(v) => {
            return Err(Error::Unsupported {
                variable: "OTEL_TRACES_EXPORTER",
                value: v,
                reason: "only `otlp` (or `none`) is built in",
            });
        }
    };
    let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", v))
        .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|v| ("OTEL_EXPORTER_OTLP_ENDPOINT", v)));
    if endpoint.is_none() && !asked_by_name {
        return Ok(Decision::Off);
    }
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(v) = set(variable) {
            if v.trim() != "http/protobuf" {
                return Err(Error::Unsupported {
                    variable,
                    value: v,
                    reason: "only `http/protobuf` is built in",
                });
            }
            break;
        }
    }
    if let Some((variable, value)) = endpoint
        && value.trim().starts_with("https:")
    {
        return Err(Error::Unsupported {
            variable,
            value,
            reason: PLAIN_HTTP_ONLY,
        });
    }
    Ok(Decision::On)
}

/// The span export: a batch processor sending to an OTLP endpoint. Keep it for as long as spans
/// should be exported (until the end of `main`): dropping it, like [`Otlp::shutdown`], sends what
/// is queued and **stops the export**, so a layer from [`Otlp::layer`] exports nothing after that.
/// Flushing, shutting down and dropping block the calling thread for up to 5 s; do them outside
/// the async runtime (after it is dropped, or in `spawn_blocking`).
#[must_use = "dropping Otlp stops the export: keep it until the end of main"]
pub struct Otlp {
    inner: Arc<Shared>,
}

struct Shared {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl fmt::Debug for Otlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otlp").finish_non_exhaustive()
    }
}

impl Otlp {
    /// Export as the `OTEL_*` environment says (see the crate documentation): `Ok(None)` when
    /// it asks for no export. `service_name` is used when neither `OTEL_SERVICE_NAME` nor
    /// `OTEL_RESOURCE_ATTRIBUTES` names the service.
    #[must_use = "dropping Otlp stops the export: keep it until the end of main"]
    pub fn from_env(service_name: &str) -> Result<Option<Otlp>, Error> {
        match decide(|name| std::env::var(name).ok())? {
            Decision::Off => Ok(None),
            Decision::On => Self::build(None, service_name).map(Some),
        }
    }

    /// Export to `endpoint` (the full URL, such as `http://127.0.0.1:4318/v1/traces`), whatever
    /// the environment says about the endpoint. An `https://` endpoint is refused, as from the
    /// environment.
    pub fn to_endpoint(endpoint: &str, service_name: &str) -> Result<Otlp, Error> {
        if endpoint.trim().starts_with("https:") {
            return Err(Error::Unsupported {
                variable: "endpoint",
                value: endpoint.to_owned(),
                reason: PLAIN_HTTP_ONLY,
            });
        }
        Self::build(Some(endpoint), service_name)
    }

    fn build(endpoint: Option<&str>, service_name: &str) -> Result<Otlp, Error> {
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let exporter = builder
            .build()
            .map_err(|e| Error::Exporter(e.to_string()))?;
        let mut resource = Resource::builder();
        let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| names_the_service(&v));
        if !named_by_env {
            resource = resource.with_service_name(service_name.to_owned());
        }
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&resource.build());
        Ok(Otlp {
            inner: Arc::new(Shared {
                processor,
                scope: InstrumentationScope::builder("francis")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
            }),
        })
    }

    /// The layer that exports spans; add it to the application's subscriber. Spans are exported
    /// as the subscriber's filter lets them through (`francis.turn` is at debug).
    pub fn layer(&self) -> OtlpLayer {
        OtlpLayer {
            inner: self.inner.clone(),
        }
    }

    /// Sends every span that has ended and waits (blocking, up to 5 s) for the collector's
    /// answer.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner
            .processor
            .force_flush()
            .map_err(|e| Error::Export(e.to_string()))
    }

    /// Sends what is queued (blocking, up to 5 s) and stops the export; later spans are dropped.
    pub fn shutdown(&self) -> Result<(), Error> {
        self.inner
            .processor
            .shutdown_with_timeout(Duration::from_secs(5))
            .map_err(|e| Error::Export(e.to_string()))
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        // A second shutdown (after an explicit one) is refused and changes nothing.
        let _ = self.shutdown();
    }
}

/// A `tracing-subscriber` layer exporting Francis's spans (and the spans opened inside them)
/// as OpenTelemetry spans. Get one from [`Otlp::layer`].
#[derive(Clone)]
pub struct OtlpLayer {
    inner: Arc<Shared>,
}

impl fmt::Debug for OtlpLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpLayer").finish_non_exhaustive()
    }
}

/// A span being recorded, kept in the tracing span's extensions until it closes.
struct Pending {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: SpanId,
    start: SystemTime,
    fields: Fields,
}

/// The fields of a span: its ids (from Francis's trace context) and everything else as
/// attributes.
#[derive(Default)]
struct Fields {
    trace_id: Option<TraceId>,
    span_id: Option<SpanId>,
    parent_span_id: Option<SpanId>,
    outcome: Option<String>,
    /// `otel.kind`: `server`, `client`, `producer`, `consumer` or `internal`.
    kind: Option<SpanKind>,
    attributes: Vec<KeyValue>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: opentelemetry::Value) {
        let key = field.name();
        match key {
            "trace_id" => self.trace_id = TraceId::from_hex(&value.as_str()).ok(),
            "span_id" => self.span_id = SpanId::from_hex(&value.as_str()).ok(),
            "parent_span_id" => self.parent_span_id = SpanId::from_hex(&value.as_str()).ok(),
            "otel.kind" => {
                self.kind = match value.as_str().as_ref() {
                    "server" => Some(SpanKind::Server),
                    "client" => Some(SpanKind::Client),
                    "producer" => Some(SpanKind::Producer),
                    "consumer" => Some(SpanKind::Consumer),
                    "internal" => Some(SpanKind::Internal),
                    _ => None,
                }
            }
            _ => {
                if key == "outcome" {
                    self.outcome = Some(value.as_str().into_owned());
                }
                match self.attributes.iter_mut().find(|kv| kv.key.as_str() == key) {
                    Some(kv) => kv.value = value,
                    None => self.attributes.push(KeyValue::new(key, value)),
                }
            }
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned().into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, i64::try_from(value).unwrap_or(i64::MAX).into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// A new span id: random, never zero.
fn new_span_id() -> SpanId {
    SpanId::from_bytes(rand::random::<std::num::NonZeroU64>().get().to_be_bytes())
}

/// A new trace id: random, never zero.
fn new_trace_id() -> TraceId {
    TraceId::from_bytes(rand::random::<std::num::NonZeroU128>().get().to_be_bytes())
}

/// The OpenTelemetry kind of a span without an `otel.kind` field.
fn kind_of(name: &str) -> SpanKind {
    match name {
        "francis.invoke" => SpanKind::Client,
        "francis.serve" => SpanKind::Server,
        _ => SpanKind::Internal,
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // The nearest exported ancestor, if any.
        let parent = span.scope().skip(1).find_map(|ancestor| {
            let ext = ancestor.extensions();
            ext.get::<Pending>().map(|p| (p.trace_id, p.span_id))
        });
        // Francis's spans, spans that carry a trace context of their own (the worker's
        // `worker.request`, an application's), and everything inside those; decided before
        // any field is formatted, so other spans cost next to nothing.
        let metadata = attrs.metadata();
        let traced = metadata.name().starts_with("francis.")
            || metadata.fields().field("trace_id").is_some();
        if !traced && parent.is_none() {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let trace_id = fields
            .trace_id
            .or(parent.map(|(t, _)| t))
            .unwrap_or_else(new_trace_id);
        let span_id = fields.span_id.unwrap_or_else(new_span_id);
        let parent_span_id = fields
            .parent_span_id
            .or(parent.map(|(_, s)| s))
            .unwrap_or(SpanId::INVALID);
        span.extensions_mut().insert(Pending {
            trace_id,
            span_id,
            parent_span_id,
            start: SystemTime::now(),
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(pending) = ext.get_mut::<Pending>() {
            values.record(&mut pending.fields);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(pending) = span.extensions_mut().remove::<Pending>() else {
            return;
        };
        let name = span.metadata().name();
        let status = match pending.fields.outcome.as_deref() {
            None => Status::Unset,
            Some("ok") => Status::Ok,
            Some(code) => Status::error(code.to_owned()),
        };
        let kind = pending.fields.kind.clone().unwrap_or_else(|| kind_of(name));
        let remote_parent = kind == SpanKind::Server;
        let mut attributes = pending.fields.attributes;
        attributes.push(KeyValue::new("code.namespace", span.metadata().target()));
        let data = SpanData {
            span_context: SpanContext::new(
                pending.trace_id,
                pending.span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: pending.parent_span_id,
            // The owner's side of a call from another host: its parent ran there.
            parent_span_is_remote: remote_parent,
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: pending.start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: self.inner.scope.clone(),
        };
        self.inner.processor.on_end(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn nothing_is_exported_unless_asked_for() {
        assert_eq!(decide(env(&[])).unwrap(), Decision::Off);
        assert_eq!(
            decide(env(&[("OTEL_SERVICE_NAME", "x")])).unwrap(),
            Decision::Off
        );
        assert_eq!(
            decide(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])).unwrap(),
            Decision::Off
        );
    }

    #[test]
    fn an_endpoint_or_the_exporter_s_name_turns_export_on() {
        let on = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            ),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ];
        for var in on {
            assert_eq!(decide(env(&[var])).unwrap(), Decision::On, "{var:?}");
        }
    }

    #[test]
    fn export_can_be_turned_off_whatever_else_is_set() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                decide(env(&[endpoint, off])).unwrap(),
                Decision::Off,
                "{off:?}"
            );
        }
    }

    #[test]
    fn the_service_is_named_by_the_resource_attributes_only_under_its_own_key() {
        assert!(names_the_service("service.name=shop"));
        assert!(names_the_service("team=a, service.name = shop"));
        assert!(!names_the_service("service.namespace=shop"));
        assert!(!names_the_service(""));
    }

    #[test]
    fn an_https_endpoint_given_in_code_is_refused_too() {
        let e = Otlp::to_endpoint("https://c:4318/v1/traces", "x").unwrap_err();
        assert!(
            e.to_string().contains("plain HTTP") && !e.is_retryable(),
            "{e}"
        );
    }

    #[test]
    fn what_is_not_built_in_is_refused_by_name() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let refused = [
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ];
        for bad in refused {
            let e = decide(env(&[endpoint, bad])).unwrap_err().to_string();
            assert!(e.contains(bad.0) && e.contains(bad.1), "{e}");
        }
        let e = decide(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain HTTP"), "{e}");
        // The signal's own protocol wins over the general one.
        assert_eq!(
            decide(env(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]))
            .unwrap(),
            Decision::On
        );
    }
}
