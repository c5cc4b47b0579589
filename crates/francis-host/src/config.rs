//! Host and actor-type settings, with the defaults users compare against (see `docs/host.md`).

use std::time::Duration;

/// Settings of one registered actor type.
///
/// Construct with struct-update syntax: `ActorOptions { idle_timeout: Some(secs(10)), ..Default::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorOptions {
    /// An actor idle this long since its last turn ended is deactivated. `None` disables idle
    /// deactivation (Go's negative timeout). Default 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// Bound on the actor's `deactivate`. Default 5 s.
    pub deactivation_timeout: Duration,
    /// At most this many actors of the type active on one host (`None`: unlimited).
    pub concurrency_limit: Option<u32>,
    /// Attempts of an alarm occurrence before it is dropped. Default 3.
    pub max_attempts: u32,
    /// Delay before the first retry of a failed alarm; doubles per attempt, capped, with jitter.
    /// Default 2 s.
    pub initial_retry_delay: Duration,
}

impl Default for ActorOptions {
    fn default() -> Self {
        ActorOptions {
            idle_timeout: Some(Duration::from_secs(300)),
            deactivation_timeout: Duration::from_secs(5),
            concurrency_limit: None,
            max_attempts: 3,
            initial_retry_delay: Duration::from_secs(2),
        }
    }
}

/// Host-wide timings. Every field has the documented default.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostTimings {
    /// A host is live while its last heartbeat is younger than this; a host that cannot
    /// heartbeat for three quarters of it fences itself, and its actors move once it has
    /// passed. Default 8 s: a host that dies is replaced within 8 s.
    pub health_deadline: Duration,
    /// How often the host heartbeats. Default 1 s, so a store that cannot take writes for up
    /// to about 5 s (a replicated store electing a new leader) fences nobody.
    pub heartbeat_interval: Duration,
    /// How often the alarm engine polls the store. Default 1.5 s.
    pub alarm_poll_interval: Duration,
    /// Alarms due within this window are leased ahead of time; at least `alarm_poll_interval`.
    /// Default 2.5 s.
    pub alarm_fetch_ahead: Duration,
    /// Alarms per lease while few are due; leases grow past it when a backlog is due (see
    /// the alarm engine in `docs/host.md`). Default 25.
    pub alarm_batch_size: u32,
    /// Alarm lease length (renewed while a run takes longer). Default 20 s.
    pub alarm_lease: Duration,
    /// Cap of the alarm retry backoff. Default 60 s.
    pub alarm_retry_cap: Duration,
    /// Bound on every store call. Default 15 s.
    pub store_timeout: Duration,
    /// Bound on a whole invocation (waiting for the turn plus running it). Default 60 s.
    pub invoke_timeout: Duration,
    /// On shutdown, running turns get this long to finish before they are cancelled. Default 30 s.
    pub shutdown_grace_period: Duration,
    /// How often expired state is purged. Default 60 s.
    pub state_cleanup_interval: Duration,
}

impl Default for HostTimings {
    fn default() -> Self {
        HostTimings {
            health_deadline: Duration::from_secs(8),
            heartbeat_interval: Duration::from_secs(1),
            alarm_poll_interval: Duration::from_millis(1500),
            alarm_fetch_ahead: Duration::from_millis(2500),
            alarm_batch_size: 25,
            alarm_lease: Duration::from_secs(20),
            alarm_retry_cap: Duration::from_secs(60),
            store_timeout: Duration::from_secs(15),
            invoke_timeout: Duration::from_secs(60),
            shutdown_grace_period: Duration::from_secs(30),
            state_cleanup_interval: Duration::from_secs(60),
        }
    }
}

impl HostTimings {
    /// Checks the timings hang together.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let positive = [
            ("health_deadline", self.health_deadline),
            ("heartbeat_interval", self.heartbeat_interval),
            ("alarm_poll_interval", self.alarm_poll_interval),
            ("alarm_lease", self.alarm_lease),
            ("store_timeout", self.store_timeout),
            ("invoke_timeout", self.invoke_timeout),
            ("state_cleanup_interval", self.state_cleanup_interval),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        if self.heartbeat_interval >= self.health_deadline {
            return Err(format!(
                "heartbeat_interval ({:?}) must be shorter than health_deadline ({:?})",
                self.heartbeat_interval, self.health_deadline
            ));
        }
        if self.alarm_fetch_ahead < self.alarm_poll_interval {
            return Err(format!(
                "alarm_fetch_ahead ({:?}) must be at least alarm_poll_interval ({:?}), or alarms \
                 due between two polls would fire late",
                self.alarm_fetch_ahead, self.alarm_poll_interval
            ));
        }
        if self.alarm_batch_size == 0 {
            return Err("alarm_batch_size must be at least 1".into());
        }
        Ok(())
    }
}

impl ActorOptions {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.concurrency_limit == Some(0) {
            return Err("concurrency_limit must be at least 1 (or None)".into());
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err("idle_timeout must be greater than zero (or None to disable)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timings_hang_together() {
        assert_eq!(HostTimings::default().validate(), Ok(()));
    }

    #[test]
    fn timings_that_do_not_hang_together_are_refused() {
        let bad = |edit: fn(&mut HostTimings)| {
            let mut t = HostTimings::default();
            edit(&mut t);
            t.validate().expect_err("refused")
        };
        assert!(bad(|t| t.store_timeout = Duration::ZERO).contains("store_timeout"));
        assert!(bad(|t| t.heartbeat_interval = t.health_deadline).contains("shorter"));
        assert!(bad(|t| t.alarm_batch_size = 0).contains("alarm_batch_size"));
        let msg = bad(|t| t.alarm_fetch_ahead = t.alarm_poll_interval / 2);
        assert!(msg.contains("alarm_fetch_ahead"), "{msg}");
    }
}
