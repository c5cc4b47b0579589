//! What a run records: every call a client made (with its monotonic start and end), and the
//! violations found. Plain data, so the checker can be fed hand-written histories in tests.

use serde::Serialize;

/// What a call asked the actor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `POST /invoke/myactor/{id}/increment` with `{"In": 1}`: a write answering the new value.
    Increment,
    /// `POST /peek/myactor/{id}/peek`: a read that changes nothing.
    Peek,
}

/// When a call was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Under load, while faults are injected.
    Load,
    /// After the cluster healed: the reads of every actor through every worker.
    Final,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `200` with `{"Out": value}`.
    Ok(i64),
    /// Any other answer, or no answer (`code` says which: the error body's code, or
    /// `unreachable`, `connection_lost`, `bad_body`, `status_NNN`).
    Failed {
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// The error body's `code`, or what went wrong on the client's side.
        code: String,
    },
    /// No answer within the client's timeout.
    Hung,
}

/// One call, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Call {
    /// Which client task made it (`usize::MAX` for the final reads).
    pub client: usize,
    /// The actor's number within the schedule (`myactor/chaos-{actor}`).
    pub actor: u32,
    /// What was asked.
    pub op: Op,
    /// Which worker the request was sent to.
    pub worker: usize,
    /// Load or final read.
    pub phase: Phase,
    /// Microseconds since the schedule started (monotonic clock), when the request was sent.
    pub start_us: u64,
    /// Microseconds since the schedule started, when the answer (or the timeout) came.
    pub end_us: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The `x-francis-host` header of the answer: the host that ran the actor.
    pub host: Option<String>,
}

impl Call {
    /// The value returned by a successful call.
    pub fn value(&self) -> Option<i64> {
        match self.outcome {
            Outcome::Ok(v) => Some(v),
            _ => None,
        }
    }

    /// How long the call took, in microseconds.
    pub fn duration_us(&self) -> u64 {
        self.end_us.saturating_sub(self.start_us)
    }
}

/// Every kind of violation the suite counts; each must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An acknowledged increment's effect is gone: the settled value is below it.
    LostWrite,
    /// Two acknowledged increments answered the same value, or the settled value counts more
    /// increments than were ever sent.
    Duplicate,
    /// An increment that started after an answer of `n` ended answered `n` or less.
    OutOfOrder,
    /// A peek that started after an answer of `n` ended answered less than `n`.
    StaleRead,
    /// A duplicate, out-of-order or stale answer whose two calls were answered by different
    /// hosts: two activations of one actor served at once.
    TwoActivations,
    /// Replicas' actor state tables differ after the cluster settled, or differ from the final
    /// reads.
    ReplicaDivergence,
    /// A call got no answer within the client timeout.
    Hang,
    /// An HTTP 500.
    Http500,
    /// Another answer that is not documented for the request: a non-retryable error on a valid
    /// call, an error without a JSON `{error, code}` body, a malformed request that got a 5xx.
    UnexpectedAnswer,
    /// A worker exited when it was not told to, or exited non-zero after SIGTERM, or logged a
    /// panic.
    WorkerCrash,
    /// A worker did not finish its graceful shutdown in time after SIGTERM.
    ShutdownStuck,
    /// The healed cluster did not become healthy, or an actor could not be read, in time.
    Unhealed,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 12] = [
        Kind::LostWrite,
        Kind::Duplicate,
        Kind::OutOfOrder,
        Kind::StaleRead,
        Kind::TwoActivations,
        Kind::ReplicaDivergence,
        Kind::Hang,
        Kind::Http500,
        Kind::UnexpectedAnswer,
        Kind::WorkerCrash,
        Kind::ShutdownStuck,
        Kind::Unhealed,
    ];

    /// The name used in the report and the JSON file.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::LostWrite => "lost_write",
            Kind::Duplicate => "duplicate",
            Kind::OutOfOrder => "out_of_order",
            Kind::StaleRead => "stale_read",
            Kind::TwoActivations => "two_activations",
            Kind::ReplicaDivergence => "replica_divergence",
            Kind::Hang => "hang",
            Kind::Http500 => "http_500",
            Kind::UnexpectedAnswer => "unexpected_answer",
            Kind::WorkerCrash => "worker_crash",
            Kind::ShutdownStuck => "shutdown_stuck",
            Kind::Unhealed => "unhealed",
        }
    }
}

/// One violation: its kind and what shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// What broke.
    pub kind: Kind,
    /// The evidence, for a person to read.
    pub detail: String,
}

impl Violation {
    /// A violation of `kind` shown by `detail`.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Violation {
            kind,
            detail: detail.into(),
        }
    }
}
