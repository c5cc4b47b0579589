//! Conversions between Francis errors and results and the wire messages.

use std::time::Duration;

use bytes::Bytes;

use crate::proto::{
    InvokeOk, InvokeReply, Pong, Response, WireError, invoke_reply, request, response,
};

impl From<&francis_core::Error> for WireError {
    /// The error's stable code, its message, and its retry hint in milliseconds.
    fn from(e: &francis_core::Error) -> Self {
        WireError {
            code: e.code().to_string(),
            message: e.to_string(),
            retry_after_ms: e
                .retry_after()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            detail: e.detail().map(|d| d.clone().into_bytes()),
        }
    }
}

impl From<WireError> for francis_core::Error {
    /// An [`francis_core::Error::Remote`] whose kind is the sender's (unknown codes become
    /// [`francis_core::ErrorKind::Unknown`]).
    fn from(w: WireError) -> Self {
        // A detail that is not JSON is dropped: the error keeps its kind and message.
        let detail = w
            .detail
            .and_then(|bytes| francis_core::Envelope::from_json(bytes).ok());
        francis_core::Error::from_wire(
            &w.code,
            w.message,
            w.retry_after_ms.map(Duration::from_millis),
        )
        .with_detail(detail)
    }
}

impl WireError {
    /// A wire error with a code of [`francis_core::ErrorKind`], a message and an optional hint.
    pub fn new(
        kind: francis_core::ErrorKind,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        WireError {
            code: kind.code().to_string(),
            message: message.into(),
            retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            detail: None,
        }
    }
}

impl Response {
    /// A successful invocation reply.
    pub fn invoke_ok(payload: Option<Bytes>) -> Self {
        Self::invoke_result(Ok(payload))
    }

    /// A failed invocation reply carrying `error`'s code, message and retry hint.
    pub fn invoke_error(error: &francis_core::Error) -> Self {
        Self::invoke_result(Err(error))
    }

    /// The reply to an `Invoke` from the outcome of running it.
    pub fn invoke_result(result: Result<Option<Bytes>, &francis_core::Error>) -> Self {
        let result = match result {
            Ok(payload) => invoke_reply::Result::Ok(InvokeOk { payload }),
            Err(e) => invoke_reply::Result::Error(e.into()),
        };
        Response {
            body: Some(response::Body::Invoke(InvokeReply {
                result: Some(result),
            })),
        }
    }

    /// A request-level refusal: the request was not handled at all.
    pub fn error(error: WireError) -> Self {
        Response {
            body: Some(response::Body::Error(error)),
        }
    }

    /// The refusal for a request kind this host does not handle.
    pub fn unsupported() -> Self {
        Self::error(WireError::new(
            francis_core::ErrorKind::InvalidArgument,
            "this host does not handle that kind of request",
            None,
        ))
    }

    pub(crate) fn pong(nonce: u64, host_id: &str) -> Self {
        Response {
            body: Some(response::Body::Pong(Pong {
                nonce,
                host_id: host_id.to_string(),
            })),
        }
    }
}

impl InvokeReply {
    /// The invocation's outcome as a Francis result: the payload, or the remote error with its
    /// kind. A reply with no result is reported as a `decode` error.
    pub fn into_result(self) -> Result<Option<Bytes>, francis_core::Error> {
        match self.result {
            Some(invoke_reply::Result::Ok(ok)) => Ok(ok.payload),
            Some(invoke_reply::Result::Error(e)) => Err(e.into()),
            None => Err(francis_core::Error::Decode {
                expected: "InvokeReply",
                message: "the reply has neither a payload nor an error".into(),
            }),
        }
    }
}

impl request::Body {
    /// A short name of the request kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            request::Body::Invoke(_) => "invoke",
            request::Body::Ping(_) => "ping",
            request::Body::Raft(_) => "raft",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use francis_core::{ActorRef, Error, ErrorKind};

    #[test]
    fn errors_round_trip_with_their_kind() {
        let actor = ActorRef::new("t", "a").unwrap();
        for local in [
            Error::ActorNotHosted(actor.clone()),
            Error::ReadOnly,
            Error::Overloaded("busy".into()),
            Error::actor("boom"),
        ] {
            let wire = WireError::from(&local);
            assert_eq!(wire.code, local.code());
            let remote: Error = wire.into();
            assert_eq!(remote.kind(), local.kind());
            assert_eq!(remote.to_string(), local.to_string());
            assert_eq!(remote.is_retryable(), local.is_retryable());
            assert_eq!(remote.retry_after(), local.retry_after());
        }
        let unknown: Error = WireError {
            code: "from_the_future".into(),
            message: "m".into(),
            retry_after_ms: None,
            detail: None,
        }
        .into();
        assert_eq!(unknown.kind(), ErrorKind::Unknown);
    }

    #[test]
    fn a_typed_actor_error_keeps_its_value_and_a_bad_one_is_dropped() {
        let local = Error::ActorTyped {
            message: "closed".into(),
            detail: francis_core::Envelope::from_json(Bytes::from_static(b"\"Closed\"")).unwrap(),
        };
        let remote: Error = WireError::from(&local).into();
        assert_eq!(remote.kind(), ErrorKind::Actor);
        assert_eq!(remote.to_string(), "closed");
        assert_eq!(remote.detail(), local.detail());
        let garbled: Error = WireError {
            code: "actor_error".into(),
            message: "m".into(),
            retry_after_ms: None,
            detail: Some(Bytes::from_static(b"{not json")),
        }
        .into();
        assert_eq!(garbled.kind(), ErrorKind::Actor);
        assert!(garbled.detail().is_none());
    }

    #[test]
    fn invoke_replies() {
        let ok = Response::invoke_ok(Some(Bytes::from_static(b"1")));
        let Some(response::Body::Invoke(reply)) = ok.body else {
            panic!("not an invoke reply")
        };
        assert_eq!(reply.into_result().unwrap(), Some(Bytes::from_static(b"1")));

        let none = Response::invoke_ok(None);
        let Some(response::Body::Invoke(reply)) = none.body else {
            panic!("not an invoke reply")
        };
        assert_eq!(reply.into_result().unwrap(), None);

        let err = Response::invoke_error(&Error::ReadOnly);
        let Some(response::Body::Invoke(reply)) = err.body else {
            panic!("not an invoke reply")
        };
        assert_eq!(reply.into_result().unwrap_err().kind(), ErrorKind::ReadOnly);

        let empty = InvokeReply { result: None };
        assert_eq!(empty.into_result().unwrap_err().kind(), ErrorKind::Decode);
    }

    /// docs/errors.md lists every code with the retryability the code really has.
    #[test]
    fn the_error_table_matches_the_codes() {
        let doc = include_str!("../../../docs/errors.md");
        let mut rows = 0;
        for line in doc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, code, _meaning, retryable, _] = cells.as_slice() else {
                continue;
            };
            let Some(code) = code.strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
                continue;
            };
            if !matches!(*retryable, "yes" | "no") {
                continue;
            }
            let kind = ErrorKind::from_code(code);
            assert_eq!(kind.code(), code, "unknown code {code} in docs/errors.md");
            assert_eq!(
                kind.is_retryable(),
                *retryable == "yes",
                "retryability of {code}"
            );
            rows += 1;
        }
        assert_eq!(rows, 27, "every ErrorKind has one row");
    }
}
