//! Runs the scheduled report example: a repeating alarm writes reports until it is cancelled.

#[path = "../../support/run_example.rs"]
mod run_example;

#[test]
fn a_repeating_alarm_writes_reports_until_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        run_example::run_in(env!("CARGO_BIN_EXE_report"), dir.path()),
        "report 1 for sales\n\
         report 2 for sales\n\
         report 3 for sales\n\
         schedule cancelled\n"
    );
}
