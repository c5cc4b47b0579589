//! Runs an example program as a user would, for the examples' own tests (each includes this
//! file with `#[path]`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `program` in `dir` with its peer address (its first argument) on a free port, waiting
/// at most a minute; answers what it printed, and fails the test if it failed.
pub fn run_in(program: &str, dir: &std::path::Path) -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(program)
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(dir)
        .env("RUST_LOG", "warn")
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
            panic!("{program} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "{program} failed: {status}\n{stderr}");
    String::from_utf8(output.stdout).unwrap()
}
