//! The checker: turns a schedule's call history (and the settled values) into violations.
//!
//! Every `increment` adds exactly 1, and every actor starts at 0, so in a correct cluster the
//! acknowledged values of one actor are distinct, and real-time order is visible in them: a call
//! that *starts* after another call's answer of `n` has *ended* must see `n` (a peek answers at
//! least `n`, an increment more than `n`). A failed increment (503, timeout, connection lost)
//! may or may not have been applied, so it only widens what the settled value may be: at least
//! the largest acknowledged value, at most the number of increments sent.
//!
//! Two activations serving at once are not observed directly (a killed host logs nothing, and a
//! successor taking over after the old host fenced itself is legal). They are derived from the
//! counters: a duplicate, out-of-order or stale answer whose two calls were answered by
//! different hosts is counted as `two_activations` as well as under its own kind.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Call, Kind, Op, Outcome, Violation};

/// Codes that a call may fail with while faults are injected: documented as retryable, or
/// failures of the connection itself (the worker is down or paused), or a timeout.
pub const ALLOWED_CODES: &[&str] = &[
    "no_host",
    "shutting_down",
    "host_unavailable",
    "no_quorum",
    "overloaded",
    "actor_halted",
    "fenced",
    "transport",
    "actor_not_hosted",
    "timeout",
    "cancelled",
    "unreachable",
    "connection_lost",
];

/// What an actor's value settled to after the cluster healed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// The counter in each replica's state table (`None`: no row), once the workers stopped.
    pub replicas: Vec<Option<i64>>,
}

/// Checks one schedule's calls; `settled` maps an actor to its settled values (actors without
/// an entry are only checked on their calls).
pub fn check(calls: &[Call], settled: &BTreeMap<u32, Settled>) -> Vec<Violation> {
    let mut out = Vec::new();
    for call in calls {
        check_answer(call, &mut out);
    }
    let mut by_actor: BTreeMap<u32, Vec<&Call>> = BTreeMap::new();
    for call in calls {
        by_actor.entry(call.actor).or_default().push(call);
    }
    for (actor, calls) in &by_actor {
        check_actor(*actor, calls, settled.get(actor), &mut out);
    }
    for (actor, s) in settled {
        if !by_actor.contains_key(actor) {
            check_actor(*actor, &[], Some(s), &mut out);
        }
    }
    out
}

/// Answers that are violations on their own: hangs, 500s, undocumented failures.
fn check_answer(call: &Call, out: &mut Vec<Violation>) {
    match &call.outcome {
        Outcome::Ok(_) => {}
        Outcome::Hung => out.push(Violation::new(
            Kind::Hang,
            format!(
                "{} of actor {} through worker {} had no answer after {} ms",
                op_name(call.op),
                call.actor,
                call.worker,
                call.duration_us() / 1000
            ),
        )),
        Outcome::Failed { status, code } => {
            let what = format!(
                "{} of actor {} through worker {}: status {} code {code}",
                op_name(call.op),
                call.actor,
                call.worker,
                status.map_or("none".to_owned(), |s| s.to_string())
            );
            if *status == Some(500) {
                out.push(Violation::new(Kind::Http500, what));
            } else if !ALLOWED_CODES.contains(&code.as_str()) {
                out.push(Violation::new(Kind::UnexpectedAnswer, what));
            }
        }
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Increment => "increment",
        Op::Peek => "peek",
    }
}

fn describe(call: &Call) -> String {
    format!(
        "{} -> {} [{}..{} ms, worker {}, host {}]",
        op_name(call.op),
        call.value().map_or("?".to_owned(), |v| v.to_string()),
        call.start_us / 1000,
        call.end_us / 1000,
        call.worker,
        call.host.as_deref().unwrap_or("?")
    )
}

/// Whether two calls were answered by two different, known hosts.
fn different_hosts(a: &Call, b: &Call) -> bool {
    matches!((&a.host, &b.host), (Some(x), Some(y)) if x != y)
}

