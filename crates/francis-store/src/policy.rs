//! The store's decisions as plain functions of their inputs (no I/O, no clock).
//!
//! Every provider implementation applies these rules; the SQLite provider evaluates them over
//! rows it read inside its write transaction.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::op::Op;
use crate::provider::{ClaimRefusal, HostRegistration, StoreResult};

/// How many of the earliest leasable alarms a lease considers, per alarm it may grant: the
/// lease prefers actors placed on the leasing host among these, and never looks further.
/// Bounding the candidates keeps a lease's cost proportional to its limit, not to the whole
/// backlog of due alarms (a burst of 20,000 would otherwise be sorted on every lease).
pub const LEASE_CANDIDATES_PER_ALARM: u32 = 2;

/// The candidates a lease of up to `limit` alarms considers (see
/// [`LEASE_CANDIDATES_PER_ALARM`]).
pub fn lease_candidates(limit: u32) -> u32 {
    limit.saturating_mul(LEASE_CANDIDATES_PER_ALARM)
}

/// The input checks every backend applies before running an operation, so every backend
/// refuses the same bad input with the same [`StoreError::InvalidArgument`] (and changes
/// nothing). A backend may refuse more (what its own storage cannot represent).
pub fn check_op(op: &Op) -> StoreResult<()> {
    match op {
        Op::RegisterHost { registration, .. } => validate_registration(registration),
        Op::ListStates { limit: 0, .. } => Err(StoreError::InvalidArgument(
            "a state listing needs a limit of at least 1".into(),
        )),
        Op::LeaseAlarms { request, now } => {
            let expires = add_millis(millis(*now), request.lease_duration);
            match DateTime::from_timestamp_millis(expires) {
                Some(_) => Ok(()),
                None => Err(StoreError::InvalidArgument(
                    "lease duration is too long".into(),
                )),
            }
        }
        Op::CompleteAlarms { completions } => {
            let mut seen = HashSet::with_capacity(completions.len());
            match completions.iter().find(|c| !seen.insert(&c.lease)) {
                Some(c) => Err(StoreError::InvalidArgument(format!(
                    "alarm {} of {} is listed twice in one completion",
                    c.lease.name, c.lease.actor
                ))),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// A registration every backend accepts: a host id, an address, and actor types that are
/// neither empty nor listed twice.
pub fn validate_registration(reg: &HostRegistration) -> StoreResult<()> {
    if reg.host_id.is_empty() {
        return Err(StoreError::InvalidArgument("host id is empty".into()));
    }
    if reg.address.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "host {} has an empty address",
            reg.host_id
        )));
    }
    let mut seen = HashSet::new();
    for t in &reg.actor_types {
        if t.actor_type.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "host {} lists an empty actor type",
                reg.host_id
            )));
        }
        if !seen.insert(t.actor_type.as_str()) {
            return Err(StoreError::InvalidArgument(format!(
                "host {} lists actor type {} twice",
                reg.host_id, t.actor_type
            )));
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch (sub-millisecond parts are dropped, rounding down).
pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A duration in whole milliseconds (rounded down), saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `now + d` in milliseconds, saturating.
pub fn add_millis(now_ms: i64, d: Duration) -> i64 {
    now_ms.saturating_add(duration_millis(d))
}

/// Whether a host whose last heartbeat was at `last_heartbeat_ms` is live at `now_ms`:
/// `now - last_heartbeat < ttl`. A heartbeat stamped after `now` (clock skew between hosts)
/// counts as live.
pub fn is_live(last_heartbeat_ms: i64, now_ms: i64, ttl_ms: i64) -> bool {
    i128::from(now_ms) - i128::from(last_heartbeat_ms) < i128::from(ttl_ms)
}

/// The heartbeat cutoff for SQL: a host is live exactly when `last_heartbeat_ms > cutoff`
/// (the same rule as [`is_live`], for values in range).
pub fn live_cutoff(now_ms: i64, ttl_ms: i64) -> i64 {
    now_ms.saturating_sub(ttl_ms)
}

/// What the store knows about a claim's candidate host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidateView {
    /// Registered and live.
    pub live: bool,
    /// `None`: the type is not served; `Some(None)`: served without limit;
    /// `Some(Some(n))`: served with capacity `n`.
    pub capacity: Option<Option<u32>>,
    /// Actors of the type already placed on the candidate.
    pub placed: u64,
}

