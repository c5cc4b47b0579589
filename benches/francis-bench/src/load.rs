//! The load driver: `callers` concurrent tasks run an operation until a count or a time budget
//! is used up, whichever comes first.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::stats::Measure;

/// When a run stops: after `max_ops` operations were started or `max_time` passed.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_ops: u64,
    pub max_time: Duration,
}

impl Budget {
    pub fn new(max_ops: u64, max_time: Duration) -> Self {
        Budget { max_ops, max_time }
    }
}

/// Runs `op(caller, n)` from `callers` tasks, `n` counting every started operation from 0.
/// Each caller stops when the budget is used; an operation that fails counts as an error.
pub async fn drive<F, Fut>(callers: usize, budget: Budget, op: F) -> Measure
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + budget.max_time;
    let mut tasks = Vec::with_capacity(callers);
    for caller in 0..callers {
        let op = op.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= budget.max_ops || Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match op(caller, n).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok((lat, e, fe)) => {
                all.extend(lat);
                errors += e;
                if first_error.is_none() {
                    first_error = fe;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("caller task failed: {e}"));
            }
        }
    }
    Measure::new(all, errors, first_error, start.elapsed())
}

/// Measures `a` (the baseline) and `b` alternately, `a b a b`, each round with half the
/// budget, so neither side always runs first on a warmer (or more tired) machine; returns each
/// side's rounds merged.
pub async fn interleave<FA, FutA, FB, FutB>(
    callers: usize,
    budget: Budget,
    a: FA,
    b: FB,
) -> (Measure, Measure)
where
    FA: Fn(usize, u64) -> FutA + Clone + Send + Sync + 'static,
    FutA: Future<Output = Result<(), String>> + Send + 'static,
    FB: Fn(usize, u64) -> FutB + Clone + Send + Sync + 'static,
    FutB: Future<Output = Result<(), String>> + Send + 'static,
{
    let half = Budget::new(budget.max_ops.div_ceil(2), budget.max_time / 2);
    let a1 = drive(callers, half, a.clone()).await;
    let b1 = drive(callers, half, b.clone()).await;
    let a2 = drive(callers, half, a).await;
    let b2 = drive(callers, half, b).await;
    (a1.merge(a2), b1.merge(b2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_at_the_operation_budget_and_counts_errors() {
        let m = drive(
            4,
            Budget::new(100, Duration::from_secs(60)),
            |_, n| async move {
                if n % 10 == 0 {
                    Err(format!("op {n} failed"))
                } else {
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!(m.ops + m.errors, 100);
        assert_eq!(m.errors, 10);
        assert!(m.first_error.unwrap().ends_with("failed"));
    }

    #[tokio::test]
    async fn interleaving_runs_each_side_twice_with_half_the_budget() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (oa, ob) = (order.clone(), order.clone());
        let (a, b) = interleave(
            1,
            Budget::new(10, Duration::from_secs(60)),
            move |_, n| {
                let o = oa.clone();
                async move {
                    o.lock().unwrap().push(('a', n));
                    Ok(())
                }
            },
            move |_, n| {
                let o = ob.clone();
                async move {
                    o.lock().unwrap().push(('b', n));
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!((a.ops, b.ops), (10, 10));
        let sides: String = order.lock().unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(sides, "aaaaabbbbbaaaaabbbbb");
    }

    #[tokio::test]
    async fn stops_at_the_time_budget() {
        // Each caller can start at most ceil(50 / 20) = 3 operations before the deadline.
        let m = drive(
            2,
            Budget::new(u64::MAX, Duration::from_millis(50)),
            |_, _| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            },
        )
        .await;
        assert!((2..=6).contains(&m.ops), "{}", m.ops);
    }
}
