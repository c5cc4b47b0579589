//! The one error type of Francis calls, and its stable, wire-safe kinds.

use std::time::Duration;

use crate::envelope::Envelope;
use crate::reference::ActorRef;

/// `a -> b -> c`: a call chain and the actor it would enter again.
fn chain_text(chain: &[ActorRef], actor: &ActorRef) -> String {
    let mut text = String::new();
    for a in chain {
        text.push_str(&a.to_string());
        text.push_str(" -> ");
    }
    text.push_str(&actor.to_string());
    text
}

/// Result with Francis's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a Francis call can fail with.
///
/// Errors keep their [`ErrorKind`] across hosts: an error raised on a remote host arrives as
/// [`Error::Remote`] whose [`Error::kind`] is the kind raised there. Match on `kind()` when the
/// caller may be talking to another host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The actor has no stored state.
    #[error("no state stored for actor {0}")]
    StateNotFound(ActorRef),
    /// The actor has no alarm with that name.
    #[error("actor {actor} has no alarm named {name:?}")]
    AlarmNotFound {
        /// The actor.
        actor: ActorRef,
        /// The alarm name that was asked for.
        name: String,
    },
    /// The actor is not active where that was required.
    #[error("actor {0} is not active")]
    ActorNotActive(ActorRef),
    /// The actor is not hosted by the host that was asked (the caller's routing was stale).
    #[error("actor {0} is not hosted on this host")]
    ActorNotHosted(ActorRef),
    /// The actor was halted while the call waited for its turn.
    #[error("actor {0} was halted")]
    ActorHalted(ActorRef),
    /// No host in the cluster serves this actor type.
    #[error("actor type {0:?} is not served by any host")]
    ActorTypeUnsupported(String),
    /// The actor type is in the framework's reserved namespace (`francis.builtin.`).
    #[error("actor type {0:?} is reserved for the framework")]
    ActorTypeReserved(String),
    /// The method is in the framework's reserved namespace (`francis.builtin.`).
    #[error("method {0:?} is reserved for the framework")]
    MethodReserved(String),
    /// The actor does not implement this entry point.
    #[error("actor {actor} does not implement {entry} (method {method:?})")]
    MethodNotImplemented {
        /// The actor.
        actor: ActorRef,
        /// `invoke`, `peek` or `alarm`.
        entry: &'static str,
        /// The method or alarm name.
        method: String,
    },
    /// No live host can take the actor; `reason` says why (no host serves the type, all full...).
    #[error("no host can take actor {actor}: {reason}")]
    NoHost {
        /// The actor.
        actor: ActorRef,
        /// Why no host qualified.
        reason: String,
    },
    /// A state or alarm mutation was attempted inside a read-only `peek` turn.
    #[error("state is read-only inside a peek turn")]
    ReadOnly,
    /// A type, id, method or alarm name breaks the naming rules.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidReference {
        /// Which name (`actor type`, `actor id`, `method`, `alarm name`).
        what: &'static str,
        /// The offending value (shortened when long).
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// An argument (alarm property, list option, time) is malformed; the message names the field.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The field, as the user wrote it (`dueTime`, `interval`, `ttl`, `limit`...).
        field: String,
        /// What is wrong, including the bad value.
        message: String,
    },
    /// A payload is not valid JSON, or not of the expected shape.
    #[error("cannot decode payload as {expected}: {message}")]
    Decode {
        /// The Rust type that was expected.
        expected: &'static str,
        /// The decoder's explanation (position and cause).
        message: String,
    },
    /// A payload could not be encoded.
    #[error("cannot encode payload: {0}")]
    Encode(String),
    /// The operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The limit that elapsed.
        after: Duration,
    },
    /// The host is draining or stopped and takes no new calls; retry on another host or later.
    #[error("host is shutting down")]
    ShuttingDown,
    /// The host is not serving: it fenced itself after losing its lease, or is not ready yet.
    #[error("host is not serving: {0}")]
    HostUnavailable(String),
    /// A write came from an activation whose placement epoch is stale; it was refused.
    #[error("write for actor {actor} was fenced: placement epoch {epoch} is stale")]
    Fenced {
        /// The actor.
        actor: ActorRef,
        /// The stale epoch that was presented.
        epoch: u64,
    },
    /// The replicated store cannot reach a quorum; the listed peers are unreachable.
    #[error("no quorum: cannot reach {}", .unreachable.join(", "))]
    NoQuorum {
        /// Addresses of the peers that could not be reached.
        unreachable: Vec<String>,
    },
    /// Too many requests are in flight; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The call would enter an actor that is already waiting further up the same call chain
    /// (A calls B, B calls A): it would wait for a turn that cannot end until it does. Refused
    /// at once, before anything runs; retrying cannot help.
    #[error("call to {actor} would re-enter it: call chain {}", chain_text(.chain, .actor))]
    Reentrant {
        /// The actor the call would have entered.
        actor: ActorRef,
        /// The actors the call passed through, first caller first.
        chain: Vec<ActorRef>,
    },
    /// The caller gave up (or the host shut down) before the call finished.
    #[error("call cancelled")]
    Cancelled,
    /// The actor's own error, with its message.
    #[error("{0}")]
    Actor(String),
    /// A typed actor's own error: its message and the error value itself, as JSON (see
    /// [`crate::typed`]). Its kind is [`ErrorKind::Actor`], like [`Error::Actor`].
    #[error("{message}")]
    ActorTyped {
        /// The error's message (its `Display`).
        message: String,
        /// The error value.
        detail: Envelope,
    },
    /// The store failed; the source says how.
    #[error("store error: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The peer transport failed (connection lost, host unreachable, bad certificate...).
    #[error("transport error: {0}")]
    Transport(String),
    /// An error raised on another host, with the kind it had there.
    #[error("{message}")]
    Remote {
        /// The kind of the error on the host that raised it.
        kind: ErrorKind,
        /// Its message.
        message: String,
        /// When the remote host suggested retrying.
        retry_after: Option<Duration>,
        /// The value of a typed actor's own error (see [`Error::ActorTyped`]).
        detail: Option<Envelope>,
    },
}

