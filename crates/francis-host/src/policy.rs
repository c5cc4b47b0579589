//! The host's decisions as plain functions of their inputs: alarm retries and rescheduling,
//! idleness, and the self-fencing rule. The async layers only run them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use francis_core::{AlarmProperties, Error, ErrorKind, next_due_after};
use francis_store::AlarmOutcome;

/// The delay before retry number `attempt` (1 for the first retry) of a failed alarm:
/// `initial * 2^(attempt-1)` capped at `cap`, then "equal jitter": half fixed, half scaled by
/// `jitter` (a sample in `[0, 1)`), so retries of many alarms spread out but never come early.
pub fn retry_delay(attempt: u32, initial: Duration, cap: Duration, jitter: f64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    let base = initial.saturating_mul(factor).min(cap);
    let jitter = jitter.clamp(0.0, 1.0);
    base / 2 + (base / 2).mul_f64(jitter)
}

/// What happened when an alarm ran, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmDecision {
    /// A one-shot alarm ran, or a repeating one reached its TTL: delete it.
    Finished,
    /// A repeating alarm ran: due again later.
    Repeats,
    /// It failed: retried later.
    Retry,
    /// It failed on its last attempt: dropped.
    GiveUp,
}

/// The alarm engine leases again early (see [`lease_again_early`]) at most once per this
/// spacing, so an alarm repeating every millisecond costs at most one lease round per 20 ms
/// rather than one per firing; it fires at most once per spacing.
pub const EARLY_LEASE_SPACING: Duration = Duration::from_millis(20);

/// Whether the alarm engine should lease again as soon as an alarm is rescheduled to `due`,
/// instead of at its next poll: when `due` comes before the poll after `now` would see it. So an
/// alarm repeating faster than the poll interval keeps its own cadence.
pub fn lease_again_early(due: DateTime<Utc>, now: DateTime<Utc>, poll_interval: Duration) -> bool {
    let poll = chrono::Duration::from_std(poll_interval).unwrap_or(chrono::Duration::MAX);
    due - now < poll
}

/// Whether an alarm run that failed with `kind` is handed back for another lease (or host)
/// without counting as an attempt: the failure is the cluster's, not the actor's (the host is
/// stopping, the owner is unreachable or overloaded, no quorum). The runtime reports an error
/// returned by the actor's own alarm handler as [`ErrorKind::Actor`] whatever its kind (see
/// [`alarm_handler_error`]), so an actor failing this way is retried with backoff and dropped
/// after its attempts like any other failure, never handed back forever.
pub fn alarm_run_handed_back(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ShuttingDown
            | ErrorKind::HostUnavailable
            | ErrorKind::ActorNotHosted
            | ErrorKind::Transport
            | ErrorKind::NoHost
            | ErrorKind::NoQuorum
            | ErrorKind::Overloaded
    )
}

/// The error an alarm run reports when the actor's own alarm handler returned `e`: `e`
/// itself, unless its kind would read as the cluster's failure (see
/// [`alarm_run_handed_back`]), in which case an actor error naming it.
pub fn alarm_handler_error(e: Error) -> Error {
    if alarm_run_handed_back(e.kind()) {
        Error::actor(format!("the alarm handler failed: {e}"))
    } else {
        e
    }
}

/// How long the alarm engine waits before writing a batch of outcomes again after the
/// `attempt`th write failed with an error a retry can help: 100 ms, 400 ms, then 1.6 s; `None`
/// after the third, when the batch is left to its leases' expiry (the alarms fire again).
/// Writing an outcome twice is harmless: each is recorded only while its lease is current.
pub fn alarm_outcome_retry_delay(attempt: u32) -> Option<Duration> {
    (1..=3)
        .contains(&attempt)
        .then(|| Duration::from_millis(100) * 4u32.pow(attempt - 1))
}

/// Whether the alarm engine renews a lease that expires at `expires` when it renews at `now`:
/// once less than five sixths of a lease duration is left (it was taken or renewed more than
/// a sixth of a lease ago). The engine renews every third of a lease duration, so every held
/// lease has at least half its duration left after a renewal round and survives one failed
/// round; a burst leased just before its due time is not renewed as it comes due.
pub fn alarm_lease_needs_renewal(
    expires: DateTime<Utc>,
    now: DateTime<Utc>,
    lease: Duration,
) -> bool {
    let left_ms = i128::from((expires - now).num_milliseconds());
    left_ms * 6 < (lease.as_millis() as i128) * 5
}

