//! The HTTP control server: invoke actors, manage their alarms and state, halt them.
//!
//! Every error answer has the body `{"error": "<message>", "code": "<code>"}`, where `code` is
//! the stable `francis_core::ErrorKind` code (or `payload_too_large`, `not_found`,
//! `method_not_allowed` for failures outside Francis). The status comes from [`status_for`].

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use francis_core::{
    ActorRef, ActorService, AlarmProperties, Envelope, Error, ErrorKind, validate_alarm_name,
    validate_method,
};
use francis_host::{Health, HostService, Invoked, TraceContext};
use serde_json::json;
use tracing::{Instrument, warn};

/// Largest request body accepted (16 MiB, the framework's max message size); larger bodies get
/// `413` with code `payload_too_large`.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Response header naming the advertised address of the host that ran the actor (on errors: of
/// the host that answered).
pub const HOST_HEADER: &str = "x-francis-host";

/// The W3C trace context header, accepted on `/invoke` and `/peek` and answered on both: the
/// trace the call's spans belong to, and the worker's span for the request.
pub const TRACEPARENT: &str = "traceparent";

/// Code of a `413` answer.
pub const CODE_PAYLOAD_TOO_LARGE: &str = "payload_too_large";

/// The HTTP status for an error kind.
///
/// - `400`: the request is malformed (`decode`, `invalid_argument`, `invalid_reference`).
/// - `403`: reserved actor type or method.
/// - `404`: nothing there (`actor_type_unsupported`, `method_not_implemented`,
///   `state_not_found`, `alarm_not_found`, `actor_not_hosted`, `actor_not_active`).
/// - `409`: a write inside a read-only `peek` (`read_only`).
/// - `503` (with `Retry-After`): try again later or elsewhere (`no_host`, `shutting_down`,
///   `host_unavailable`, `no_quorum`, `overloaded`, `actor_halted`, `fenced`, `cancelled`,
///   `transport`).
/// - `504`: the call timed out (`timeout`).
/// - `500`: the actor's own error (`actor_error`, with its message, and for a typed actor its
///   value as `detail`), an answer that cannot be
///   encoded, the store failing, or anything unknown.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Decode | ErrorKind::InvalidArgument | ErrorKind::InvalidReference => {
            StatusCode::BAD_REQUEST
        }
        ErrorKind::ActorTypeReserved | ErrorKind::MethodReserved => StatusCode::FORBIDDEN,
        ErrorKind::ActorTypeUnsupported
        | ErrorKind::MethodNotImplemented
        | ErrorKind::StateNotFound
        | ErrorKind::AlarmNotFound
        | ErrorKind::ActorNotHosted
        | ErrorKind::ActorNotActive => StatusCode::NOT_FOUND,
        ErrorKind::ReadOnly | ErrorKind::Reentrant => StatusCode::CONFLICT,
        ErrorKind::NoHost
        | ErrorKind::ShuttingDown
        | ErrorKind::HostUnavailable
        | ErrorKind::NoQuorum
        | ErrorKind::Overloaded
        | ErrorKind::ActorHalted
        | ErrorKind::Fenced
        | ErrorKind::Cancelled
        | ErrorKind::Transport => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Actor | ErrorKind::Encode | ErrorKind::Store | ErrorKind::Unknown => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whole seconds for a `Retry-After` header: the hint rounded up, at least 1, default 1.
pub fn retry_after_secs(hint: Option<Duration>) -> u64 {
    match hint {
        Some(d) => {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            secs.max(1)
        }
        None => 1,
    }
}

/// The `/healthz` answer for a host health: `200` only while serving.
pub fn health_status(health: &Health) -> (StatusCode, &'static str) {
    match health {
        Health::Serving => (StatusCode::OK, "serving"),
        Health::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        Health::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        Health::Fenced(_) => (StatusCode::SERVICE_UNAVAILABLE, "fenced"),
        Health::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
        Health::Failed(_) => (StatusCode::SERVICE_UNAVAILABLE, "failed"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "unknown"),
    }
}

/// Whether a replicated store with `members` voters, `unreachable` of which this host cannot
/// reach, has a majority (this host included).
pub fn has_quorum(members: usize, unreachable: usize) -> bool {
    let reachable = members.saturating_sub(unreachable);
    members == 0 || reachable * 2 > members
}

/// A request body as an invocation payload: empty (or blank) means JSON `null`; anything else
/// must be one JSON document.
pub fn payload(body: Bytes) -> Result<Envelope, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Envelope::null());
    }
    Envelope::from_json(body)
}

