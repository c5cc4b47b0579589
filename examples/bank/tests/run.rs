//! Runs the bank example twice in one directory: the refusals leave every balance right, and
//! the balances are durable across runs.

#[path = "../../support/run_example.rs"]
mod run_example;

#[test]
fn transfers_and_refusals_leave_the_balances_right() {
    let dir = tempfile::tempdir().unwrap();
    let run = || run_example::run_in(env!("CARGO_BIN_EXE_bank"), dir.path());
    assert_eq!(
        run(),
        "transfer 30 alice -> bob: alice 70, bob 30\n\
         transfer 500 bob -> alice refused: bob has 30\n\
         transfer 10 alice -> savings refused: the account is closed\n\
         balances: alice 70, bob 30, savings 0\n"
    );
    assert_eq!(
        run(),
        "transfer 30 alice -> bob: alice 140, bob 60\n\
         transfer 500 bob -> alice refused: bob has 60\n\
         transfer 10 alice -> savings refused: the account is closed\n\
         balances: alice 140, bob 60, savings 0\n"
    );
}