/// How much of its lease an alarm must have left to start on a read-only re-check: a third
/// of a lease duration. One with less is renewed (a write) before it starts instead, so an
/// alarm never starts on a lease about to expire (whose expiry would let another host fire it
/// again while it runs).
pub fn alarm_start_margin(lease: Duration) -> Duration {
    lease / 3
}

/// The most alarms the engine holds at once (leased and waiting for their time, running, or
/// recording their outcome), as a multiple of `alarm_batch_size`: 1,000 x 25 = 25,000 by default.
pub const ALARM_IN_FLIGHT_BATCHES: u32 = 1000;

/// The most alarms running at once (their turns, and the calls and store work those start),
/// as a multiple of `alarm_batch_size` (500 by default); the others held wait their turn.
pub const ALARM_RUNNING_BATCHES: u32 = 20;

/// The most alarms one lease asks for, as a multiple of `alarm_batch_size` (1,000 by
/// default), so one store answer stays bounded however large the backlog.
pub const ALARM_LEASE_BATCHES: u32 = 40;

/// How many alarms the engine's next lease asks for. `batch` (`alarm_batch_size`) while
/// leases come back with room to spare; after a lease came back `full` (more were due than were
/// asked for), twice the last request, so a backlog is leased in a few large batches rather than
/// many small ones. Never more than `room`, what still fits under the in-flight cap.
pub fn next_lease_limit(last: u32, full: bool, batch: u32, room: u32) -> u32 {
    let wanted = if full { last.saturating_mul(2) } else { batch };
    wanted.max(batch).min(room)
}

/// Decides what to do with an alarm occurrence after it ran.
///
/// - success: a repeating alarm moves to the next point of its cadence at least half an
///   interval after `now` ([`next_due_after`]; a run that came late skips an occurrence right
///   behind it), unless that is past its TTL; a one-shot alarm is deleted.
/// - failure: with `attempts_before + 1 < max_attempts` it is retried at `now + retry_delay`;
///   otherwise it is dropped. A repeating alarm that exhausts its attempts moves on to its next
///   occurrence instead of being deleted, so one bad run does not end the schedule.
pub fn alarm_outcome(
    properties: &AlarmProperties,
    attempts_before: u32,
    succeeded: bool,
    max_attempts: u32,
    now: DateTime<Utc>,
    retry_after: Duration,
) -> (AlarmOutcome, AlarmDecision) {
    // The next point of the cadence at least half an interval after now: a late run absorbs
    // an occurrence that comes right behind it, so firings stay half an interval apart.
    let next_occurrence = || {
        properties.interval.and_then(|i| {
            let half = chrono::Duration::from_std(i.as_duration() / 2).unwrap_or_default();
            let after = now + half - chrono::Duration::milliseconds(1);
            next_due_after(properties.due_time, i, properties.ttl, after)
        })
    };
    if succeeded {
        return match next_occurrence() {
            Some(due) => (
                AlarmOutcome::Reschedule { due, attempts: 0 },
                AlarmDecision::Repeats,
            ),
            None => (AlarmOutcome::Delete, AlarmDecision::Finished),
        };
    }
    let attempts = attempts_before.saturating_add(1);
    if attempts < max_attempts {
        let due = now + chrono::Duration::from_std(retry_after).unwrap_or(chrono::Duration::MAX);
        return (
            AlarmOutcome::Reschedule { due, attempts },
            AlarmDecision::Retry,
        );
    }
    match next_occurrence() {
        Some(due) => (
            AlarmOutcome::Reschedule { due, attempts: 0 },
            AlarmDecision::GiveUp,
        ),
        None => (AlarmOutcome::Delete, AlarmDecision::GiveUp),
    }
}

/// Whether an activation is idle long enough to be deactivated: no turn running or waiting,
/// idle deactivation enabled, and `idle_for >= idle_timeout`.
pub fn should_deactivate_idle(
    pending_turns: usize,
    idle_for: Duration,
    idle_timeout: Option<Duration>,
) -> bool {
    match idle_timeout {
        Some(timeout) => pending_turns == 0 && idle_for >= timeout,
        None => false,
    }
}

/// How long after its last successful heartbeat was *sent* a host fences itself: a quarter
/// of the health deadline earlier than other hosts may consider its lease expired, so that a
/// fenced host has stopped serving well before a successor can activate its actors, even with
/// some clock skew between hosts.
pub fn fence_after(deadline: Duration) -> Duration {
    deadline - deadline / 4
}

