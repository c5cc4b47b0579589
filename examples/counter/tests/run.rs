//! Runs the README's example as a user would, twice in one directory: the visit count is
//! durable across runs.

#[path = "../../support/run_example.rs"]
mod run_example;

#[test]
fn the_example_counts_visits_durably() {
    let dir = tempfile::tempdir().unwrap();
    let run = || run_example::run_in(env!("CARGO_BIN_EXE_counter"), dir.path());
    assert_eq!(run(), "home: 1 visits, counter at 1\n");
    assert_eq!(run(), "home: 2 visits, counter at 2\n");
}
