//! The worker's logs: `-log-format json` writes one JSON object per line, lifecycle lines name
//! the actor and the host, and the default filter (no `RUST_LOG`) keeps other libraries at
//! `warn`, so the log is Francis's own lines.

mod support;

use serde_json::Value;
use support::{Worker, free_udp_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_parse_name_the_actor_and_host_and_only_francis_speaks_at_info() {
    let dir = tempfile::tempdir().unwrap();
    // A replicated store of one node: the Raft library, which logs a great deal at info, runs.
    let port = free_udp_port();
    let me = format!("127.0.0.1:{port}");
    let mut w = Worker::start_with_default_logs(
        dir.path(),
        port,
        &["-peers", me.as_str(), "-log-format", "json"],
    );
    w.wait_ready().await;
    let r = w
        .http
        .post("/invoke/myactor/j1/increment", r#"{"In": 1}"#)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let lines = w.wait_for_log(&["actor activated", "j1"], 1).await;
    let activated: Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert_eq!(activated["level"], "INFO", "{activated}");
    let fields = &activated["fields"];
    assert_eq!(fields["message"], "actor activated", "{activated}");
    assert_eq!(fields["actor_type"], "myactor", "{activated}");
    assert_eq!(fields["actor_id"], "j1", "{activated}");
    assert_eq!(fields["host"], w.host_address.as_str(), "{activated}");
    let text = w.log_text();
    // The worker is still writing: a last line without its newline may be half written.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut seen = 0;
    for line in complete.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nlog:\n{text}"));
        let target = v["target"].as_str().expect("a target");
        let level = v["level"].as_str().expect("a level");
        if matches!(level, "INFO" | "DEBUG" | "TRACE") {
            assert!(
                target.starts_with("worker") || target.starts_with("francis"),
                "a third-party line at {level}: {line}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 3, "{text}");
}
