//! Runs the bank example twice in one directory: the refusals leave every balance right, and
//! the balances are durable across runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the example in `dir` with its peer address on a free port; returns what it printed.
fn run_in(dir: &std::path::Path) -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bank"))
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the example did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "the example failed: {status}\n{stderr}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn transfers_and_refusals_leave_the_balances_right() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        run_in(dir.path()),
        "transfer 30 alice -> bob: alice 70, bob 30\n\
         transfer 500 bob -> alice refused: bob has 30\n\
         transfer 10 alice -> savings refused: the account is closed\n\
         balances: alice 70, bob 30, savings 0\n"
    );
    assert_eq!(
        run_in(dir.path()),
        "transfer 30 alice -> bob: alice 140, bob 60\n\
         transfer 500 bob -> alice refused: bob has 60\n\
         transfer 10 alice -> savings refused: the account is closed\n\
         balances: alice 140, bob 60, savings 0\n"
    );
}