/// Whether a host must fence itself: its last successful heartbeat was sent at least
/// [`fence_after`] ago on its own monotonic clock.
pub fn must_fence(since_last_heartbeat_sent: Duration, deadline: Duration) -> bool {
    since_last_heartbeat_sent >= fence_after(deadline)
}

/// How long the next heartbeat may take before fencing must be decided.
pub fn heartbeat_budget(since_last_heartbeat_sent: Duration, deadline: Duration) -> Duration {
    fence_after(deadline).saturating_sub(since_last_heartbeat_sent)
}

/// The first pause before retrying a failed heartbeat; it doubles per failure.
const HEARTBEAT_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between heartbeat attempts after a failure.
const HEARTBEAT_RETRY_MAX: Duration = Duration::from_secs(1);
/// The least time worth giving one heartbeat attempt while more budget remains.
const HEARTBEAT_ATTEMPT_MIN: Duration = Duration::from_millis(500);

/// How long the next heartbeat attempt may take, or `None` when the host must fence itself now.
///
/// An attempt gets half of what is left before the fence point (at least
/// [`HEARTBEAT_ATTEMPT_MIN`], at most everything left), so that one slow store call (a
/// replicated store waiting for a quorum that has lost its leader) leaves time for retries
/// against the next leader.
pub fn heartbeat_attempt_bound(
    since_last_heartbeat_sent: Duration,
    deadline: Duration,
) -> Option<Duration> {
    let budget = heartbeat_budget(since_last_heartbeat_sent, deadline);
    if budget.is_zero() {
        return None;
    }
    Some((budget / 2).max(HEARTBEAT_ATTEMPT_MIN).min(budget))
}

/// How long to wait before the next heartbeat attempt after `failures` consecutive failed ones
/// (0: the last attempt succeeded). After a success: the heartbeat interval. After a failure:
/// a short backoff (100 ms doubling to at most 1 s, never more than the interval), so one
/// failure does not cost a whole interval of the budget. Never so long that the attempt would
/// start with less than [`HEARTBEAT_ATTEMPT_MIN`] before the fence point (unless that little
/// is all there is).
pub fn heartbeat_wait(
    since_last_heartbeat_sent: Duration,
    failures: u32,
    interval: Duration,
    deadline: Duration,
) -> Duration {
    let wait = if failures == 0 {
        interval
    } else {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
        HEARTBEAT_RETRY_FIRST
            .saturating_mul(factor)
            .min(HEARTBEAT_RETRY_MAX)
            .min(interval)
    };
    let budget = heartbeat_budget(since_last_heartbeat_sent, deadline);
    wait.min(budget.saturating_sub(HEARTBEAT_ATTEMPT_MIN))
}

/// Whether a host whose last heartbeat known here was written at `last_known_heartbeat` has
/// lost its lease by now, by this host's clock: used when the store cannot be read (no quorum)
/// to end calls in flight to that host instead of waiting for the transport's timeout.
pub fn owner_lease_over(
    last_known_heartbeat: DateTime<Utc>,
    now: DateTime<Utc>,
    deadline: Duration,
) -> bool {
    let deadline = chrono::Duration::from_std(deadline).unwrap_or(chrono::Duration::MAX);
    now >= last_known_heartbeat + deadline
}

/// Whether an owner that stopped answering at `noticed` is still taken for gone at `now`:
/// until a heartbeat of it written after `noticed` is seen (`last_heartbeat`; `None` once it
/// is no longer live, when its route is dropped anyway), and for at most `deadline`, by which
/// time its lease has run out and its actors are placed elsewhere.
pub fn still_unresponsive(
    noticed: DateTime<Utc>,
    last_heartbeat: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    deadline: Duration,
) -> bool {
    let Some(heartbeat) = last_heartbeat else {
        return false;
    };
    heartbeat <= noticed && !owner_lease_over(noticed, now, deadline)
}

/// How far a call sent to the actor's owner got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// It certainly never reached the owner's handler: no connection, a peer that closed the
    /// connection first, or another host answering at the owner's address (it restarted
    /// under a new id).
    NotDelivered,
    /// It may have run: the connection or stream broke after it was sent.
    MaybeDelivered,
    /// The owner stopped answering (nothing within the transport's idle timeout, or no
    /// handshake): it may have run if it was sent, and sending to that owner again would only
    /// wait again.
    Unresponsive,
    /// The owner (or this host, for a local call) answered with the error.
    Answered,
}