/// The stable kind of an [`Error`], with a string code that travels between hosts and to HTTP
/// clients unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::StateNotFound`].
    StateNotFound,
    /// See [`Error::AlarmNotFound`].
    AlarmNotFound,
    /// See [`Error::ActorNotActive`].
    ActorNotActive,
    /// See [`Error::ActorNotHosted`].
    ActorNotHosted,
    /// See [`Error::ActorHalted`].
    ActorHalted,
    /// See [`Error::ActorTypeUnsupported`].
    ActorTypeUnsupported,
    /// See [`Error::ActorTypeReserved`].
    ActorTypeReserved,
    /// See [`Error::MethodReserved`].
    MethodReserved,
    /// See [`Error::MethodNotImplemented`].
    MethodNotImplemented,
    /// See [`Error::NoHost`].
    NoHost,
    /// See [`Error::ReadOnly`].
    ReadOnly,
    /// See [`Error::InvalidReference`].
    InvalidReference,
    /// See [`Error::InvalidArgument`].
    InvalidArgument,
    /// See [`Error::Decode`].
    Decode,
    /// See [`Error::Encode`].
    Encode,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::ShuttingDown`].
    ShuttingDown,
    /// See [`Error::HostUnavailable`].
    HostUnavailable,
    /// See [`Error::Fenced`].
    Fenced,
    /// See [`Error::NoQuorum`].
    NoQuorum,
    /// See [`Error::Overloaded`].
    Overloaded,
    /// See [`Error::Reentrant`].
    Reentrant,
    /// See [`Error::Cancelled`].
    Cancelled,
    /// See [`Error::Actor`].
    Actor,
    /// See [`Error::Store`].
    Store,
    /// See [`Error::Transport`].
    Transport,
    /// A code this version does not know (sent by a newer host).
    Unknown,
}

const KINDS: &[(ErrorKind, &str)] = &[
    (ErrorKind::StateNotFound, "state_not_found"),
    (ErrorKind::AlarmNotFound, "alarm_not_found"),
    (ErrorKind::ActorNotActive, "actor_not_active"),
    (ErrorKind::ActorNotHosted, "actor_not_hosted"),
    (ErrorKind::ActorHalted, "actor_halted"),
    (ErrorKind::ActorTypeUnsupported, "actor_type_unsupported"),
    (ErrorKind::ActorTypeReserved, "actor_type_reserved"),
    (ErrorKind::MethodReserved, "method_reserved"),
    (ErrorKind::MethodNotImplemented, "method_not_implemented"),
    (ErrorKind::NoHost, "no_host"),
    (ErrorKind::ReadOnly, "read_only"),
    (ErrorKind::InvalidReference, "invalid_reference"),
    (ErrorKind::InvalidArgument, "invalid_argument"),
    (ErrorKind::Decode, "decode"),
    (ErrorKind::Encode, "encode"),
    (ErrorKind::Timeout, "timeout"),
    (ErrorKind::ShuttingDown, "shutting_down"),
    (ErrorKind::HostUnavailable, "host_unavailable"),
    (ErrorKind::Fenced, "fenced"),
    (ErrorKind::NoQuorum, "no_quorum"),
    (ErrorKind::Overloaded, "overloaded"),
    (ErrorKind::Reentrant, "reentrant_call"),
    (ErrorKind::Cancelled, "cancelled"),
    (ErrorKind::Actor, "actor_error"),
    (ErrorKind::Store, "store"),
    (ErrorKind::Transport, "transport"),
    (ErrorKind::Unknown, "unknown"),
];

impl ErrorKind {
    /// The stable code, e.g. `"actor_not_hosted"`.
    pub fn code(self) -> &'static str {
        KINDS
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, c)| *c)
            .unwrap_or("unknown")
    }

    /// The kind for a code; unknown codes map to [`ErrorKind::Unknown`].
    pub fn from_code(code: &str) -> Self {
        KINDS
            .iter()
            .find(|(_, c)| *c == code)
            .map(|(k, _)| *k)
            .unwrap_or(ErrorKind::Unknown)
    }

    /// Whether the same call may succeed if retried later (possibly elsewhere).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::ActorNotHosted
                | ErrorKind::ActorHalted
                | ErrorKind::NoHost
                | ErrorKind::ShuttingDown
                | ErrorKind::HostUnavailable
                | ErrorKind::NoQuorum
                | ErrorKind::Overloaded
                | ErrorKind::Transport
                | ErrorKind::Fenced
        )
    }
}

impl Error {
    /// The stable kind of this error (the remote kind for [`Error::Remote`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::StateNotFound(_) => ErrorKind::StateNotFound,
            Error::AlarmNotFound { .. } => ErrorKind::AlarmNotFound,
            Error::ActorNotActive(_) => ErrorKind::ActorNotActive,
            Error::ActorNotHosted(_) => ErrorKind::ActorNotHosted,
            Error::ActorHalted(_) => ErrorKind::ActorHalted,
            Error::ActorTypeUnsupported(_) => ErrorKind::ActorTypeUnsupported,
            Error::ActorTypeReserved(_) => ErrorKind::ActorTypeReserved,
            Error::MethodReserved(_) => ErrorKind::MethodReserved,
            Error::MethodNotImplemented { .. } => ErrorKind::MethodNotImplemented,
            Error::NoHost { .. } => ErrorKind::NoHost,
            Error::ReadOnly => ErrorKind::ReadOnly,
            Error::InvalidReference { .. } => ErrorKind::InvalidReference,
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::Encode(_) => ErrorKind::Encode,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::ShuttingDown => ErrorKind::ShuttingDown,
            Error::HostUnavailable(_) => ErrorKind::HostUnavailable,
            Error::Fenced { .. } => ErrorKind::Fenced,
            Error::NoQuorum { .. } => ErrorKind::NoQuorum,
            Error::Overloaded(_) => ErrorKind::Overloaded,
            Error::Reentrant { .. } => ErrorKind::Reentrant,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Actor(_) | Error::ActorTyped { .. } => ErrorKind::Actor,
            Error::Store(_) => ErrorKind::Store,
            Error::Transport(_) => ErrorKind::Transport,
            Error::Remote { kind, .. } => *kind,
        }
    }

    /// Shorthand for `self.kind().code()`.
    pub fn code(&self) -> &'static str {
        self.kind().code()
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// A suggested delay before retrying, for retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Remote { retry_after, .. } => *retry_after,
            e if e.is_retryable() => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The value of a typed actor's own error, here or from another host.
    pub fn detail(&self) -> Option<&Envelope> {
        match self {
            Error::ActorTyped { detail, .. } => Some(detail),
            Error::Remote { detail, .. } => detail.as_ref(),
            _ => None,
        }
    }

    /// This error received from another host, with the error value it carried (a no-op for
    /// errors that are not [`Error::Remote`]).
    pub fn with_detail(mut self, value: Option<Envelope>) -> Self {
        if let Error::Remote { detail, .. } = &mut self {
            *detail = value;
        }
        self
    }

    /// An actor's own failure, with a message for the caller.
    pub fn actor(message: impl std::fmt::Display) -> Self {
        Error::Actor(message.to_string())
    }

    /// A malformed argument; `field` is named the way the user wrote it.
    pub fn invalid_argument(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Wraps a store failure, keeping it as the source.
    pub fn store(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Store(Box::new(source))
    }

    /// Rebuilds an error received from another host from its code, message and retry hint.
    pub fn from_wire(code: &str, message: String, retry_after: Option<Duration>) -> Self {
        Error::Remote {
            kind: ErrorKind::from_code(code),
            message,
            retry_after,
            detail: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (kind, code) in KINDS {
            assert!(seen.insert(*code), "duplicate code {code}");
            assert_eq!(kind.code(), *code);
            assert_eq!(ErrorKind::from_code(code), *kind);
        }
        assert_eq!(ErrorKind::from_code("made_up"), ErrorKind::Unknown);
    }

    #[test]
    fn remote_errors_keep_their_kind() {
        let local = Error::ActorNotHosted(ActorRef::new("t", "a").unwrap());
        let remote = Error::from_wire(local.code(), local.to_string(), local.retry_after());
        assert_eq!(remote.kind(), ErrorKind::ActorNotHosted);
        assert!(remote.is_retryable());
        assert_eq!(remote.to_string(), local.to_string());
        assert_eq!(remote.retry_after(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn retryability() {
        assert!(Error::ShuttingDown.is_retryable());
        assert!(!Error::ReadOnly.is_retryable());
        assert!(!Error::actor("boom").is_retryable());
        assert_eq!(Error::actor("boom").to_string(), "boom");
        assert_eq!(Error::ReadOnly.retry_after(), None);
    }
}
