//! Statistics of one measurement: throughput, latency percentiles, ratios and targets.
//! Plain functions, unit-tested.

use std::time::Duration;

/// The `p`-th percentile (0 < p <= 100) of `sorted` by the nearest-rank method, or `None` when
/// there are no samples. `sorted` must be in ascending order.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `measured / baseline`, or `None` when either is missing, not finite, or the baseline is not
/// positive (a ratio against nothing means nothing).
pub fn ratio(measured: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    let (m, b) = (measured?, baseline?);
    if !m.is_finite() || !b.is_finite() || b <= 0.0 {
        return None;
    }
    Some(m / b)
}

/// Operations per second, or `None` for an empty or instant run.
pub fn per_second(ops: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (ops > 0 && secs > 0.0).then(|| ops as f64 / secs)
}

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct Measure {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Latency of every successful operation, ascending.
    pub latencies: Vec<Duration>,
}

impl Measure {
    /// Builds a measure; sorts the latencies.
    pub fn new(
        mut latencies: Vec<Duration>,
        errors: u64,
        first_error: Option<String>,
        elapsed: Duration,
    ) -> Self {
        latencies.sort_unstable();
        Measure {
            ops: latencies.len() as u64,
            errors,
            first_error,
            elapsed,
            latencies,
        }
    }

    /// Both runs as one: counts and wall times add up, latencies are pooled.
    pub fn merge(self, other: Measure) -> Measure {
        let mut latencies = self.latencies;
        latencies.extend(other.latencies);
        Measure::new(
            latencies,
            self.errors + other.errors,
            self.first_error.or(other.first_error),
            self.elapsed + other.elapsed,
        )
    }

    /// Successful operations per second.
    pub fn ops_per_sec(&self) -> Option<f64> {
        per_second(self.ops, self.elapsed)
    }

    /// The `p`-th latency percentile in microseconds.
    pub fn p_us(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies, p).map(|d| d.as_secs_f64() * 1e6)
    }
}

/// A scenario's first target (issue 9).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// `ratio >= x` against the baseline.
    RatioAtLeast(f64),
    /// `ops/s >= x`.
    OpsAtLeast(f64),
    /// Every event happened within this many seconds (the measured value is the worst delay).
    AllWithinSecs(f64),
    /// The measured value (bytes) is at most this.
    BytesAtMost(f64),
    /// Only reported.
    None,
}

impl Target {
    /// Human-readable target.
    pub fn describe(self) -> String {
        match self {
            Target::RatioAtLeast(x) => format!(">= {x}x baseline"),
            Target::OpsAtLeast(x) => format!(">= {x} ops/s"),
            Target::AllWithinSecs(x) => format!("all within {x} s of due"),
            Target::BytesAtMost(x) => format!("<= {x} bytes"),
            Target::None => "report".to_owned(),
        }
    }

    /// Whether `value` (the ratio, ops/s, worst delay in seconds or bytes, as the target says)
    /// meets the target; `None` when there is nothing to judge.
    pub fn met(self, value: Option<f64>) -> Option<bool> {
        let v = value.filter(|v| v.is_finite())?;
        match self {
            Target::RatioAtLeast(x) | Target::OpsAtLeast(x) => Some(v >= x),
            Target::AllWithinSecs(x) | Target::BytesAtMost(x) => Some(v <= x),
            Target::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&s, 100.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&s, 10.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&s, 11.0), Some(Duration::from_millis(2)));
        let one = ms(&[7]);
        assert_eq!(percentile(&one, 0.1), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
    }

    #[test]
    fn percentiles_of_nothing_or_out_of_range_are_none() {
        assert_eq!(percentile(&[], 50.0), None);
        let s = ms(&[1, 2]);
        assert_eq!(percentile(&s, 0.0), None);
        assert_eq!(percentile(&s, 101.0), None);
        assert_eq!(percentile(&s, f64::NAN), None);
    }

    #[test]
    fn ratios_refuse_missing_or_zero_baselines() {
        assert_eq!(ratio(Some(50.0), Some(100.0)), Some(0.5));
        assert_eq!(ratio(Some(300.0), Some(100.0)), Some(3.0));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(Some(1.0), Some(-2.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(f64::INFINITY), Some(1.0)), None);
    }

    #[test]
    fn throughput_of_an_empty_run_is_none() {
        assert_eq!(per_second(0, Duration::from_secs(1)), None);
        assert_eq!(per_second(5, Duration::ZERO), None);
        assert_eq!(per_second(500, Duration::from_millis(250)), Some(2000.0));
    }

    #[test]
    fn measures_sort_and_count() {
        let m = Measure::new(
            ms(&[3, 1, 2]),
            1,
            Some("boom".into()),
            Duration::from_secs(3),
        );
        assert_eq!(m.ops, 3);
        assert_eq!(m.errors, 1);
        assert_eq!(m.ops_per_sec(), Some(1.0));
        assert_eq!(m.p_us(50.0), Some(2000.0));
        assert_eq!(m.p_us(99.0), Some(3000.0));
    }

    #[test]
    fn merged_measures_pool_everything() {
        let a = Measure::new(ms(&[1, 3]), 0, None, Duration::from_secs(1));
        let b = Measure::new(ms(&[2]), 2, Some("x".into()), Duration::from_secs(2));
        let m = a.merge(b);
        assert_eq!(m.ops, 3);
        assert_eq!(m.errors, 2);
        assert_eq!(m.first_error.as_deref(), Some("x"));
        assert_eq!(m.elapsed, Duration::from_secs(3));
        assert_eq!(m.latencies, ms(&[1, 2, 3]));
        assert_eq!(m.ops_per_sec(), Some(1.0));
    }

    #[test]
    fn targets_judge_in_the_right_direction() {
        assert_eq!(Target::RatioAtLeast(0.5).met(Some(0.49)), Some(false));
        assert_eq!(Target::RatioAtLeast(0.5).met(Some(0.5)), Some(true));
        assert_eq!(Target::OpsAtLeast(10_000.0).met(Some(12_000.0)), Some(true));
        assert_eq!(Target::AllWithinSecs(5.0).met(Some(5.1)), Some(false));
        assert_eq!(Target::AllWithinSecs(5.0).met(Some(0.2)), Some(true));
        assert_eq!(Target::BytesAtMost(2048.0).met(Some(4000.0)), Some(false));
        assert_eq!(Target::RatioAtLeast(0.5).met(None), None);
        assert_eq!(Target::AllWithinSecs(5.0).met(Some(f64::INFINITY)), None);
        assert_eq!(Target::None.met(Some(1.0)), None);
        assert!(Target::OpsAtLeast(10.0).describe().contains("ops/s"));
    }
}