/// What the caller does after a routed call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRetry {
    /// Return the error.
    GiveUp,
    /// Drop the route, resolve the owner again and resend with the same request id.
    Reresolve,
    /// Resend to the same owner with the same request id: the owner remembers recent request
    /// ids, so a call that did run answers its first result instead of running twice.
    SameOwner,
}

/// Decides whether a failed routed call is sent again; a call is sent at most twice.
///
/// - a stale route (`ActorNotHosted`, or an owner that is `ShuttingDown`): re-resolve;
/// - a transport failure before delivery (e.g. host mismatch): re-resolve, since the call
///   certainly never ran;
/// - a transport failure after the call may have been delivered: resend to the same owner,
///   which recognises the request id (`idempotent`: routed calls always are, since owners
///   remember the turns other hosts sent them) — never to another host, which would run it a
///   second time;
/// - an owner that stopped answering: give up (the error is retryable; the owner's actors
///   move once its lease runs out);
/// - anything else (the actor's own error, a timeout, overload...): give up.
pub fn route_retry(
    kind: francis_core::ErrorKind,
    delivery: Delivery,
    sent_before: u32,
    idempotent: bool,
) -> RouteRetry {
    use francis_core::ErrorKind;
    if sent_before >= 2 {
        return RouteRetry::GiveUp;
    }
    match (kind, delivery) {
        (ErrorKind::ActorNotHosted | ErrorKind::ShuttingDown, _) => RouteRetry::Reresolve,
        (ErrorKind::Transport, Delivery::NotDelivered) => RouteRetry::Reresolve,
        (ErrorKind::Transport, Delivery::MaybeDelivered) if idempotent => RouteRetry::SameOwner,
        _ => RouteRetry::GiveUp,
    }
}

/// How many request ids an owner remembers, and for how long (see [`forget_oldest_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestMemory {
    /// At most this many finished turns are remembered.
    pub max_entries: usize,
    /// At most this many bytes of remembered answers (payloads and error messages).
    pub max_bytes: usize,
    /// A finished turn is forgotten this long after it finished.
    pub ttl: Duration,
}

impl Default for RequestMemory {
    /// 10 000 turns, 64 MiB of answers, 2 minutes: a resend comes within seconds (when the
    /// connection is found lost), well inside both bounds at ordinary call rates.
    fn default() -> Self {
        RequestMemory {
            max_entries: 10_000,
            max_bytes: 64 << 20,
            ttl: Duration::from_secs(120),
        }
    }
}

/// The longest request id an owner remembers; a longer one (never sent by a Francis host)
/// runs without being remembered, so a peer cannot fill the memory with huge keys.
pub const MAX_REMEMBERED_REQUEST_ID: usize = 512;

/// Whether the owner remembers a turn's outcome under its request id, so that a resend of it
/// answers that outcome instead of running again. Peeks change nothing and simply run again;
/// an empty or overlong id identifies nothing.
pub fn remembers_request(request_id: &str, read_only: bool) -> bool {
    !read_only && !request_id.is_empty() && request_id.len() <= MAX_REMEMBERED_REQUEST_ID
}

/// Whether the oldest remembered turn (finished `oldest_age` ago) is forgotten now, with
/// `entries` turns and `bytes` bytes of answers remembered in all.
pub fn forget_oldest_request(
    oldest_age: Duration,
    entries: usize,
    bytes: usize,
    memory: &RequestMemory,
) -> bool {
    oldest_age >= memory.ttl || entries > memory.max_entries || bytes > memory.max_bytes
}

/// Refuses call data above `max` bytes (the peer transport's message limit), whether the
/// actor lives on this host or another: the answer must not depend on where the actor lives,
/// and data that could never travel to another host is bad input, not a retryable failure.
pub fn check_payload_size(len: usize, max: usize) -> Result<(), francis_core::Error> {
    if len > max {
        return Err(francis_core::Error::invalid_argument(
            "data",
            format!("{len} bytes is more than the limit of {max} bytes"),
        ));
    }
    Ok(())
}

