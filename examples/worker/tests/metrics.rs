//! `GET /metrics`: after known traffic (increments, an alarm firing, one failed call) the
//! Prometheus text shows exactly those counts, read with a Prometheus text-format parser.

mod support;

use prometheus_parse::{Scrape, Value};
use support::{DEADLINE, Worker, eventually};

async fn scrape(w: &Worker) -> Scrape {
    let r = w.http.get("/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{r:?}"
    );
    let text = String::from_utf8(r.body.to_vec()).expect("UTF-8");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The value of the counter `name` whose labels include every one of `labels`.
fn counter(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            Value::Counter(v) | Value::Untyped(v) | Value::Gauge(v) => v,
            ref other => panic!("{name} is {other:?}"),
        })
        .reduce(|a, b| a + b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_exactly_the_traffic_that_ran() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::start(dir.path(), &["-peers", ""]);
    w.wait_ready().await;
    for _ in 0..3 {
        let r = w
            .http
            .post("/invoke/myactor/m1/increment", r#"{"In": 1}"#)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let bad = w.http.post("/invoke/myactor/m1/no-such-method", "{}").await;
    assert_ne!(bad.status, 200, "{bad:?}");
    let due = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = w
        .http
        .post(
            "/alarm/myactor/m2/once",
            format!(r#"{{"dueTime": "{due}"}}"#),
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    let s = eventually("the alarm firing is counted", DEADLINE, || async {
        let s = scrape(&w).await;
        let fired = counter(
            &s,
            "francis_alarms_fired_total",
            &[("actor_type", "myactor"), ("outcome", "ok")],
        );
        (fired == Some(1.0)).then_some(s)
    })
    .await;
    let calls = |method: &str, outcome: &str| {
        counter(
            &s,
            "francis_invocations_total",
            &[
                ("actor_type", "myactor"),
                ("method", method),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(calls("increment", "ok"), Some(3.0));
    let failed: f64 = s
        .samples
        .iter()
        .filter(|x| x.metric == "francis_invocations_total")
        .filter(|x| x.labels.get("method") == Some("no-such-method"))
        .map(|x| match x.value {
            Value::Counter(v) => {
                assert_ne!(x.labels.get("outcome"), Some("ok"), "{x:?}");
                v
            }
            ref other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(failed, 1.0);
    assert_eq!(
        counter(
            &s,
            "francis_activations_total",
            &[("actor_type", "myactor")]
        ),
        Some(2.0)
    );
    // Active now: those activated less those gone since (m1 may have gone idle meanwhile).
    let gone = counter(
        &s,
        "francis_deactivations_total",
        &[("actor_type", "myactor")],
    );
    assert_eq!(
        counter(&s, "francis_active_actors", &[("actor_type", "myactor")]),
        Some(2.0 - gone.unwrap_or(0.0))
    );
    // The latency histogram holds the three increments.
    let histogram = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "francis_invocation_duration_seconds"
                && x.labels.get("method") == Some("increment")
        })
        .expect("a latency histogram");
    match &histogram.value {
        Value::Histogram(buckets) => {
            let all = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
            assert_eq!(all, 3.0, "{buckets:?}");
        }
        other => panic!("not a histogram: {other:?}"),
    }
    // Actor ids never become labels.
    assert!(
        s.samples
            .iter()
            .all(|x| x.labels.values().all(|v| v != "m1" && v != "m2")),
        "an actor id in the labels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_worker_reports_its_role_term_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_udp_port();
    let me = format!("127.0.0.1:{port}");
    let mut w = Worker::start_on(dir.path(), support::free_port(), port, &["-peers", &me]);
    w.wait_ready().await;
    let r = w
        .http
        .post("/invoke/myactor/r1/increment", r#"{"In": 1}"#)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let node = [("node", me.as_str())];
    let s = eventually("the write is applied and reported", DEADLINE, || async {
        let s = scrape(&w).await;
        let applied = counter(&s, "francis_replication_applied_index", &node)?;
        let lag = counter(&s, "francis_replication_apply_lag", &node)?;
        (applied >= 1.0 && lag == 0.0).then_some(s)
    })
    .await;
    assert_eq!(counter(&s, "francis_replication_leader", &node), Some(1.0));
    assert!(counter(&s, "francis_replication_term", &node).is_some_and(|t| t >= 1.0));
    assert!(
        counter(&s, "francis_replication_last_log_index", &node)
            >= counter(&s, "francis_replication_applied_index", &node)
    );
}
