//! The summary of a run: calls, faults by kind, failures by code, latency, violations by kind
//! (every kind shown, zero included), as text and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::checker::count_by_kind;
use crate::history::{Call, Kind, Op, Outcome, Violation};
use crate::malformed::MalformedResult;
use crate::plan::FaultKind;
use crate::schedule::ScheduleResult;

/// How many examples of each violation kind the text summary shows.
pub const EXAMPLES: usize = 3;

/// One schedule in the JSON file.
#[derive(Debug, Serialize)]
pub struct ScheduleSummary {
    /// Position in the run.
    pub index: usize,
    /// The schedule's seed.
    pub seed: u64,
    /// 2 or 3.
    pub workers: usize,
    /// `-health-deadline`, seconds (`null`: default).
    pub health_deadline_s: Option<u64>,
    /// Calls made (load and final reads).
    pub calls: usize,
    /// Faults injected.
    pub faults: usize,
    /// Violations by kind (non-zero only).
    pub violations: BTreeMap<&'static str, u64>,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Where its directories were kept.
    pub kept_dir: Option<String>,
}

/// The longest call of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Longest {
    /// Its schedule.
    pub schedule: usize,
    /// Milliseconds.
    pub ms: u64,
    /// What it was.
    pub op: Op,
    /// Actor number.
    pub actor: u32,
    /// How it ended.
    pub outcome: Outcome,
}

/// The whole run, as written to JSON.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The run's seed.
    pub seed: u64,
    /// Schedules run.
    pub schedules: usize,
    /// Calls made.
    pub calls: usize,
    /// Calls answered `200`.
    pub calls_ok: usize,
    /// Faults by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Failed calls by code (allowed or not).
    pub failures: BTreeMap<String, u64>,
    /// The longest call.
    pub longest_call: Option<Longest>,
    /// Median latency of answered calls, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of answered calls, ms.
    pub p99_ms: f64,
    /// Violations by kind, every kind listed.
    pub violations: BTreeMap<&'static str, u64>,
    /// The first few examples of each kind.
    pub examples: BTreeMap<&'static str, Vec<String>>,
    /// Per schedule.
    pub per_schedule: Vec<ScheduleSummary>,
    /// The malformed-input pass, if run.
    pub malformed: Option<MalformedResult>,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

fn failure_code(call: &Call) -> Option<String> {
    match &call.outcome {
        Outcome::Ok(_) => None,
        Outcome::Hung => Some("hang".to_owned()),
        Outcome::Failed { status, code } => Some(match status {
            Some(s) => format!("{s} {code}"),
            None => code.clone(),
        }),
    }
}

/// Builds the summary of `results` (and the malformed pass).
pub fn summarize(
    seed: u64,
    results: &[ScheduleResult],
    malformed: Option<MalformedResult>,
    elapsed_s: f64,
) -> Summary {
    let mut faults: BTreeMap<&'static str, u64> =
        FaultKind::ALL.iter().map(|k| (k.as_str(), 0)).collect();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut longest: Option<Longest> = None;
    let mut all_violations: Vec<Violation> = Vec::new();
    let mut calls = 0;
    let mut calls_ok = 0;
    let mut per_schedule = Vec::new();
    for r in results {
        for f in &r.faults {
            *faults.entry(f.kind.as_str()).or_default() += 1;
        }
        for c in &r.calls {
            calls += 1;
            if let Some(code) = failure_code(c) {
                *failures.entry(code).or_default() += 1;
            } else {
                calls_ok += 1;
                latencies.push(c.duration_us());
            }
            let ms = c.duration_us() / 1000;
            if longest.as_ref().is_none_or(|l| ms > l.ms) {
                longest = Some(Longest {
                    schedule: r.plan.index,
                    ms,
                    op: c.op,
                    actor: c.actor,
                    outcome: c.outcome.clone(),
                });
            }
        }
        all_violations.extend(r.violations.iter().cloned());
        per_schedule.push(ScheduleSummary {
            index: r.plan.index,
            seed: r.plan.seed,
            workers: r.plan.workers,
            health_deadline_s: r.plan.health_deadline_s,
            calls: r.calls.len(),
            faults: r.faults.len(),
            violations: count_by_kind(&r.violations)
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.as_str(), n))
                .collect(),
            elapsed_ms: r.elapsed_ms,
            kept_dir: r.kept_dir.as_ref().map(|d| d.display().to_string()),
        });
    }
    if let Some(m) = &malformed {
        all_violations.extend(m.violations.iter().cloned());
    }
    latencies.sort_unstable();
    let mut examples: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for v in &all_violations {
        let list = examples.entry(v.kind.as_str()).or_default();
        if list.len() < EXAMPLES {
            list.push(v.detail.clone());
        }
    }
    Summary {
        seed,
        schedules: results.len(),
        calls,
        calls_ok,
        faults,
        failures,
        longest_call: longest,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        violations: count_by_kind(&all_violations)
            .into_iter()
            .map(|(k, n)| (k.as_str(), n))
            .collect(),
        examples,
        per_schedule,
        malformed,
        elapsed_s,
    }
}