/// An error answer: status, stable code, message.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    /// A typed actor's own error value, answered as `detail`.
    detail: Option<Envelope>,
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = status_for(err.kind());
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            warn!(code = err.code(), "request failed: {err}");
        }
        ApiError {
            status,
            code: err.code(),
            message: err.to_string(),
            retry_after: err.retry_after(),
            detail: err.detail().cloned(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        let status = rejection.status();
        ApiError {
            status,
            code: if status == StatusCode::BAD_REQUEST {
                ErrorKind::InvalidReference.code()
            } else {
                ErrorKind::Unknown.code()
            },
            message: rejection.body_text(),
            retry_after: None,
            detail: None,
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError {
                status,
                code: CODE_PAYLOAD_TOO_LARGE,
                message: format!("request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
                retry_after: None,
                detail: None,
            };
        }
        ApiError {
            status,
            code: ErrorKind::Decode.code(),
            message: format!("cannot read the request body: {}", rejection.body_text()),
            retry_after: None,
            detail: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message, "code": self.code });
        if let Some(detail) = self
            .detail
            .and_then(|d| d.decode::<serde_json::Value>().ok())
        {
            body["detail"] = detail;
        }
        let body = axum::Json(body);
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after_secs(self.retry_after).into(),
            );
        }
        response
    }
}

#[derive(Clone, Debug)]
struct AppState {
    service: HostService,
}

/// The control server's routes over one host's service. `/healthz` asks the service, which
/// checks the host's lease on the spot (never `serving` once it lapsed).
///
/// Bodies over [`MAX_BODY_BYTES`] are refused with `413`; unknown paths get a JSON `404`.
pub fn router(service: HostService) -> Router {
    Router::new()
        .route("/invoke/{actor_type}/{actor_id}/{method}", post(invoke))
        .route("/peek/{actor_type}/{actor_id}/{method}", post(peek))
        .route(
            "/alarm/{actor_type}/{actor_id}/{name}",
            post(set_alarm).get(get_alarm).delete(delete_alarm),
        )
        .route("/state/{actor_type}/{actor_id}", get(get_state))
        .route("/halt/{actor_type}/{actor_id}", post(halt))
        .route("/halt-all", post(halt_all))
        .route(
            "/cluster/members/{address}",
            post(add_member).delete(remove_member),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(AppState { service })
}

type Path3 = Result<Path<(String, String, String)>, PathRejection>;
type Path2 = Result<Path<(String, String)>, PathRejection>;
type Path1 = Result<Path<String>, PathRejection>;
type Body = Result<Bytes, BytesRejection>;

#[derive(Clone, Copy)]
enum Entry {
    Invoke,
    Peek,
}

async fn invoke(
    State(app): State<AppState>,
    headers: HeaderMap,
    path: Path3,
    body: Body,
) -> Response {
    call(&app, Entry::Invoke, &headers, path, body).await
}

async fn peek(
    State(app): State<AppState>,
    headers: HeaderMap,
    path: Path3,
    body: Body,
) -> Response {
    call(&app, Entry::Peek, &headers, path, body).await
}

/// The trace of a request and the caller's own context: the request's is a child of the
/// caller's `traceparent` when it sent a valid one, else a new trace. (A malformed header starts
/// a new trace; it never fails the call.)
pub fn request_trace(headers: &HeaderMap) -> (TraceContext, Option<TraceContext>) {
    let caller = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::from_traceparent);
    let trace = caller.map_or_else(TraceContext::new_root, |caller| caller.child());
    (trace, caller)
}

