//! Runs the rate limiter example: three calls of a burst pass, the rest are refused with the
//! limiter's own error, and another key has its own bucket.

#[path = "../../support/run_example.rs"]
mod run_example;

#[test]
fn a_burst_is_limited_per_key() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        run_example::run_in(env!("CARGO_BIN_EXE_rate-limiter"), dir.path()),
        "alice call 1: allowed, 2 left\n\
         alice call 2: allowed, 1 left\n\
         alice call 3: allowed, 0 left\n\
         alice call 4: refused, retry within ten seconds\n\
         alice call 5: refused, retry within ten seconds\n\
         bob call 1: allowed, 2 left\n"
    );
}
