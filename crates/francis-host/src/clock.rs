//! Where the host gets wall-clock time from.

use std::fmt;

use chrono::{DateTime, Utc};

/// A source of wall-clock time. The host reads time only through this, so tests can run on
/// tokio's paused clock.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall-clock time that advances with tokio's clock: the wall time at creation plus the tokio
/// time elapsed since. Under `#[tokio::test(start_paused = true)]` it advances only when tokio's
/// paused clock does, which makes alarm and timeout tests exact and fast.
pub struct TokioClock {
    start_wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting at the current wall time.
    pub fn new() -> Self {
        Self::starting_at(Utc::now())
    }

    /// A clock starting at `start_wall`.
    pub fn starting_at(start_wall: DateTime<Utc>) -> Self {
        TokioClock {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TokioClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioClock")
            .field("start_wall", &self.start_wall)
            .finish()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.start.elapsed();
        self.start_wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }
}