async fn call(
    app: &AppState,
    entry: Entry,
    headers: &HeaderMap,
    path: Path3,
    body: Body,
) -> Response {
    let (trace, caller) = request_trace(headers);
    // The request's own span: its id is the one the answer's `traceparent` carries, and the
    // call's spans (on this worker and every host it reaches) are its children.
    let span = tracing::info_span!(
        "worker.request",
        otel.kind = "server",
        entry = match entry {
            Entry::Invoke => "invoke",
            Entry::Peek => "peek",
        },
        host = app.service.host_address(),
        trace_id = %trace.trace_id(),
        span_id = %trace.span_id(),
        parent_span_id = caller.map(|c| c.span_id()).map(tracing::field::display),
        status = tracing::field::Empty,
    );
    let service = app.service.traced(trace);
    let result: Result<Invoked, ApiError> = async {
        let Path((actor_type, actor_id, method)) = path?;
        let actor = ActorRef::new(actor_type, actor_id)?;
        actor.check_not_reserved()?;
        validate_method(&method)?;
        let data = payload(body?)?;
        let invoked = match entry {
            Entry::Invoke => service.invoke_traced(&actor, &method, data).await?,
            Entry::Peek => service.peek_traced(&actor, &method, data).await?,
        };
        Ok(invoked)
    }
    .instrument(span.clone())
    .await;
    let (mut response, host) = match result {
        Ok(Invoked {
            output: Some(out),
            served_by,
        }) => (json_response(StatusCode::OK, out.into_bytes()), served_by),
        Ok(Invoked {
            output: None,
            served_by,
        }) => (StatusCode::NO_CONTENT.into_response(), served_by),
        Err(e) => (e.into_response(), app.service.host_address().to_owned()),
    };
    if let Ok(value) = HeaderValue::from_str(&host) {
        response.headers_mut().insert(HOST_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&trace.traceparent()) {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    span.record("status", response.status().as_u16());
    response
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (status, headers, body).into_response()
}

fn no_content(result: Result<(), ApiError>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

fn alarm_target(path: Path3) -> Result<(ActorRef, String), ApiError> {
    let Path((actor_type, actor_id, name)) = path?;
    let actor = ActorRef::new(actor_type, actor_id)?;
    actor.check_not_reserved()?;
    validate_alarm_name(&name)?;
    Ok((actor, name))
}

async fn set_alarm(State(app): State<AppState>, path: Path3, body: Body) -> Response {
    no_content(
        async {
            let (actor, name) = alarm_target(path)?;
            let body = body?;
            // An empty body is an alarm with every default: due now, once, no data.
            let raw: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
                b"{}"
            } else {
                &body
            };
            let properties = AlarmProperties::from_json(raw)?;
            app.service.set_alarm(&actor, &name, properties).await?;
            Ok(())
        }
        .await,
    )
}

async fn get_alarm(State(app): State<AppState>, path: Path3) -> Response {
    let result: Result<AlarmProperties, ApiError> = async {
        let (actor, name) = alarm_target(path)?;
        Ok(app.service.get_alarm(&actor, &name).await?)
    }
    .await;
    match result {
        Ok(properties) => (StatusCode::OK, axum::Json(properties)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn delete_alarm(State(app): State<AppState>, path: Path3) -> Response {
    no_content(
        async {
            let (actor, name) = alarm_target(path)?;
            app.service.delete_alarm(&actor, &name).await?;
            Ok(())
        }
        .await,
    )
}

fn actor_target(path: Path2) -> Result<ActorRef, ApiError> {
    let Path((actor_type, actor_id)) = path?;
    let actor = ActorRef::new(actor_type, actor_id)?;
    actor.check_not_reserved()?;
    Ok(actor)
}

async fn get_state(State(app): State<AppState>, path: Path2) -> Response {
    let result: Result<Envelope, ApiError> = async {
        let actor = actor_target(path)?;
        Ok(app.service.get_state(&actor).await?)
    }
    .await;
    match result {
        Ok(state) => json_response(StatusCode::OK, state.into_bytes()),
        Err(e) => e.into_response(),
    }
}

async fn halt(State(app): State<AppState>, path: Path2) -> Response {
    no_content(
        async {
            let actor = actor_target(path)?;
            app.service.halt(&actor).await?;
            Ok(())
        }
        .await,
    )
}

/// `POST /cluster/members/{address}`: adds the worker with that actor-host address to the
/// replicated store's voters (it must be running). `204` when done.
async fn add_member(State(app): State<AppState>, path: Path1) -> Response {
    no_content(
        async {
            let Path(address) = path?;
            app.service.add_member(&address).await?;
            Ok(())
        }
        .await,
    )
}

/// `DELETE /cluster/members/{address}`: removes the worker with that actor-host address from
/// the replicated store's voters, for good (a dead worker that will not come back). `204`
/// when done; `400` when it is not a member or the store is not replicated.
async fn remove_member(State(app): State<AppState>, path: Path1) -> Response {
    no_content(
        async {
            let Path(address) = path?;
            app.service.remove_member(&address).await?;
            Ok(())
        }
        .await,
    )
}

async fn halt_all(State(app): State<AppState>) -> Response {
    no_content(app.service.halt_all().await.map_err(ApiError::from))
}

/// `GET /metrics`: every metric of this process (the host's and anything else recorded through
/// the `metrics` facade) in the Prometheus text format.
async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::prometheus::handle().render(),
    )
        .into_response()
}

async fn healthz(State(app): State<AppState>) -> Response {
    let health = app.service.health();
    let (mut status, mut label) = health_status(&health);
    let mut body = json!({ "status": label, "host": app.service.host_address() });
    if let Some(store) = app.service.replication_status() {
        if status == StatusCode::OK && !has_quorum(store.members.len(), store.unreachable.len()) {
            (status, label) = (StatusCode::SERVICE_UNAVAILABLE, "no_quorum");
            body["status"] = json!(label);
        }
        body["store"] = json!({
            "role": store.role,
            "leader": store.leader,
            "members": store.members,
            "unreachable": store.unreachable,
        });
    }
    let body = axum::Json(body);
    let mut response = (status, body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after_secs(None).into());
    }
    response
}

async fn not_found() -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such endpoint; see docs/worker.md".into(),
        retry_after: None,
        detail: None,
    }
    .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "method not allowed on this endpoint; see docs/worker.md".into(),
        retry_after: None,
        detail: None,
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_a_deliberate_status() {
        use ErrorKind as K;
        let table = [
            (K::StateNotFound, 404),
            (K::AlarmNotFound, 404),
            (K::ActorNotActive, 404),
            (K::ActorNotHosted, 404),
            (K::ActorHalted, 503),
            (K::ActorTypeUnsupported, 404),
            (K::ActorTypeReserved, 403),
            (K::MethodReserved, 403),
            (K::MethodNotImplemented, 404),
            (K::NoHost, 503),
            (K::ReadOnly, 409),
            (K::Reentrant, 409),
            (K::InvalidReference, 400),
            (K::InvalidArgument, 400),
            (K::Decode, 400),
            (K::Encode, 500),
            (K::Timeout, 504),
            (K::ShuttingDown, 503),
            (K::HostUnavailable, 503),
            (K::Fenced, 503),
            (K::NoQuorum, 503),
            (K::Overloaded, 503),
            (K::Cancelled, 503),
            (K::Actor, 500),
            (K::Store, 500),
            (K::Transport, 503),
            (K::Unknown, 500),
        ];
        // Every kind francis-core knows is in the table: each has a distinct code, and an
        // unrecognised code maps back to Unknown only for Unknown itself.
        let codes: std::collections::HashSet<_> = table.iter().map(|(k, _)| k.code()).collect();
        assert_eq!(codes.len(), table.len());
        for (kind, status) in table {
            assert_eq!(ErrorKind::from_code(kind.code()), kind);
            assert_eq!(status_for(kind).as_u16(), status, "{kind:?}");
        }
    }

    #[test]
    fn every_retryable_kind_is_a_503() {
        // Retryable errors tell the client to come back: 503 with Retry-After.
        for code in [
            "actor_halted",
            "no_host",
            "shutting_down",
            "host_unavailable",
            "no_quorum",
            "overloaded",
            "transport",
            "fenced",
        ] {
            let kind = ErrorKind::from_code(code);
            assert!(kind.is_retryable(), "{code}");
            assert_eq!(status_for(kind), StatusCode::SERVICE_UNAVAILABLE, "{code}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(None), 1);
        assert_eq!(retry_after_secs(Some(Duration::ZERO)), 1);
        assert_eq!(retry_after_secs(Some(Duration::from_millis(200))), 1);
        assert_eq!(retry_after_secs(Some(Duration::from_secs(2))), 2);
        assert_eq!(retry_after_secs(Some(Duration::from_millis(2001))), 3);
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        assert!(has_quorum(0, 0));
        assert!(has_quorum(1, 0));
        assert!(has_quorum(2, 0));
        assert!(!has_quorum(2, 1));
        assert!(has_quorum(3, 1));
        assert!(!has_quorum(3, 2));
    }

    #[test]
    fn only_a_serving_host_is_healthy() {
        assert_eq!(health_status(&Health::Serving), (StatusCode::OK, "serving"));
        for (h, label) in [
            (Health::Starting, "starting"),
            (Health::Draining, "draining"),
            (Health::Fenced("lease lost".into()), "fenced"),
            (Health::Stopped, "stopped"),
        ] {
            assert_eq!(health_status(&h), (StatusCode::SERVICE_UNAVAILABLE, label));
        }
    }

    #[test]
    fn empty_body_is_null_and_malformed_json_is_a_decode_error() {
        assert!(payload(Bytes::new()).unwrap().is_null());
        assert!(payload(Bytes::from_static(b" \n")).unwrap().is_null());
        assert_eq!(
            payload(Bytes::from_static(br#"{"In": 42}"#))
                .unwrap()
                .as_bytes(),
            br#"{"In": 42}"#
        );
        let err = payload(Bytes::from_static(br#"{"In": 4"#)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
    }

    #[tokio::test]
    async fn error_answers_have_the_json_shape_and_retry_after() {
        let response = ApiError::from(Error::ShuttingDown).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "shutting_down");
        assert_eq!(v["error"], "host is shutting down");

        let response = ApiError::from(Error::actor("boom")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"error": "boom", "code": "actor_error"}));

        // A typed actor's own error carries its value.
        let typed = Error::ActorTyped {
            message: "insufficient funds".into(),
            detail: Envelope::encode(&json!({"Insufficient": {"available": 3}})).unwrap(),
        };
        let response = ApiError::from(typed).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({
                "error": "insufficient funds",
                "code": "actor_error",
                "detail": {"Insufficient": {"available": 3}},
            })
        );
    }
}