fn check_actor(actor: u32, calls: &[&Call], settled: Option<&Settled>, out: &mut Vec<Violation>) {
    let ok: Vec<&Call> = calls
        .iter()
        .copied()
        .filter(|c| c.value().is_some())
        .collect();

    // Two acknowledged increments with the same value.
    let mut by_value: HashMap<i64, &Call> = HashMap::new();
    for call in ok.iter().filter(|c| c.op == Op::Increment) {
        let value = call.value().unwrap_or_default();
        if let Some(first) = by_value.get(&value) {
            out.push(Violation::new(
                Kind::Duplicate,
                format!(
                    "actor {actor}: two increments answered {value}: {} and {}",
                    describe(first),
                    describe(call)
                ),
            ));
            if different_hosts(first, call) {
                out.push(Violation::new(
                    Kind::TwoActivations,
                    format!(
                        "actor {actor}: increments answered {value} by two hosts: {} and {}",
                        describe(first),
                        describe(call)
                    ),
                ));
            }
        } else {
            by_value.insert(value, call);
        }
    }

    // Real-time order: sweep calls by start, keeping the largest value among the answers that
    // ended strictly before.
    let mut by_end = ok.clone();
    by_end.sort_by_key(|c| c.end_us);
    let mut by_start = ok.clone();
    by_start.sort_by_key(|c| c.start_us);
    let mut ended = by_end.iter().peekable();
    let mut best: Option<&Call> = None;
    for call in by_start {
        while let Some(done) = ended.next_if(|d| d.end_us < call.start_us) {
            if best.is_none_or(|b| done.value() > b.value()) {
                best = Some(done);
            }
        }
        let Some(before) = best else { continue };
        let (seen, value) = (
            before.value().unwrap_or_default(),
            call.value().unwrap_or_default(),
        );
        let kind = match call.op {
            Op::Peek if value < seen => Kind::StaleRead,
            // An increment answering exactly what an earlier increment answered is a duplicate,
            // already counted above.
            Op::Increment if value == seen && before.op == Op::Increment => continue,
            Op::Increment if value <= seen => Kind::OutOfOrder,
            _ => continue,
        };
        let detail = format!(
            "actor {actor}: {} started after {} ended",
            describe(call),
            describe(before)
        );
        if different_hosts(before, call) {
            out.push(Violation::new(Kind::TwoActivations, detail.clone()));
        }
        out.push(Violation::new(kind, detail));
    }

    let Some(settled) = settled else { return };
    let max_ack = ok
        .iter()
        .filter(|c| c.op == Op::Increment)
        .filter_map(|c| c.value())
        .max()
        .unwrap_or(0);
    let sent = calls.iter().filter(|c| c.op == Op::Increment).count() as i64;
    for (replica, value) in settled.replicas.iter().enumerate() {
        let value = value.unwrap_or(0);
        if value < max_ack {
            out.push(Violation::new(
                Kind::LostWrite,
                format!(
                    "actor {actor}: replica {replica} settled at {value}, below the acknowledged {max_ack}"
                ),
            ));
        }
        if value > sent {
            out.push(Violation::new(
                Kind::Duplicate,
                format!(
                    "actor {actor}: replica {replica} settled at {value}, but only {sent} increments were sent"
                ),
            ));
        }
    }
    if let Some(first) = settled.replicas.first()
        && settled.replicas.iter().any(|r| r != first)
    {
        out.push(Violation::new(
            Kind::ReplicaDivergence,
            format!("actor {actor}: replicas settled at {:?}", settled.replicas),
        ));
    }
    // The last final read must agree with the replicas.
    if let Some(last) = calls
        .iter()
        .filter(|c| c.phase == crate::history::Phase::Final)
        .filter(|c| c.value().is_some())
        .max_by_key(|c| c.end_us)
        && let Some(Some(stored)) = settled.replicas.first()
        && last.value() != Some(*stored)
    {
        out.push(Violation::new(
            Kind::ReplicaDivergence,
            format!(
                "actor {actor}: the last final read was {} but the replicas hold {stored}",
                describe(last)
            ),
        ));
    }
}

