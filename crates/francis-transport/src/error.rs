//! The one error type of this crate.

use std::net::SocketAddr;
use std::time::Duration;

use crate::proto::WireError;

/// Everything the transport can fail with. Each variant names what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A runtime PSK is too short to derive a CA from.
    #[error("runtime PSK is {len} bytes long; at least {min} bytes are required")]
    PskTooShort {
        /// Its length.
        len: usize,
        /// The minimum ([`crate::MIN_PSK_LEN`]).
        min: usize,
    },
    /// A host id cannot be named in a certificate.
    #[error("invalid host id {host_id:?}: {reason}")]
    InvalidHostId {
        /// The offending id (shortened when long).
        host_id: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The configuration is inconsistent; the message names the field.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// A certificate could not be derived or issued.
    #[error("certificate error: {0}")]
    Certificate(String),
    /// The TLS or QUIC configuration could not be built.
    #[error("TLS configuration error: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed (`AddrInUse`...).
        #[source]
        source: std::io::Error,
    },
    /// No connection could be opened to the peer (unreachable, refused, handshake timed out).
    #[error("cannot connect to {peer}: {reason}")]
    Connect {
        /// The peer's address.
        peer: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The TLS handshake or the peer's certificate check failed, on either side.
    #[error(
        "authentication with {peer} failed ({detail}); the hosts likely do not share a runtime \
         PSK (wrong PSK?)"
    )]
    AuthenticationFailed {
        /// The peer's address.
        peer: SocketAddr,
        /// What the TLS layer reported.
        detail: String,
    },
    /// The peer at this address presented a valid certificate for another host.
    #[error("host mismatch at {peer}: expected host {expected:?}, its certificate names {found:?}")]
    HostMismatch {
        /// The peer's address.
        peer: SocketAddr,
        /// The host id the caller meant to reach.
        expected: String,
        /// The host id in the peer's certificate.
        found: String,
    },
    /// The connection to the peer was lost while the request was in progress.
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost {
        /// The peer's address.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The peer reset or stopped the request stream.
    #[error("request stream to {peer} failed: {reason}")]
    Stream {
        /// The peer's address.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The limit that elapsed.
        after: Duration,
    },
    /// A frame declares a length above the maximum message size; its body was not read.
    #[error("frame of {declared} bytes exceeds the maximum message size of {max} bytes")]
    FrameTooLarge {
        /// The declared length.
        declared: u64,
        /// The limit.
        max: usize,
    },
    /// A frame's length prefix is not a valid varint.
    #[error("invalid frame length prefix: {0}")]
    FrameLength(&'static str),
    /// The stream ended before the frame was complete.
    #[error("truncated frame: the stream ended after {received} of {expected} bytes")]
    FrameTruncated {
        /// Bytes the frame needs (length prefix included; the prefix itself when incomplete).
        expected: usize,
        /// Bytes received.
        received: usize,
    },
    /// Bytes follow a complete frame where none may.
    #[error("{extra} unexpected bytes after the frame")]
    FrameTrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The frame body is not a valid protobuf message of the expected type.
    #[error("frame is not a valid {message}: {reason}")]
    FrameDecode {
        /// The message type expected.
        message: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
    /// The peer refused the request without handling it (overloaded, malformed, unknown kind).
    #[error("{peer} refused the request: {} ({})", .error.message, .error.code)]
    Rejected {
        /// The peer's address.
        peer: SocketAddr,
        /// The peer's error, with its stable code (boxed: it is rare, and keeps every other
        /// result small).
        error: Box<WireError>,
    },
    /// The peer answered with a response that does not fit the request.
    #[error("unexpected response from {peer}: {detail}")]
    UnexpectedResponse {
        /// The peer's address.
        peer: SocketAddr,
        /// What was wrong.
        detail: String,
    },
    /// The transport was shut down.
    #[error("transport is shut down")]
    Closed,
    /// The peer stopped answering: nothing came back from it within the idle timeout (a
    /// connection in use), or no handshake within the connect timeout. It died, froze or is cut
    /// off; sending to it again soon would only wait again.
    #[error(
        "peer {peer} stopped answering{}",
        if *.sent { "; the request may or may not have run" } else { "; the request was not sent" }
    )]
    Unresponsive {
        /// The peer's address.
        peer: SocketAddr,
        /// Whether the request had been sent (so may have run).
        sent: bool,
    },
    /// The peer closed the pooled connection itself (it shut down, or dropped this host); this
    /// request was not sent. Its actors may live elsewhere now; the next request connects anew.
    #[error("peer {peer} closed its connection (it shut down?); the request was not sent")]
    PeerShutDown {
        /// The peer's address.
        peer: SocketAddr,
    },
}