/// Whether an actor may be placed on a candidate host, and if not, why.
/// Liveness is checked first, then the type, then capacity.
pub fn check_candidate(view: CandidateView) -> Result<(), ClaimRefusal> {
    if !view.live {
        return Err(ClaimRefusal::CandidateNotLive);
    }
    match view.capacity {
        None => Err(ClaimRefusal::TypeNotServed),
        Some(Some(max)) if view.placed >= u64::from(max) => Err(ClaimRefusal::AtCapacity),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_window_is_half_open() {
        // now - last < ttl
        assert!(is_live(1_000, 1_000, 10));
        assert!(is_live(1_000, 1_009, 10));
        assert!(!is_live(1_000, 1_010, 10));
        assert!(!is_live(1_000, 5_000, 10));
        // a heartbeat from the future (skewed clock) is live
        assert!(is_live(2_000, 1_000, 10));
        // zero ttl: never live
        assert!(!is_live(1_000, 1_000, 0));
    }

    #[test]
    fn cutoff_matches_is_live() {
        for last in [0_i64, 990, 999, 1_000, 1_001, 2_000] {
            for ttl in [0_i64, 1, 10, 1_000] {
                let now = 1_000;
                assert_eq!(
                    last > live_cutoff(now, ttl),
                    is_live(last, now, ttl),
                    "last={last} ttl={ttl}"
                );
            }
        }
        // extremes do not overflow
        assert_eq!(live_cutoff(i64::MIN + 5, 10), i64::MIN);
        assert!(!is_live(i64::MIN, i64::MAX, 10));
    }

    #[test]
    fn durations_round_down_and_saturate() {
        assert_eq!(duration_millis(Duration::from_micros(1_999)), 1);
        assert_eq!(duration_millis(Duration::MAX), i64::MAX);
        assert_eq!(add_millis(i64::MAX - 1, Duration::from_secs(1)), i64::MAX);
        assert_eq!(add_millis(5, Duration::from_millis(7)), 12);
    }

    #[test]
    fn millis_round_down() {
        let t = DateTime::from_timestamp(1, 999_999_999).unwrap();
        assert_eq!(millis(t), 1_999);
        let before_epoch = DateTime::from_timestamp(-1, 500_000_000).unwrap();
        assert_eq!(millis(before_epoch), -500);
    }

    #[test]
    fn candidate_checks_in_order() {
        let ok = CandidateView {
            live: true,
            capacity: Some(Some(2)),
            placed: 1,
        };
        assert_eq!(check_candidate(ok), Ok(()));
        assert_eq!(
            check_candidate(CandidateView { live: false, ..ok }),
            Err(ClaimRefusal::CandidateNotLive)
        );
        // not live wins over every other reason
        assert_eq!(
            check_candidate(CandidateView {
                live: false,
                capacity: None,
                placed: 9
            }),
            Err(ClaimRefusal::CandidateNotLive)
        );
        assert_eq!(
            check_candidate(CandidateView {
                capacity: None,
                ..ok
            }),
            Err(ClaimRefusal::TypeNotServed)
        );
        assert_eq!(
            check_candidate(CandidateView { placed: 2, ..ok }),
            Err(ClaimRefusal::AtCapacity)
        );
        assert_eq!(
            check_candidate(CandidateView {
                capacity: Some(Some(0)),
                placed: 0,
                ..ok
            }),
            Err(ClaimRefusal::AtCapacity)
        );
        assert_eq!(
            check_candidate(CandidateView {
                capacity: Some(None),
                placed: u64::MAX,
                ..ok
            }),
            Ok(())
        );
    }
}
