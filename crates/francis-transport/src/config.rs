//! What a transport is configured with.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::TransportError;

/// Everything [`crate::Transport::start`] needs.
///
/// Build it with [`TransportConfig::new`] and adjust the public fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct TransportConfig {
    /// This host's id, named in its certificate; peers must ask for exactly this id.
    /// See [`validate_host_id`] for the allowed characters.
    pub host_id: String,
    /// The UDP address to listen on (port 0 picks a free port; see
    /// [`crate::Transport::local_addr`]). Peers reach the host at its advertised address, which
    /// is usually this one.
    pub bind_addr: SocketAddr,
    /// Runtime PSKs, each at least [`crate::MIN_PSK_LEN`] bytes. The first one's CA signs this
    /// host's certificate; peers chained to the CA of any of them are trusted.
    pub psks: Vec<Vec<u8>>,
    /// Size, concurrency and time limits.
    pub limits: Limits,
    /// How long each leaf certificate is valid; it is re-issued after two thirds of it.
    /// Default 24 hours; at least one second.
    pub leaf_lifetime: Duration,
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the PSKs.
        f.debug_struct("TransportConfig")
            .field("host_id", &self.host_id)
            .field("bind_addr", &self.bind_addr)
            .field("psks", &format_args!("[{} hidden]", self.psks.len()))
            .field("limits", &self.limits)
            .field("leaf_lifetime", &self.leaf_lifetime)
            .finish()
    }
}

impl TransportConfig {
    /// A configuration with default [`Limits`] and a 24-hour leaf lifetime.
    pub fn new(host_id: impl Into<String>, bind_addr: SocketAddr, psks: Vec<Vec<u8>>) -> Self {
        Self {
            host_id: host_id.into(),
            bind_addr,
            psks,
            limits: Limits::default(),
            leaf_lifetime: Duration::from_secs(24 * 3600),
        }
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Checks everything but the PSKs' derivation; [`crate::Transport::start`] calls it.
    pub fn validate(&self) -> Result<(), TransportError> {
        validate_host_id(&self.host_id)?;
        if self.psks.is_empty() {
            return Err(TransportError::InvalidConfig(
                "no runtime PSK configured; at least one is required".into(),
            ));
        }
        if self.leaf_lifetime < Duration::from_secs(1) {
            return Err(TransportError::InvalidConfig(format!(
                "leaf_lifetime {:?} is shorter than one second",
                self.leaf_lifetime
            )));
        }
        self.limits.validate()
    }
}

/// The default [`Limits::max_message_size`]: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Size, concurrency and time limits of a transport. Defaults are in `docs/transport.md`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest payload a request or response carries, in bytes (default 16 MiB): an actor's
    /// call data, a state document, a replicated store command. A frame may exceed it by
    /// [`Limits::frame_headroom`] for its envelope (ids, names, metadata), so a payload at
    /// the limit is accepted whichever host it travels to. A frame declaring more than
    /// [`Limits::max_frame_size`] is refused before its body is read.
    pub max_message_size: usize,
    /// Bytes a frame may carry beyond [`Limits::max_message_size`] for its envelope
    /// (default 64 KiB).
    pub frame_headroom: usize,
    /// Requests one peer connection may have in progress on this host (default 100). The excess
    /// is answered at once with a retryable `overloaded` error, never queued.
    pub max_in_flight_per_connection: u32,
    /// Time allowed to receive a whole request frame once its stream opened, and to deliver
    /// the response (default 10 s). A stream that never finishes its frame is answered
    /// `timeout`.
    pub read_timeout: Duration,
    /// Time allowed for a whole call made with [`crate::Transport::request`], connecting
    /// included (default 30 s).
    pub request_timeout: Duration,
    /// Time allowed to open a connection, handshake included (default 5 s).
    pub connect_timeout: Duration,
    /// A connection that hears nothing from its peer for this long is closed, failing every
    /// request in flight on it (default 4 s): a peer that died without closing its
    /// connections (kill -9, power loss, a partition) is noticed within this time.
    /// Keep-alives ([`Limits::keep_alive_interval`]) keep healthy pooled connections open.
    pub idle_timeout: Duration,
    /// How often an idle connection is pinged (default 1 s).
    pub keep_alive_interval: Duration,
    /// How long [`crate::Transport::shutdown`] lets in-flight requests finish (default 10 s).
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            frame_headroom: 64 * 1024,
            max_in_flight_per_connection: 100,
            read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(4),
            keep_alive_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The largest frame sent or accepted: [`Limits::max_message_size`] plus
    /// [`Limits::frame_headroom`].
    pub fn max_frame_size(&self) -> usize {
        self.max_message_size.saturating_add(self.frame_headroom)
    }

    fn validate(&self) -> Result<(), TransportError> {
        let bad = |what: &str| Err(TransportError::InvalidConfig(what.to_string()));
        if self.max_message_size == 0 || self.max_frame_size() > u32::MAX as usize {
            return bad(
                "max_message_size must be at least 1 byte, and with frame_headroom at most 4 GiB",
            );
        }
        if self.max_in_flight_per_connection == 0 {
            return bad("max_in_flight_per_connection must be at least 1");
        }
        for (name, d) in [
            ("read_timeout", self.read_timeout),
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("keep_alive_interval", self.keep_alive_interval),
        ] {
            if d.is_zero() {
                return Err(TransportError::InvalidConfig(format!(
                    "{name} must not be zero"
                )));
            }
        }
        if self.keep_alive_interval >= self.idle_timeout {
            return bad("keep_alive_interval must be shorter than idle_timeout");
        }
        Ok(())
    }
}

/// Longest host id accepted, in bytes.
const MAX_HOST_ID_LEN: usize = 128;

/// Checks a host id: 1 to 128 URI-unreserved characters (`A-Z a-z 0-9 - . _ ~`), so it can be
/// named verbatim in a certificate's URI SAN.
pub fn validate_host_id(host_id: &str) -> Result<(), TransportError> {
    let reason = if host_id.is_empty() {
        Some("it is empty")
    } else if host_id.len() > MAX_HOST_ID_LEN {
        Some("it is longer than 128 bytes")
    } else if !host_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        Some("only A-Z, a-z, 0-9, '-', '.', '_' and '~' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TransportError::InvalidHostId {
            host_id: host_id.chars().take(64).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids() {
        assert!(validate_host_id("host-1.a_b~c").is_ok());
        assert!(validate_host_id("550e8400-e29b-41d4-a716-446655440000").is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(129)] {
            let err = validate_host_id(bad).unwrap_err();
            assert!(matches!(err, TransportError::InvalidHostId { .. }), "{bad}");
        }
    }

    #[test]
    fn defaults_follow_the_design() {
        let l = Limits::default();
        assert_eq!(l.max_message_size, 16 << 20);
        assert_eq!(l.max_in_flight_per_connection, 100);
        assert!(l.validate().is_ok());
    }

    #[test]
    fn bad_configs_are_refused() {
        let addr = "127.0.0.1:0".parse().unwrap();
        let ok = TransportConfig::new("h", addr, vec![vec![0; 32]]);
        assert!(ok.validate().is_ok());
        assert!(format!("{ok:?}").contains("hidden"));
        let mut c = ok.clone();
        c.psks.clear();
        assert!(c.validate().unwrap_err().to_string().contains("PSK"));
        let mut c = ok.clone();
        c.limits.max_in_flight_per_connection = 0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.limits.keep_alive_interval = c.limits.idle_timeout;
        assert!(c.validate().is_err());
        let mut c = ok;
        c.leaf_lifetime = Duration::from_millis(10);
        assert!(c.validate().is_err());
    }
}
