//! The host's metrics, through the `metrics` facade: whatever recorder the application
//! installs (the worker's Prometheus exporter, say) receives them; with none installed they
//! cost next to nothing.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `francis_invocations_total` | counter | `actor_type`, `method`, `outcome` (`ok` or the error code) |
//! | `francis_invocation_duration_seconds` | histogram | `actor_type`, `method` |
//! | `francis_active_actors` | gauge | `actor_type` |
//! | `francis_activations_total` | counter | `actor_type` |
//! | `francis_deactivations_total` | counter | `actor_type`, `reason` |
//! | `francis_alarms_fired_total` | counter | `actor_type`, `outcome` (`ok`, `failed`) |
//!
//! Label values are bounded: actor ids never become labels, and an actor type counts at most
//! [`MAX_METHODS`] distinct method names, over all its activations (further ones are counted
//! as `method="other"`), so callers inventing method names cannot grow the number of series
//! without bound.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Histogram, SharedString};

use crate::events::HostEvent;

/// Histogram buckets, in seconds (100 µs to 30 s), that suit the host's `*_seconds` metrics:
/// for an exporter that needs buckets (the worker's Prometheus one).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Distinct method names counted per actor type; the rest count as [`OTHER_METHOD`].
pub(crate) const MAX_METHODS: usize = 64;
/// The method label of methods past [`MAX_METHODS`].
pub(crate) const OTHER_METHOD: &str = "other";

/// The label a method is counted under, given how many distinct methods already are.
pub(crate) fn method_label(method: &str, known: bool, distinct: usize) -> &str {
    if known || distinct < MAX_METHODS {
        method
    } else {
        OTHER_METHOD
    }
}

/// The method names an actor type counts under their own label, shared by its activations.
#[derive(Debug, Clone, Default)]
pub(crate) struct MethodNames(Arc<Mutex<HashSet<String>>>);

impl MethodNames {
    /// The label `method` is counted under ([`method_label`]), recording it if it is new.
    fn label<'m>(&self, method: &'m str) -> &'m str {
        let mut names = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = names.contains(method);
        let label = method_label(method, known, names.len());
        if !known && label == method {
            names.insert(method.to_owned());
        }
        label
    }
}

/// The turn metrics of one activation, with the handles it already registered (the drain
/// owns it, so counting a turn of a method it counted before takes no lock, allocates nothing
/// and builds no label).
pub(crate) struct TurnMetrics {
    actor_type: SharedString,
    names: MethodNames,
    /// By method name as called (at most [`MAX_HANDLES`] names kept).
    methods: HashMap<String, MethodHandles>,
}

/// Handles kept per method name by one activation: a bound on its memory, past which a new
/// name is counted without being kept.
const MAX_HANDLES: usize = 2 * MAX_METHODS;

struct MethodHandles {
    label: String,
    duration: Histogram,
    calls: HashMap<&'static str, Counter>,
}

impl TurnMetrics {
    pub(crate) fn new(actor_type: &str, names: MethodNames) -> Self {
        TurnMetrics {
            actor_type: SharedString::from(actor_type.to_owned()),
            names,
            methods: HashMap::new(),
        }
    }

    fn handles(&self, method: &str) -> MethodHandles {
        let label = self.names.label(method).to_owned();
        let duration = metrics::histogram!("francis_invocation_duration_seconds",
            "actor_type" => self.actor_type.clone(), "method" => label.clone());
        MethodHandles {
            label,
            duration,
            calls: HashMap::new(),
        }
    }

    /// Counts one invocation or peek of `method` that ended with `outcome` after `took`.
    pub(crate) fn turn(&mut self, method: &str, outcome: &'static str, took: Duration) {
        if !self.methods.contains_key(method) {
            let mut fresh = self.handles(method);
            if self.methods.len() >= MAX_HANDLES {
                return fresh.count(&self.actor_type, outcome, took);
            }
            self.methods.insert(method.to_owned(), fresh);
        }
        let ty = &self.actor_type;
        if let Some(h) = self.methods.get_mut(method) {
            h.count(ty, outcome, took);
        }
    }
}

impl MethodHandles {
    fn count(&mut self, ty: &SharedString, outcome: &'static str, took: Duration) {
        self.duration.record(took.as_secs_f64());
        let label = &self.label;
        self.calls
            .entry(outcome)
            .or_insert_with(|| {
                metrics::counter!("francis_invocations_total",
                    "actor_type" => ty.clone(), "method" => label.clone(), "outcome" => outcome)
            })
            .increment(1);
    }
}

/// What a lifecycle event counts.
pub(crate) fn lifecycle(event: &HostEvent) {
    match event {
        HostEvent::Activated { actor, .. } => {
            let ty = actor.actor_type().to_owned();
            metrics::counter!("francis_activations_total", "actor_type" => ty.clone()).increment(1);
            metrics::gauge!("francis_active_actors", "actor_type" => ty).increment(1.0);
        }
        HostEvent::Deactivated { actor, reason, .. } => {
            let ty = actor.actor_type().to_owned();
            metrics::counter!("francis_deactivations_total",
                "actor_type" => ty.clone(), "reason" => reason.to_string())
            .increment(1);
            metrics::gauge!("francis_active_actors", "actor_type" => ty).decrement(1.0);
        }
        HostEvent::AlarmFired {
            actor, succeeded, ..
        } => {
            let outcome = if *succeeded { "ok" } else { "failed" };
            metrics::counter!("francis_alarms_fired_total",
                "actor_type" => actor.actor_type().to_owned(), "outcome" => outcome)
            .increment(1);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_past_the_limit_count_as_other() {
        assert_eq!(method_label("add", false, 0), "add");
        assert_eq!(method_label("add", false, MAX_METHODS - 1), "add");
        assert_eq!(method_label("add", false, MAX_METHODS), OTHER_METHOD);
        // one already counted keeps its own label
        assert_eq!(method_label("add", true, MAX_METHODS), "add");
    }
}
