//! Trace context: which trace a call belongs to, carried with the call across actors and hosts
//! in the W3C `traceparent` form (`00-<trace id>-<parent span id>-<flags>`).
//!
//! Every call gets a trace: the one its caller gave ([`HostService::traced`], the worker's
//! `traceparent` header, or the calling turn's), or a new one. The host's spans record it:
//! `francis.invoke` and `francis.turn` as `trace_id` with their own `span_id` and the
//! `parent_span_id` of the span that made the call, `francis.serve` as `trace_id` and
//! `parent_span_id` (`francis.alarm` starts no trace and records none). So the spans of one call
//! on every host share one `trace_id`, and log lines written inside them (JSON logs show the
//! current span's fields) carry it too.
//!
//! [`HostService::traced`]: crate::HostService::traced

use std::fmt;

/// The trace a call belongs to, and the span that made it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id (16 bytes, never all zero), high and low halves.
    trace_id: [u64; 2],
    /// The span that made the call (8 bytes, never zero).
    span_id: u64,
    /// The W3C "sampled" flag, passed on unchanged.
    sampled: bool,
}

impl TraceContext {
    /// A new trace, with a new span.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: [nonzero(), rand::random()],
            span_id: nonzero(),
            sampled: true,
        }
    }

    /// A new span of the same trace (the context a span started under this one passes on).
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: nonzero(),
            ..*self
        }
    }

    /// Reads a W3C `traceparent` value; `None` when it is malformed (a caller's malformed
    /// header starts a new trace rather than failing the call).
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        let [version, trace, span, flags, rest @ ..] = parts.as_slice() else {
            return None;
        };
        // Version 00 has exactly four fields; later versions may append more.
        let known = *version == "00";
        if (known && !rest.is_empty()) || *version == "ff" || !is_hex(version, 2) {
            return None;
        }
        if !is_hex(trace, 32) || !is_hex(span, 16) || !is_hex(flags, 2) {
            return None;
        }
        let high = u64::from_str_radix(&trace[..16], 16).ok()?;
        let low = u64::from_str_radix(&trace[16..], 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if (high == 0 && low == 0) || span_id == 0 {
            return None;
        }
        Some(TraceContext {
            trace_id: [high, low],
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The W3C `traceparent` value: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            u8::from(self.sampled)
        )
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        self.trace_id().to_string()
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        self.span_id().to_string()
    }

    /// The trace id, displayed as 32 lowercase hex digits (without allocating).
    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    /// The span id, displayed as 16 lowercase hex digits (without allocating).
    pub fn span_id(&self) -> SpanId {
        SpanId(self.span_id)
    }
}

/// A trace id; `Display` writes its 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceId([u64; 2]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.0[0], self.0[1])
    }
}

/// A span id; `Display` writes its 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanId(u64);

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

fn nonzero() -> u64 {
    rand::random::<u64>().max(1)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let t = TraceContext::new_root();
        let parsed = TraceContext::from_traceparent(&t.traceparent()).unwrap();
        assert_eq!(parsed, t);
        assert_eq!(t.traceparent().len(), 55);
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::from_traceparent(w3c).unwrap();
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(parsed.traceparent(), w3c);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(
            TraceContext::from_traceparent(unsampled)
                .unwrap()
                .traceparent(),
            unsampled
        );
    }

    #[test]
    fn a_child_keeps_the_trace_with_a_new_span() {
        let t = TraceContext::new_root();
        let c = t.child();
        assert_eq!(c.trace_id_hex(), t.trace_id_hex());
        assert_ne!(c.span_id_hex(), t.span_id_hex());
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01",
        ] {
            assert!(TraceContext::from_traceparent(bad).is_none(), "{bad:?}");
        }
        // A later version may add fields; the first four still read.
        assert!(
            TraceContext::from_traceparent(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
            )
            .is_some()
        );
    }
}