/// Violations counted by kind, every kind present (zero included).
pub fn count_by_kind(violations: &[Violation]) -> BTreeMap<Kind, u64> {
    let mut counts: BTreeMap<Kind, u64> = Kind::ALL.iter().map(|k| (*k, 0)).collect();
    for v in violations {
        *counts.entry(v.kind).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Phase;

    fn call(op: Op, start_ms: u64, end_ms: u64, outcome: Outcome, host: &str) -> Call {
        Call {
            client: 0,
            actor: 1,
            op,
            worker: 0,
            phase: Phase::Load,
            start_us: start_ms * 1000,
            end_us: end_ms * 1000,
            outcome,
            host: Some(host.to_owned()),
        }
    }

    fn inc(start: u64, end: u64, value: i64) -> Call {
        call(Op::Increment, start, end, Outcome::Ok(value), "h1")
    }

    fn peek(start: u64, end: u64, value: i64) -> Call {
        call(Op::Peek, start, end, Outcome::Ok(value), "h1")
    }

    fn failed(op: Op, start: u64, end: u64, status: u16, code: &str) -> Call {
        call(
            op,
            start,
            end,
            Outcome::Failed {
                status: Some(status),
                code: code.to_owned(),
            },
            "h1",
        )
    }

    fn settled(values: &[i64]) -> BTreeMap<u32, Settled> {
        BTreeMap::from([(
            1,
            Settled {
                replicas: values.iter().map(|v| Some(*v)).collect(),
            },
        )])
    }

    fn kinds(violations: &[Violation]) -> Vec<Kind> {
        let mut k: Vec<Kind> = violations.iter().map(|v| v.kind).collect();
        k.sort();
        k
    }

    #[test]
    fn a_linearizable_history_with_concurrency_and_failures_passes() {
        let calls = vec![
            inc(0, 10, 1),
            // Concurrent with each other: any order is fine.
            inc(11, 30, 3),
            inc(12, 25, 2),
            peek(13, 14, 1),
            // A failed increment may have applied (4): the settled value may be above the acks.
            failed(Op::Increment, 31, 40, 503, "no_quorum"),
            peek(41, 42, 4),
            inc(43, 50, 5),
            call(Op::Peek, 51, 52, Outcome::Ok(5), "h2"),
        ];
        let v = check(&calls, &settled(&[5, 5, 5]));
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_lost_acknowledged_write_is_reported() {
        let calls = vec![inc(0, 10, 1), inc(11, 20, 2), inc(21, 30, 3)];
        let v = check(&calls, &settled(&[2, 2]));
        assert_eq!(kinds(&v), [Kind::LostWrite, Kind::LostWrite], "{v:?}");
        assert!(v[0].detail.contains("below the acknowledged 3"), "{v:?}");
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_reported() {
        let calls = vec![inc(0, 10, 1), inc(11, 20, 2), peek(21, 22, 1)];
        let v = check(&calls, &settled(&[2]));
        assert_eq!(kinds(&v), [Kind::StaleRead], "{v:?}");
        // A read overlapping the write may see either value.
        let calls = vec![inc(0, 10, 1), inc(11, 20, 2), peek(15, 22, 1)];
        assert!(check(&calls, &settled(&[2])).is_empty());
    }

    #[test]
    fn a_read_going_backwards_after_a_read_is_stale() {
        let calls = vec![
            inc(0, 10, 1),
            failed(Op::Increment, 11, 20, 504, "timeout"),
            peek(21, 22, 2),
            peek(23, 24, 1),
        ];
        let v = check(&calls, &settled(&[2]));
        assert_eq!(kinds(&v), [Kind::StaleRead], "{v:?}");
    }

    #[test]
    fn duplicate_increment_results_are_reported() {
        // Concurrent, same value: a duplicate but not out of order.
        let calls = vec![inc(0, 10, 1), inc(5, 12, 1)];
        let v = check(&calls, &settled(&[1]));
        assert_eq!(kinds(&v), [Kind::Duplicate], "{v:?}");
        // Two hosts answering the same value: also two activations.
        let calls = vec![
            inc(0, 10, 1),
            call(Op::Increment, 11, 12, Outcome::Ok(1), "h2"),
        ];
        let v = check(&calls, &settled(&[1]));
        assert_eq!(kinds(&v), [Kind::Duplicate, Kind::TwoActivations], "{v:?}");
    }

    #[test]
    fn an_increment_going_backwards_is_out_of_order() {
        let calls = vec![inc(0, 10, 1), inc(11, 20, 2), inc(21, 30, 2 - 1)];
        let v = check(&calls, &settled(&[3]));
        assert!(kinds(&v).contains(&Kind::OutOfOrder), "{v:?}");
        // After a peek of n, an increment must answer more than n.
        let calls = vec![
            inc(0, 10, 1),
            failed(Op::Increment, 11, 12, 503, "no_quorum"),
            peek(13, 14, 2),
            inc(15, 16, 2),
        ];
        let v = check(&calls, &settled(&[2]));
        assert_eq!(kinds(&v), [Kind::OutOfOrder], "{v:?}");
    }

    #[test]
    fn a_stale_read_from_another_host_counts_as_two_activations() {
        let calls = vec![
            inc(0, 10, 1),
            inc(11, 20, 2),
            call(Op::Peek, 21, 22, Outcome::Ok(1), "h2"),
        ];
        let v = check(&calls, &settled(&[2]));
        assert_eq!(kinds(&v), [Kind::StaleRead, Kind::TwoActivations], "{v:?}");
    }

    #[test]
    fn more_applied_than_sent_is_a_duplicate() {
        let calls = vec![
            inc(0, 10, 1),
            failed(Op::Increment, 11, 20, 503, "no_quorum"),
        ];
        assert!(check(&calls, &settled(&[2])).is_empty());
        let v = check(&calls, &settled(&[3]));
        assert_eq!(kinds(&v), [Kind::Duplicate], "{v:?}");
    }

    #[test]
    fn replicas_that_disagree_are_reported() {
        let calls = vec![inc(0, 10, 1), inc(11, 20, 2)];
        let v = check(&calls, &settled(&[2, 2, 3]));
        assert!(kinds(&v).contains(&Kind::ReplicaDivergence), "{v:?}");
        let mut s = settled(&[2]);
        s.get_mut(&1).unwrap().replicas.push(None);
        let v = check(&calls, &s);
        assert!(kinds(&v).contains(&Kind::ReplicaDivergence), "{v:?}");
        assert!(kinds(&v).contains(&Kind::LostWrite), "{v:?}");
    }

    #[test]
    fn the_last_final_read_must_match_the_replicas() {
        let mut last = peek(30, 31, 2);
        last.phase = Phase::Final;
        let calls = vec![inc(0, 10, 1), inc(11, 20, 2), last];
        assert!(check(&calls, &settled(&[2, 2])).is_empty());
        let mut last = peek(30, 31, 2);
        last.phase = Phase::Final;
        let calls = vec![inc(0, 10, 1), last];
        let v = check(&calls, &settled(&[1, 1]));
        assert_eq!(kinds(&v), [Kind::ReplicaDivergence], "{v:?}");
    }

    #[test]
    fn hangs_500s_and_undocumented_errors_are_violations_retryable_ones_are_not() {
        let calls = vec![
            call(Op::Increment, 0, 15_000, Outcome::Hung, "h1"),
            failed(Op::Increment, 0, 1, 500, "store"),
            failed(Op::Peek, 0, 1, 404, "method_not_implemented"),
            failed(Op::Peek, 0, 1, 503, "no_quorum"),
            failed(Op::Peek, 0, 1, 503, "host_unavailable"),
            call(
                Op::Peek,
                0,
                1,
                Outcome::Failed {
                    status: None,
                    code: "unreachable".into(),
                },
                "h1",
            ),
        ];
        let v = check(&calls, &BTreeMap::new());
        assert_eq!(
            kinds(&v),
            [Kind::Hang, Kind::Http500, Kind::UnexpectedAnswer],
            "{v:?}"
        );
    }

    #[test]
    fn counts_list_every_kind() {
        let counts = count_by_kind(&[Violation::new(Kind::StaleRead, "x")]);
        assert_eq!(counts.len(), Kind::ALL.len());
        assert_eq!(counts[&Kind::StaleRead], 1);
        assert_eq!(counts[&Kind::LostWrite], 0);
    }
}
