//! Schedules as data: what a seed turns into (cluster shape, load, the faults and when), made
//! before anything runs, so the same seed always plans the same schedule.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A fault injected into one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL, then start it again on the same ports and data after `hold`.
    Kill,
    /// SIGSTOP, then SIGCONT after `hold`.
    Pause,
    /// SIGTERM, wait for the graceful shutdown, then start it again after `hold`.
    Restart,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 3] = [FaultKind::Kill, FaultKind::Pause, FaultKind::Restart];

    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill9",
            FaultKind::Pause => "pause",
            FaultKind::Restart => "sigterm_restart",
        }
    }
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// When it starts, from the start of the load.
    pub at_ms: u64,
    /// Which worker.
    pub target: usize,
    /// What is done to it.
    pub kind: FaultKind,
    /// How long the worker stays killed, paused or stopped.
    pub hold_ms: u64,
}

/// One schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Position in the run (0-based).
    pub index: usize,
    /// The schedule's own seed, derived from the run's seed and `index`.
    pub seed: u64,
    /// 2 or 3 workers, all of them in `-peers`.
    pub workers: usize,
    /// `-health-deadline` in seconds; `None`: the worker's default.
    pub health_deadline_s: Option<u64>,
    /// How many actors the clients spread over.
    pub actors: u32,
    /// How many concurrent client tasks.
    pub clients: usize,
    /// Percentage of calls that are peeks.
    pub peek_percent: u32,
    /// How long the load runs.
    pub load_ms: u64,
    /// The faults, in order, never overlapping.
    pub faults: Vec<Fault>,
}

/// The seed of schedule `index` of a run seeded with `run_seed` (splitmix64 of the pair), so a
/// schedule can be run on its own and plan exactly as it did within the run.
pub fn schedule_seed(run_seed: u64, index: usize) -> u64 {
    let mut z = run_seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Plans schedule `index` of the run seeded with `run_seed`. `quick` plans shorter loads and
/// always a short health deadline (CI).
pub fn plan(run_seed: u64, index: usize, quick: bool) -> Plan {
    let seed = schedule_seed(run_seed, index);
    let mut rng = StdRng::seed_from_u64(seed);
    // Alternate the shapes so any two consecutive schedules cover both.
    let workers = if (index + (seed as usize & 1)).is_multiple_of(2) {
        3
    } else {
        2
    };
    let health_deadline_s = if quick || rng.random_ratio(4, 5) {
        Some(rng.random_range(4..=6))
    } else {
        None
    };
    let load_ms = if quick {
        rng.random_range(12_000..=16_000)
    } else {
        rng.random_range(22_000..=32_000)
    };
    let mut faults = Vec::new();
    let mut at = rng.random_range(1_000..=3_000);
    while at + 2_000 < load_ms {
        let kind = FaultKind::ALL[rng.random_range(0..FaultKind::ALL.len())];
        let hold_ms = match kind {
            // Long enough, with a short deadline, for the others to take the actors over.
            FaultKind::Kill | FaultKind::Restart => rng.random_range(2_000..=9_000),
            // Short enough for calls waiting on the paused worker to finish within the
            // client's timeout, long enough to outlive a short health deadline.
            FaultKind::Pause => rng.random_range(1_000..=7_000),
        };
        faults.push(Fault {
            at_ms: at,
            target: rng.random_range(0..workers),
            kind,
            hold_ms,
        });
        at += hold_ms + rng.random_range(2_000..=5_000);
    }
    Plan {
        index,
        seed,
        workers,
        health_deadline_s,
        actors: rng.random_range(10..=20),
        clients: rng.random_range(4..=8),
        peek_percent: rng.random_range(20..=40),
        load_ms,
        faults,
    }
}

impl Plan {
    /// The load's length.
    pub fn load(&self) -> Duration {
        Duration::from_millis(self.load_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_plans_the_same_schedule() {
        for index in 0..10 {
            assert_eq!(plan(42, index, false), plan(42, index, false));
        }
        assert_ne!(plan(42, 0, false), plan(43, 0, false));
        assert_ne!(schedule_seed(1, 0), schedule_seed(1, 1));
    }

    #[test]
    fn plans_stay_in_their_bounds() {
        let mut shapes = [0; 4];
        for index in 0..200 {
            for quick in [false, true] {
                let p = plan(7, index, quick);
                shapes[p.workers] += 1;
                assert!(p.workers == 2 || p.workers == 3);
                assert!((10..=20).contains(&p.actors) && (4..=8).contains(&p.clients));
                assert!(!p.faults.is_empty(), "{p:?}");
                if quick {
                    assert!(p.health_deadline_s.is_some());
                    assert!(p.load_ms <= 16_000);
                }
                let mut free_from = 0;
                for f in &p.faults {
                    assert!(f.target < p.workers);
                    assert!(f.at_ms >= free_from, "faults overlap: {p:?}");
                    assert!(f.at_ms < p.load_ms);
                    free_from = f.at_ms + f.hold_ms;
                    if f.kind == FaultKind::Pause {
                        assert!(f.hold_ms <= 7_000);
                    }
                }
            }
        }
        assert!(shapes[2] > 50 && shapes[3] > 50, "{shapes:?}");
    }
}