impl TransportError {
    /// Whether the same request may succeed if retried later (possibly over a new connection).
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::Connect { .. }
            | TransportError::HostMismatch { .. }
            | TransportError::ConnectionLost { .. }
            | TransportError::Stream { .. }
            | TransportError::Timeout { .. }
            | TransportError::Unresponsive { .. }
            | TransportError::PeerShutDown { .. } => true,
            TransportError::Rejected { error, .. } => {
                francis_core::ErrorKind::from_code(&error.code).is_retryable()
            }
            _ => false,
        }
    }
}

impl From<TransportError> for francis_core::Error {
    /// Keeps the peer's error kind for [`TransportError::Rejected`] (e.g. `overloaded`), maps
    /// timeouts to [`francis_core::Error::Timeout`], a closed transport to
    /// [`francis_core::Error::ShuttingDown`], bad configuration and a message too large to
    /// send to [`francis_core::Error::InvalidArgument`], and every other failure to the retryable
    /// [`francis_core::Error::Transport`].
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Rejected { error, .. } => (*error).into(),
            TransportError::Timeout { what, after } => francis_core::Error::Timeout { what, after },
            TransportError::Closed => francis_core::Error::ShuttingDown,
            TransportError::PeerShutDown { .. } => francis_core::Error::Remote {
                kind: francis_core::ErrorKind::ShuttingDown,
                message: e.to_string(),
                retry_after: None,
                detail: None,
            },
            TransportError::PskTooShort { .. } => {
                francis_core::Error::invalid_argument("runtime PSK", e.to_string())
            }
            TransportError::InvalidHostId { .. } => {
                francis_core::Error::invalid_argument("host id", e.to_string())
            }
            TransportError::InvalidConfig(_) => {
                francis_core::Error::invalid_argument("transport configuration", e.to_string())
            }
            // Too large to send: sending it again can never succeed.
            TransportError::FrameTooLarge { .. } => {
                francis_core::Error::invalid_argument("message", e.to_string())
            }
            other => francis_core::Error::Transport(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use francis_core::ErrorKind;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn conversion_keeps_kinds() {
        let overloaded = TransportError::Rejected {
            peer: peer(),
            error: Box::new(WireError {
                code: "overloaded".into(),
                message: "too many".into(),
                retry_after_ms: Some(100),
                detail: None,
            }),
        };
        assert!(overloaded.is_retryable());
        let e: francis_core::Error = overloaded.into();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
        assert_eq!(e.retry_after(), Some(Duration::from_millis(100)));

        let mismatch = TransportError::HostMismatch {
            peer: peer(),
            expected: "a".into(),
            found: "b".into(),
        };
        assert!(mismatch.is_retryable());
        let e: francis_core::Error = mismatch.into();
        assert_eq!(e.kind(), ErrorKind::Transport);
        assert!(e.is_retryable());
        assert!(e.to_string().contains("expected host \"a\""));

        let e: francis_core::Error = TransportError::Closed.into();
        assert_eq!(e.kind(), ErrorKind::ShuttingDown);
        let e: francis_core::Error = TransportError::PskTooShort { len: 3, min: 32 }.into();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e: francis_core::Error = TransportError::Timeout {
            what: "x".into(),
            after: Duration::from_secs(1),
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::Timeout);
    }

    #[test]
    fn auth_failure_mentions_the_psk() {
        let e = TransportError::AuthenticationFailed {
            peer: peer(),
            detail: "bad certificate".into(),
        };
        assert!(e.to_string().contains("wrong PSK?"));
        assert!(!e.is_retryable());
        let malformed = TransportError::FrameTooLarge {
            declared: 10,
            max: 5,
        };
        assert!(!malformed.is_retryable());
        // Too large is too large on every try: the caller must not be told to retry.
        let e: francis_core::Error = malformed.into();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(!e.is_retryable());
    }
}
