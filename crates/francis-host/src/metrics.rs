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
//! [`MAX_METHODS`] distinct method names (further ones are counted as `method="other"`), so
//! callers inventing method names cannot grow the number of series without bound.

use std::collections::HashMap;
use std::time::Duration;

use metrics::{Counter, Histogram, SharedString};

use crate::events::HostEvent;

/// Distinct method names counted per activation; the rest count as [`OTHER_METHOD`].
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

/// The turn metrics of one activation, with the handles it already registered (the drain
/// owns it, so counting a turn takes no lock and builds no label).
pub(crate) struct TurnMetrics {
    actor_type: SharedString,
    calls: HashMap<(String, &'static str), Counter>,
    durations: HashMap<String, Histogram>,
}

impl TurnMetrics {
    pub(crate) fn new(actor_type: &str) -> Self {
        TurnMetrics {
            actor_type: SharedString::from(actor_type.to_owned()),
            calls: HashMap::new(),
            durations: HashMap::new(),
        }
    }

    /// Counts one invocation or peek of `method` that ended with `outcome` after `took`.
    pub(crate) fn turn(&mut self, method: &str, outcome: &'static str, took: Duration) {
        let known = self.durations.contains_key(method);
        let method = method_label(method, known, self.durations.len());
        let ty = &self.actor_type;
        self.durations
            .entry(method.to_owned())
            .or_insert_with(|| {
                metrics::histogram!("francis_invocation_duration_seconds",
                    "actor_type" => ty.clone(), "method" => method.to_owned())
            })
            .record(took.as_secs_f64());
        self.calls
            .entry((method.to_owned(), outcome))
            .or_insert_with(|| {
                metrics::counter!("francis_invocations_total",
                    "actor_type" => ty.clone(), "method" => method.to_owned(), "outcome" => outcome)
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