/// Refuses a call to `target` from a turn whose call chain is `chain` (first caller first)
/// when `target` is already in it: its turn is waiting for this call, so this call's turn
/// could never start. [`Error::Reentrant`](francis_core::Error::Reentrant) names the chain.
pub fn check_reentry(
    chain: &[francis_core::ActorRef],
    target: &francis_core::ActorRef,
) -> Result<(), francis_core::Error> {
    if chain.contains(target) {
        return Err(francis_core::Error::Reentrant {
            actor: target.clone(),
            chain: chain.to_vec(),
        });
    }
    Ok(())
}

/// Checks a replicated store member's address as an operator gives it: `host:port`, with a
/// port number.
#[cfg_attr(not(feature = "replication"), allow(dead_code))]
pub fn check_member_address(address: &str) -> Result<(), francis_core::Error> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        return Ok(());
    }
    Err(francis_core::Error::InvalidArgument {
        field: "address".into(),
        message: format!("expected a member's peer address as host:port, got {address:?}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_call_back_into_the_chain_is_refused_naming_it() {
        let a = francis_core::ActorRef::new("counter", "c1").unwrap();
        let b = francis_core::ActorRef::new("forwarder", "f1").unwrap();
        let c = francis_core::ActorRef::new("counter", "c2").unwrap();
        assert!(super::check_reentry(&[], &a).is_ok());
        assert!(super::check_reentry(&[a.clone(), b.clone()], &c).is_ok());
        let err = super::check_reentry(&[a.clone(), b.clone()], &a).unwrap_err();
        assert_eq!(err.kind(), francis_core::ErrorKind::Reentrant);
        assert_eq!(err.code(), "reentrant_call");
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "call to counter/c1 would re-enter it: call chain counter/c1 -> forwarder/f1 -> counter/c1"
        );
        // An actor calling itself is re-entry too.
        assert!(super::check_reentry(std::slice::from_ref(&b), &b).is_err());
    }

    use super::*;

    #[test]
    fn a_failed_outcome_write_is_tried_three_more_times_with_growing_delays() {
        let delays: Vec<Option<Duration>> = (1..=4).map(alarm_outcome_retry_delay).collect();
        assert_eq!(
            delays,
            [
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(400)),
                Some(Duration::from_millis(1_600)),
                None
            ]
        );
        assert_eq!(alarm_outcome_retry_delay(0), None);
    }

    #[test]
    fn a_lease_is_renewed_once_less_than_five_sixths_of_it_is_left() {
        let now = DateTime::from_timestamp_millis(1_000_000).unwrap();
        let lease = Duration::from_secs(30);
        let left = |ms: i64| now + chrono::Duration::milliseconds(ms);
        // Just taken or renewed: left alone.
        assert!(!alarm_lease_needs_renewal(left(30_000), now, lease));
        assert!(!alarm_lease_needs_renewal(left(25_000), now, lease));
        // Past five sixths: renewed, and so is one already expired.
        assert!(alarm_lease_needs_renewal(left(24_999), now, lease));
        assert!(alarm_lease_needs_renewal(left(0), now, lease));
        assert!(alarm_lease_needs_renewal(left(-5_000), now, lease));
    }

    #[test]
    fn a_backlog_is_leased_in_growing_batches_under_the_in_flight_cap() {
        // Few due: the configured batch.
        assert_eq!(next_lease_limit(25, false, 25, 4_000), 25);
        assert_eq!(next_lease_limit(800, false, 25, 4_000), 25);
        // A full lease doubles the next one.
        assert_eq!(next_lease_limit(25, true, 25, 4_000), 50);
        assert_eq!(next_lease_limit(1_600, true, 25, 4_000), 3_200);
        // Never past the room left under the cap, however full.
        assert_eq!(next_lease_limit(3_200, true, 25, 1_000), 1_000);
        assert_eq!(next_lease_limit(25, false, 25, 7), 7);
        assert_eq!(next_lease_limit(u32::MAX, true, 25, 4_000), 4_000);
    }

    #[test]
    fn the_engine_leases_again_early_only_for_alarms_due_before_its_next_poll() {
        let now = Utc::now();
        let poll = Duration::from_millis(1500);
        assert!(lease_again_early(
            now + chrono::Duration::seconds(1),
            now,
            poll
        ));
        assert!(!lease_again_early(
            now + chrono::Duration::seconds(2),
            now,
            poll
        ));
        assert!(!lease_again_early(
            now + chrono::Duration::milliseconds(1500),
            now,
            poll
        ));
    }

    #[test]
    fn an_unresponsive_owner_is_gone_until_it_heartbeats_again_or_its_lease_runs_out() {
        let noticed = Utc::now();
        let deadline = Duration::from_secs(20);
        let later = |secs: i64| noticed + chrono::Duration::seconds(secs);
        // No sign of life since: gone, for as long as its lease could last.
        assert!(still_unresponsive(
            noticed,
            Some(later(-3)),
            later(1),
            deadline
        ));
        assert!(still_unresponsive(
            noticed,
            Some(noticed),
            later(19),
            deadline
        ));
        assert!(!still_unresponsive(
            noticed,
            Some(later(-3)),
            later(20),
            deadline
        ));
        // A heartbeat written after it stopped answering: it is back.
        assert!(!still_unresponsive(
            noticed,
            Some(later(1)),
            later(2),
            deadline
        ));
        // No longer live: its route is dropped anyway.
        assert!(!still_unresponsive(noticed, None, later(1), deadline));
    }

    #[test]
    fn a_call_to_an_owner_that_stopped_answering_is_not_sent_again() {
        assert_eq!(
            route_retry(
                francis_core::ErrorKind::Transport,
                Delivery::Unresponsive,
                1,
                true
            ),
            RouteRetry::GiveUp
        );
        assert_eq!(
            route_retry(
                francis_core::ErrorKind::Transport,
                Delivery::MaybeDelivered,
                1,
                true
            ),
            RouteRetry::SameOwner
        );
    }

    #[test]
    fn only_resendable_turns_with_a_plain_id_are_remembered() {
        assert!(remembers_request(
            "5f0c6f3e-8d7a-4c0e-9a57-0c1e2d3f4a5b",
            false
        ));
        // a peek changes nothing: it may run again
        assert!(!remembers_request(
            "5f0c6f3e-8d7a-4c0e-9a57-0c1e2d3f4a5b",
            true
        ));
        // no id, or one no Francis host sends, identifies nothing
        assert!(!remembers_request("", false));
        let long = "x".repeat(MAX_REMEMBERED_REQUEST_ID + 1);
        assert!(!remembers_request(&long, false));
        assert!(remembers_request(&long[1..], false));
    }

    #[test]
    fn remembered_turns_are_bounded_by_age_count_and_size() {
        let s = Duration::from_secs;
        let m = RequestMemory {
            max_entries: 3,
            max_bytes: 100,
            ttl: s(120),
        };
        assert!(!forget_oldest_request(s(119), 3, 100, &m));
        assert!(forget_oldest_request(s(120), 1, 0, &m));
        assert!(forget_oldest_request(Duration::ZERO, 4, 0, &m));
        assert!(forget_oldest_request(Duration::ZERO, 1, 101, &m));
        let d = RequestMemory::default();
        assert_eq!(
            (d.max_entries, d.max_bytes, d.ttl),
            (10_000, 64 << 20, s(120))
        );
    }

    #[test]
    fn payloads_above_the_message_limit_are_bad_input() {
        assert!(check_payload_size(10, 10).is_ok());
        let err = check_payload_size(11, 10).unwrap_err();
        assert_eq!(err.kind(), francis_core::ErrorKind::InvalidArgument);
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("limit of 10 bytes"), "{err}");
    }
    use chrono::TimeZone;
    use francis_core::Interval;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    #[test]
    fn retry_delay_grows_caps_and_jitters() {
        let s = Duration::from_secs;
        assert_eq!(retry_delay(1, s(2), s(60), 0.0), s(1));
        assert_eq!(
            retry_delay(1, s(2), s(60), 0.999_999),
            Duration::from_nanos(1_999_999_000)
        );
        assert_eq!(retry_delay(2, s(2), s(60), 0.0), s(2));
        assert_eq!(retry_delay(3, s(2), s(60), 0.5), s(6));
        assert_eq!(retry_delay(10, s(2), s(60), 0.0), s(30));
        assert_eq!(retry_delay(100, s(2), s(60), 1.0), s(60));
        for attempt in 1..40 {
            let lo = retry_delay(attempt, s(2), s(60), 0.0);
            let hi = retry_delay(attempt, s(2), s(60), 1.0);
            assert!(lo <= hi && hi <= s(60));
            assert!(retry_delay(attempt + 1, s(2), s(60), 0.0) >= lo);
        }
    }

    #[test]
    fn one_shot_alarm() {
        let p = AlarmProperties::once(t(1000));
        assert_eq!(
            alarm_outcome(&p, 0, true, 3, t(1000), Duration::ZERO),
            (AlarmOutcome::Delete, AlarmDecision::Finished)
        );
        assert_eq!(
            alarm_outcome(&p, 0, false, 3, t(1000), Duration::from_secs(2)),
            (
                AlarmOutcome::Reschedule {
                    due: t(3000),
                    attempts: 1
                },
                AlarmDecision::Retry
            )
        );
        assert_eq!(
            alarm_outcome(&p, 2, false, 3, t(9000), Duration::from_secs(2)),
            (AlarmOutcome::Delete, AlarmDecision::GiveUp)
        );
    }

    #[test]
    fn repeating_alarm_until_ttl() {
        let mut p = AlarmProperties::once(t(0));
        p.interval = Some(Interval::new(Duration::from_secs(10)).unwrap());
        p.ttl = Some(t(20_000));
        assert_eq!(
            alarm_outcome(&p, 0, true, 3, t(5), Duration::ZERO).0,
            AlarmOutcome::Reschedule {
                due: t(10_000),
                attempts: 0
            }
        );
        p.due_time = t(20_000);
        assert_eq!(
            alarm_outcome(&p, 0, true, 3, t(20_001), Duration::ZERO),
            (AlarmOutcome::Delete, AlarmDecision::Finished)
        );
        // exhausting attempts moves a repeating alarm to its next occurrence
        p.due_time = t(0);
        assert_eq!(
            alarm_outcome(&p, 2, false, 3, t(4_000), Duration::ZERO),
            (
                AlarmOutcome::Reschedule {
                    due: t(10_000),
                    attempts: 0
                },
                AlarmDecision::GiveUp
            )
        );
        // A run that came late skips the occurrence less than half an interval behind it, so
        // two firings are never closer than that.
        p.ttl = None;
        assert_eq!(
            alarm_outcome(&p, 0, true, 3, t(9_996), Duration::ZERO).0,
            AlarmOutcome::Reschedule {
                due: t(20_000),
                attempts: 0
            }
        );
        assert_eq!(
            alarm_outcome(&p, 0, true, 3, t(5_000), Duration::ZERO).0,
            AlarmOutcome::Reschedule {
                due: t(10_000),
                attempts: 0
            }
        );
    }

    #[test]
    fn idleness() {
        let s = Duration::from_secs;
        assert!(should_deactivate_idle(0, s(10), Some(s(10))));
        assert!(!should_deactivate_idle(0, s(9), Some(s(10))));
        assert!(!should_deactivate_idle(1, s(100), Some(s(10))));
        assert!(!should_deactivate_idle(0, s(100_000), None));
    }

    #[test]
    fn fencing_rule() {
        let s = Duration::from_secs;
        assert_eq!(fence_after(s(20)), s(15));
        assert!(!must_fence(Duration::from_millis(14_999), s(20)));
        assert!(must_fence(s(15), s(20)));
        assert_eq!(heartbeat_budget(s(5), s(20)), s(10));
        assert_eq!(heartbeat_budget(s(25), s(20)), Duration::ZERO);
        // always strictly before the lease can expire elsewhere
        for ms in [4u64, 100, 2_000, 20_000, 600_000] {
            assert!(fence_after(Duration::from_millis(ms)) < Duration::from_millis(ms));
        }
    }

    #[test]
    fn an_owner_unheard_of_for_a_deadline_has_lost_its_lease() {
        let s = Duration::from_secs;
        assert!(!owner_lease_over(t(1_000), t(20_999), s(20)));
        assert!(owner_lease_over(t(1_000), t(21_000), s(20)));
        assert!(owner_lease_over(t(1_000), t(90_000), s(20)));
    }

    #[test]
    fn routed_calls_are_resent_only_when_safe() {
        use Delivery::*;
        use francis_core::ErrorKind as K;
        assert_eq!(
            route_retry(K::ActorNotHosted, Answered, 1, true),
            RouteRetry::Reresolve
        );
        assert_eq!(
            route_retry(K::ShuttingDown, Answered, 1, false),
            RouteRetry::Reresolve
        );
        assert_eq!(
            route_retry(K::Transport, NotDelivered, 1, false),
            RouteRetry::Reresolve
        );
        assert_eq!(
            route_retry(K::Transport, MaybeDelivered, 1, true),
            RouteRetry::SameOwner
        );
        assert_eq!(
            route_retry(K::Transport, MaybeDelivered, 1, false),
            RouteRetry::GiveUp
        );
        // a transport error the owner itself reported is not a delivery failure
        assert_eq!(
            route_retry(K::Transport, Answered, 1, true),
            RouteRetry::GiveUp
        );
        for kind in [
            K::Actor,
            K::Timeout,
            K::Overloaded,
            K::HostUnavailable,
            K::Fenced,
        ] {
            for delivery in [NotDelivered, MaybeDelivered, Answered] {
                assert_eq!(route_retry(kind, delivery, 1, true), RouteRetry::GiveUp);
            }
        }
        // sent at most twice
        assert_eq!(
            route_retry(K::ActorNotHosted, Answered, 2, true),
            RouteRetry::GiveUp
        );
        assert_eq!(
            route_retry(K::Transport, NotDelivered, 2, true),
            RouteRetry::GiveUp
        );
    }

    #[test]
    fn a_heartbeat_attempt_gets_half_the_budget_left() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // 20 s deadline: fence point at 15 s
        assert_eq!(heartbeat_attempt_bound(s(5), s(20)), Some(s(5)));
        assert_eq!(heartbeat_attempt_bound(s(14), s(20)), Some(ms(500)));
        assert_eq!(heartbeat_attempt_bound(ms(14_800), s(20)), Some(ms(200)));
        assert_eq!(heartbeat_attempt_bound(s(15), s(20)), None);
        assert_eq!(heartbeat_attempt_bound(s(40), s(20)), None);
        // an attempt never runs past the fence point
        for since in (0..15_000).step_by(250) {
            let bound = heartbeat_attempt_bound(ms(since), s(20)).unwrap();
            assert!(ms(since) + bound <= s(15), "{since}");
        }
    }

    #[test]
    fn a_failed_heartbeat_is_retried_soon() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // after a success: one interval
        assert_eq!(heartbeat_wait(ms(3), 0, s(5), s(20)), s(5));
        // after failures: 100 ms doubling, capped at 1 s and at the interval
        assert_eq!(heartbeat_wait(s(10), 1, s(5), s(20)), ms(100));
        assert_eq!(heartbeat_wait(s(10), 2, s(5), s(20)), ms(200));
        assert_eq!(heartbeat_wait(s(10), 5, s(5), s(20)), s(1));
        assert_eq!(heartbeat_wait(s(10), 500, s(5), s(20)), s(1));
        assert_eq!(heartbeat_wait(ms(100), 9, ms(300), s(2)), ms(300));
        // never so late that the attempt has less than 500 ms before the fence point
        assert_eq!(heartbeat_wait(s(12), 0, s(5), s(20)), ms(2_500));
        assert_eq!(heartbeat_wait(ms(14_800), 3, s(5), s(20)), Duration::ZERO);
        // an interval longer than the fence point still heartbeats before it
        assert_eq!(heartbeat_wait(Duration::ZERO, 0, s(19), s(20)), ms(14_500));
    }

    #[test]
    fn a_seven_second_outage_does_not_fence_with_a_twenty_second_deadline() {
        // Replays the heartbeat schedule: attempts started inside the outage hang until their
        // bound; the first attempt after it succeeds at once.
        let ms = Duration::from_millis;
        for (deadline, interval, outage) in [
            (20_000u64, 5_000u64, (5_500u64, 12_500u64)),
            (6_000, 1_500, (1_600, 3_500)),
        ] {
            let (deadline, interval) = (ms(deadline), ms(interval));
            let (mut now, mut last_ok, mut failures) = (Duration::ZERO, Duration::ZERO, 0u32);
            while now < ms(60_000) {
                now += heartbeat_wait(now - last_ok, failures, interval, deadline);
                let bound = heartbeat_attempt_bound(now - last_ok, deadline)
                    .unwrap_or_else(|| panic!("fenced at {now:?} ({deadline:?})"));
                if now >= ms(outage.0) && now < ms(outage.1) {
                    now += bound;
                    failures += 1;
                } else {
                    last_ok = now;
                    failures = 0;
                }
            }
        }
    }

    #[test]
    fn member_addresses_are_host_and_port() {
        for ok in ["127.0.0.1:7571", "worker-2.internal:7572", "[::1]:9000"] {
            assert!(check_member_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1",
            ":7571",
            "host:",
            "host:0",
            "host:99999",
            "host:port",
        ] {
            let e = check_member_address(bad).unwrap_err();
            assert_eq!(e.kind(), francis_core::ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