impl Summary {
    /// Total violations.
    pub fn violation_count(&self) -> u64 {
        self.violations.values().sum()
    }

    /// The text summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "francis-chaos: seed {} ({:#x})", self.seed, self.seed);
        let shapes = |n: usize| self.per_schedule.iter().filter(|p| p.workers == n).count();
        let _ = writeln!(
            s,
            "  schedules     {} ({} three-worker, {} two-worker) in {:.0}s",
            self.schedules,
            shapes(3),
            shapes(2),
            self.elapsed_s
        );
        let _ = writeln!(
            s,
            "  calls         {} ({} ok, {} failed)",
            self.calls,
            self.calls_ok,
            self.calls - self.calls_ok
        );
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(s, "  faults        {}", faults.join(", "));
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(
            s,
            "  failures      {}",
            if failures.is_empty() {
                "none".to_owned()
            } else {
                failures.join(", ")
            }
        );
        if let Some(l) = &self.longest_call {
            let _ = writeln!(
                s,
                "  longest call  {} ms ({:?} of actor {} in schedule {}: {:?})",
                l.ms, l.op, l.actor, l.schedule, l.outcome
            );
        }
        let _ = writeln!(
            s,
            "  latency (ok)  p50 {:.1} ms, p99 {:.1} ms",
            self.p50_ms, self.p99_ms
        );
        if let Some(m) = &self.malformed {
            let statuses: Vec<String> = m
                .by_status
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = writeln!(
                s,
                "  malformed     {} requests ({}), {} raw TCP connections, {} peer-port datagrams",
                m.requests,
                statuses.join(", "),
                m.raw_connections,
                m.datagrams
            );
        }
        let _ = writeln!(s, "  violations    {}", self.violation_count());
        for kind in Kind::ALL {
            let n = self.violations.get(kind.as_str()).copied().unwrap_or(0);
            let _ = writeln!(s, "    {:<20} {n}", kind.as_str());
        }
        for (kind, list) in &self.examples {
            let _ = writeln!(s, "  first {kind}:");
            for e in list {
                let _ = writeln!(s, "    - {}", e.replace('\n', "\n      "));
            }
        }
        for p in self
            .per_schedule
            .iter()
            .filter(|p| !p.violations.is_empty())
        {
            let kinds: Vec<String> = p
                .violations
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "  schedule {} (seed {:#x}, {} workers, health deadline {}): {}{}",
                p.index,
                p.seed,
                p.workers,
                p.health_deadline_s
                    .map_or("default".to_owned(), |d| format!("{d}s")),
                kinds.join(", "),
                p.kept_dir
                    .as_ref()
                    .map_or(String::new(), |d| format!("; kept in {d}"))
            );
        }
        s
    }
}
