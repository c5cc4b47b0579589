//! Runs `cargo xtask demo`'s checks on the real worker binary, on free ports, so CI catches a
//! broken demo. (The demo itself runs on the default fixed ports.)

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Command;

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The worker binary next to this test's target directory, built if missing.
fn worker_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("worker");
    if !bin.exists() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "worker"])
            .current_dir(root)
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p worker failed");
    }
    bin
}

#[test]
fn the_demo_passes_every_check() {
    let dir = tempfile_dir();
    let ports = format!(
        "{},{},{},{}",
        free_tcp(),
        free_tcp(),
        free_udp(),
        free_udp()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["demo", "--dir"])
        .arg(&dir)
        .args(["--ports", &ports, "--worker-bin"])
        .arg(worker_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for step in [
        "[passed ] both workers start and become healthy",
        "[passed ] calls route to one owner per actor, counters continue",
        "[passed ] the alarm fires, on exactly one host",
        "[passed ] idle actors deactivate and come back with their state",
        "[passed ] worker 2 restarts and every counter survives",
        "[passed ] both workers shut down cleanly",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    assert!(dir.join("worker1.log").exists() && dir.join("worker2.log").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("francis-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
