//! Small decisions of the SQLite backend, as plain functions.

use std::time::Duration;

/// How long to wait before attempt `attempt + 1` (from 1) to switch a busy file to WAL mode:
/// 5 ms, doubling, at most 100 ms.
pub(crate) fn wal_retry_delay(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    Duration::from_millis(5)
        .saturating_mul(factor)
        .min(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_retries_back_off_to_a_cap() {
        let ms = |a| wal_retry_delay(a).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(5), ms(6)], [5, 10, 20, 80, 100]);
        assert_eq!(ms(u32::MAX), 100);
    }
}
