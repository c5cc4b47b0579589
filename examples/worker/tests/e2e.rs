//! End-to-end: the cargo-built `worker` binary, started on free ports in a temporary directory,
//! driven over HTTP the way the local-cluster guide drives it with curl.

mod support;

use axum::body::Bytes;
use axum::http::Method;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use support::{DEADLINE, Reply, Worker, eventually, run_to_exit};

fn inc(n: i64) -> String {
    json!({ "In": n }).to_string()
}

fn out(reply: &Reply) -> i64 {
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()["Out"]
        .as_i64()
        .unwrap_or_else(|| panic!("no Out in {reply:?}"))
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_survives_halt_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::start(dir.path(), &[]);
    w.wait_ready().await;
    let http = w.http.clone();

    // The local-cluster guide's curl commands.
    let r = http
        .post("/invoke/myactor/id1/increment", r#"{"In": 42}"#)
        .await;
    assert_eq!(out(&r), 42);
    assert_eq!(
        r.header("x-francis-host").as_deref(),
        Some(w.host_address.as_str())
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        out(&http.post("/invoke/myactor/id2/increment", inc(42)).await),
        42
    );
    assert_eq!(
        out(&http.post("/invoke/myactor/id1/increment", inc(42)).await),
        84
    );
    assert_eq!(
        out(&http.post("/invoke/myactor/id2/increment", inc(42)).await),
        84
    );

    // peek, through the peek endpoint (a shared turn) and as an invoke method.
    let r = http.post("/peek/myactor/id1/peek", "").await;
    assert_eq!(out(&r), 84);
    assert_eq!(
        r.header("x-francis-host").as_deref(),
        Some(w.host_address.as_str())
    );
    assert_eq!(out(&http.post("/invoke/myactor/id1/peek", "").await), 84);
    assert_eq!(
        out(&http.post("/invoke/myactor/id2/reset", inc(7)).await),
        7
    );

    // Durable state as stored.
    let r = http.get("/state/myactor/id1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"counter": 84, "alarms": 0}));
    assert_eq!(http.get("/state/myactor/id2").await.json()["counter"], 7);

    // Halt: deactivated at once; a second halt finds nothing; the next call re-activates it
    // with its state intact.
    let id1 = ["Actor deactivated", "\"id1\""];
    assert_eq!(http.post("/halt/myactor/id1", "").await.status, 204);
    w.wait_for_log(&id1, 1).await;
    http.post("/halt/myactor/id1", "")
        .await
        .assert_error(404, "actor_not_hosted", &["id1"]);
    assert_eq!(
        out(&http.post("/invoke/myactor/id1/increment", inc(1)).await),
        85
    );
    assert_eq!(w.log_lines(&["Actor created", "\"id1\""]).len(), 2);

    // halt-all deactivates everything.
    assert_eq!(http.post("/halt-all", "").await.status, 204);
    w.wait_for_log(&["Actor deactivated", "\"id2\""], 1).await;
    w.wait_for_log(&id1, 2).await;

    // The default data file is data.db in the working directory.
    assert!(dir.path().join("data.db").exists());

    // SIGTERM: graceful exit with status 0.
    w.sigterm();
    let status = w.wait_exit(DEADLINE).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        w.log_text()
    );
    let log = w.log_text();
    assert!(
        log.contains("worker started") && log.contains(&w.host_address),
        "{log}"
    );
    assert!(log.contains("worker stopped"), "{log}");

    // A new worker on the same data file has the counters.
    let mut again = Worker::start(dir.path(), &[]);
    again.wait_ready().await;
    assert_eq!(
        out(&again.http.post("/peek/myactor/id1/peek", "").await),
        85
    );
    assert_eq!(
        out(&again
            .http
            .post("/invoke/myactor/id2/increment", inc(1))
            .await),
        8
    );
    again.sigterm();
    assert!(again.wait_exit(DEADLINE).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    // Double-dash spelling with an inline value, and an explicit data file.
    let mut w = Worker::start(dir.path(), &["--data=custom.db"]);
    w.wait_ready().await;
    assert!(dir.path().join("custom.db").exists());
    assert!(!dir.path().join("data.db").exists());
    let http = w.http.clone();
    assert_eq!(out(&http.post("/invoke/myactor/a/reset", inc(5)).await), 5);

    // 400: malformed JSON, wrong shape, missing payload; invalid references.
    let r = http
        .post("/invoke/myactor/a/increment", r#"{"In": 4"#)
        .await;
    r.assert_error(400, "decode", &["JSON"]);
    assert_eq!(
        r.header("x-francis-host").as_deref(),
        Some(w.host_address.as_str())
    );
    http.post("/invoke/myactor/a/increment", r#"{"In": "x"}"#)
        .await
        .assert_error(400, "decode", &["invalid type"]);
    http.post("/invoke/myactor/a/increment", "")
        .await
        .assert_error(400, "decode", &[]);
    http.post("/invoke/myactor/id%01x/increment", inc(1))
        .await
        .assert_error(400, "invalid_reference", &["actor id", "control"]);
    http.post("/invoke/myactor/a%2Fb/increment", inc(1))
        .await
        .assert_error(400, "invalid_reference", &["'/'"]);
    http.post("/invoke/myactor/a/inc%0Arement", inc(1))
        .await
        .assert_error(400, "invalid_reference", &["method"]);
    http.post("/invoke/myactor/%FF/increment", inc(1))
        .await
        .assert_error(400, "invalid_reference", &[]);
    http.get("/state/myactor/x%7F")
        .await
        .assert_error(400, "invalid_reference", &[]);

    // 403: reserved type or method, on every endpoint that takes one.
    http.post("/invoke/francis.builtin.x/a/increment", inc(1))
        .await
        .assert_error(403, "actor_type_reserved", &["francis.builtin.x"]);
    http.post("/invoke/myactor/a/francis.builtin.m", inc(1))
        .await
        .assert_error(403, "method_reserved", &["francis.builtin.m"]);
    http.post("/peek/myactor/a/francis.builtin.m", "")
        .await
        .assert_error(403, "method_reserved", &[]);
    http.get("/state/francis.builtin.x/a")
        .await
        .assert_error(403, "actor_type_reserved", &[]);
    http.post("/alarm/francis.builtin.x/a/n", "{}")
        .await
        .assert_error(403, "actor_type_reserved", &[]);
    http.post("/halt/francis.builtin.x/a", "")
        .await
        .assert_error(403, "actor_type_reserved", &[]);

    // 404: a type nobody serves, a method the actor lacks, absent state/alarm/activation.
    http.post("/invoke/nosuch/a/increment", inc(1))
        .await
        .assert_error(404, "actor_type_unsupported", &["nosuch"]);
    http.post("/alarm/nosuch/a/n", "{}").await.assert_error(
        404,
        "actor_type_unsupported",
        &["nosuch"],
    );
    http.post("/invoke/myactor/a/decrement", inc(1))
        .await
        .assert_error(404, "method_not_implemented", &["decrement"]);
    http.get("/state/myactor/never")
        .await
        .assert_error(404, "state_not_found", &["never"]);
    http.delete("/alarm/myactor/a/none")
        .await
        .assert_error(404, "alarm_not_found", &["none"]);
    http.get("/alarm/myactor/a/none")
        .await
        .assert_error(404, "alarm_not_found", &["none"]);
    http.post("/halt/myactor/never", "")
        .await
        .assert_error(404, "actor_not_hosted", &["never"]);
    http.get("/nothing/here")
        .await
        .assert_error(404, "not_found", &[]);
    http.send(Method::GET, "/invoke/myactor/a/peek", Bytes::new())
        .await
        .assert_error(405, "method_not_allowed", &[]);

    // 409: a peek (read-only turn) of a method that writes; nothing changes.
    http.post("/peek/myactor/a/increment", inc(1))
        .await
        .assert_error(409, "read_only", &["read-only"]);
    http.post("/peek/myactor/a/reset", inc(0))
        .await
        .assert_error(409, "read_only", &[]);
    assert_eq!(out(&http.post("/peek/myactor/a/peek", "").await), 5);

    // 500: the actor's own error, with its message; nothing changes.
    assert_eq!(
        out(&http.post("/invoke/myactor/big/reset", inc(i64::MAX)).await),
        i64::MAX
    );
    let r = http.post("/invoke/myactor/big/increment", inc(1)).await;
    r.assert_error(500, "actor_error", &["counter overflow"]);
    assert_eq!(
        r.header("x-francis-host").as_deref(),
        Some(w.host_address.as_str())
    );
    assert_eq!(
        out(&http.post("/peek/myactor/big/peek", "").await),
        i64::MAX
    );

    // 400: bad alarm properties name the field.
    let now = rfc3339(Utc::now());
    let cases: &[(Value, &str)] = &[
        (json!({"dueTime": "yesterday"}), "dueTime"),
        (json!({"dueTime": now, "interval": "1x"}), "interval"),
        (json!({"dueTime": now, "interval": "0s"}), "interval"),
        (json!({"dueTime": now, "interval": true}), "interval"),
        (
            json!({"dueTime": now, "interval": "1s", "ttl": "2028-13-45"}),
            "ttl",
        ),
        (
            json!({"dueTime": now, "interval": "1s", "ttl": "2001-01-01T00:00:00Z"}),
            "ttl",
        ),
        (json!({"dueTime": now, "foo": 1}), "foo"),
    ];
    for (body, field) in cases {
        http.post("/alarm/myactor/a/bad", body.to_string())
            .await
            .assert_error(400, "invalid_argument", &[field]);
    }
    http.post("/alarm/myactor/a/bad", r#"{"dueTime": "#)
        .await
        .assert_error(400, "decode", &[]);
    http.post("/alarm/myactor/a/bad%01", "{}")
        .await
        .assert_error(400, "invalid_reference", &["alarm name"]);
    // None of them was stored.
    http.get("/alarm/myactor/a/bad")
        .await
        .assert_error(404, "alarm_not_found", &[]);

    // 413: one byte over the limit, in our JSON shape; exactly at the limit is fine.
    let limit = worker::MAX_BODY_BYTES;
    let r = http
        .post("/invoke/myactor/a/increment", vec![b' '; limit + 1])
        .await;
    r.assert_error(413, "payload_too_large", &["limit"]);
    assert_eq!(
        r.header("x-francis-host").as_deref(),
        Some(w.host_address.as_str())
    );
    let mut at_limit = br#"{"In": 1, "pad": ""#.to_vec();
    at_limit.resize(limit - 2, b'x');
    at_limit.extend_from_slice(br#""}"#);
    assert_eq!(at_limit.len(), limit);
    assert_eq!(
        out(&http.post("/invoke/myactor/a/increment", at_limit).await),
        6
    );

    w.sigterm();
    assert!(w.wait_exit(DEADLINE).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_fire_repeat_and_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::start(dir.path(), &[]);
    w.wait_ready().await;
    let http = w.http.clone();

    // The local-cluster guide's alarm body: due now, repeating (every second here), a TTL, data.
    let now = Utc::now();
    let body = json!({
        "dueTime": rfc3339(now),
        "interval": "1s",
        "ttl": rfc3339(now + chrono::Duration::days(1)),
        "data": {"Hello": "World"},
    });
    let r = http
        .post("/alarm/myactor/actor1/alarm1", body.to_string())
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    let stored = http.get("/alarm/myactor/actor1/alarm1").await;
    assert_eq!(stored.status, 200);
    assert_eq!(stored.json()["interval"], "1s");
    assert_eq!(stored.json()["data"], json!({"Hello": "World"}));

    // It fires at once and again a second later: counted in the actor's state, and logged.
    eventually("alarm1 to fire twice", DEADLINE, || async {
        let r = http.get("/state/myactor/actor1").await;
        (r.status == 200 && r.json()["alarms"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    let lines = w
        .wait_for_log(
            &["Actor received alarm", "\"actor1\"", "alarm1", "Hello"],
            2,
        )
        .await;
    assert!(lines[0].contains(&w.host_address), "{}", lines[0]);
    assert!(!w.log_lines(&["Actor created", "\"actor1\""]).is_empty());

    // Deleted: gone, and a second delete is a 404.
    assert_eq!(
        http.delete("/alarm/myactor/actor1/alarm1").await.status,
        204
    );
    http.get("/alarm/myactor/actor1/alarm1")
        .await
        .assert_error(404, "alarm_not_found", &[]);
    http.delete("/alarm/myactor/actor1/alarm1")
        .await
        .assert_error(404, "alarm_not_found", &[]);

    // A one-shot alarm with an empty body (due now, no data) fires once and is removed.
    assert_eq!(
        http.post("/alarm/myactor/actor2/once", "").await.status,
        204
    );
    eventually(
        "the one-shot alarm to fire and be removed",
        DEADLINE,
        || async {
            let state = http.get("/state/myactor/actor2").await;
            let gone = http.get("/alarm/myactor/actor2/once").await.status == 404;
            (state.status == 200 && gone).then(|| state.json()["alarms"].clone())
        },
    )
    .await;
    assert_eq!(http.get("/state/myactor/actor2").await.json()["alarms"], 1);

    w.sigterm();
    assert!(w.wait_exit(DEADLINE).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::start(dir.path(), &[]);
    w.wait_ready().await;
    let http = w.http.clone();
    assert_eq!(
        out(&http.post("/invoke/myactor/slow/reset", inc(10)).await),
        10
    );

    // A call that waits 25 s is in flight when SIGTERM arrives.
    let slow = tokio::spawn({
        let http = http.clone();
        async move {
            http.post("/invoke/myactor/slow/increment-wait", inc(1))
                .await
        }
    });
    w.wait_for_log(&["Actor invoked", "\"slow\"", "increment-wait"], 1)
        .await;
    w.sigterm();

    // While draining: not healthy, and new calls get a retryable 503.
    eventually("/healthz to report draining", DEADLINE, || async {
        let r = http.get("/healthz").await;
        (r.status == 503 && r.json()["status"] == "draining").then_some(())
    })
    .await;
    let r = http.post("/invoke/myactor/other/increment", inc(1)).await;
    r.assert_error(503, "shutting_down", &[]);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        r.header("x-francis-host").as_deref(),
        Some(w.host_address.as_str())
    );

    // The in-flight call is cancelled at the end of the 10 s grace period, changing nothing.
    let r = tokio::time::timeout(DEADLINE, slow)
        .await
        .expect("slow call answered")
        .unwrap();
    r.assert_error(503, "cancelled", &[]);
    let status = w.wait_exit(DEADLINE).await;
    assert!(status.success(), "exit status {status}");
    assert!(w.log_text().contains("worker stopped"));

    let mut again = Worker::start(dir.path(), &[]);
    again.wait_ready().await;
    assert_eq!(
        out(&again.http.post("/peek/myactor/slow/peek", "").await),
        10
    );
}

#[tokio::test]
async fn command_line_mistakes_exit_2_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let help = run_to_exit(dir.path(), &["-h"], &[]);
    assert!(help.status.success());
    let usage = String::from_utf8_lossy(&help.stdout);
    assert!(
        usage.contains("-worker-address") && usage.contains("-actor-host-address"),
        "{usage}"
    );
    assert!(
        usage.contains("-data") && usage.contains("-runtime-psk"),
        "{usage}"
    );

    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["-replicas", "a"], &[], "unknown flag -replicas"),
        (&["-peers", "a"], &[], "-peers"),
        (&["-health-deadline", "0s"], &[], "-health-deadline"),
        (&["serve"], &[], "unexpected argument"),
        (&["--worker-address"], &[], "-worker-address needs a value"),
        (&["-worker-address", "8081"], &[], "-worker-address"),
        (&["-actor-host-address=nohost"], &[], "-actor-host-address"),
        (&["-runtime-psk", "short"], &[], "at least 32"),
        (
            &[],
            &[("FRANCIS_RUNTIME_PSK", "short-secret")],
            "FRANCIS_RUNTIME_PSK",
        ),
    ];
    for (args, env, expect) in cases {
        let out = run_to_exit(dir.path(), args, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage: worker"), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("short-secret"),
            "the PSK must not be echoed: {stderr}"
        );
    }
    // Nothing was started, so no data file was created.
    assert!(!dir.path().join("data.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_in_use_fails_fast_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut w = Worker::start_on(dir.path(), port, support::free_port(), &[]);
    let status = w.wait_exit(DEADLINE).await;
    assert_eq!(status.code(), Some(1), "log:\n{}", w.log_text());
    let log = w.log_text();
    assert!(
        log.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{log}"
    );
    assert!(
        !dir.path().join("data.db").exists(),
        "the data file is not touched"
    );
    drop(taken);
}
