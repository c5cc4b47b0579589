//! The two-worker local cluster: two worker processes, each in its own directory with its own `data.db`,
//! coordinating peer-to-peer through the replicated store (no shared file, no control plane).
//! The default fixed ports are replaced by free ones, given to both workers with `-peers`, which
//! is exactly what the default does on the default addresses.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use support::{Worker, eventually, free_port, free_udp_port};

fn out(reply: &support::Reply) -> i64 {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["Out"].as_i64().expect("Out is a number")
}

struct Seed {
    dirs: [std::path::PathBuf; 2],
    ports: [(u16, u16); 2],
    peers: String,
}

impl Seed {
    fn new(root: &std::path::Path) -> Seed {
        let ports = [
            (free_port(), free_udp_port()),
            (free_port(), free_udp_port()),
        ];
        let peers = format!("127.0.0.1:{},127.0.0.1:{}", ports[0].1, ports[1].1);
        let dirs = [root.join("worker1"), root.join("worker2")];
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        Seed { dirs, ports, peers }
    }

    fn start(&self, i: usize) -> Worker {
        let (http, host) = self.ports[i];
        Worker::start_on(&self.dirs[i], http, host, &["-peers", &self.peers])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_two_workers_form_one_cluster() {
    let root = tempfile::tempdir().unwrap();
    let seed = Seed::new(root.path());
    // Worker 2 first: the order does not matter.
    let mut w2 = seed.start(1);
    let mut w1 = seed.start(0);
    w1.wait_ready().await;
    w2.wait_ready().await;
    assert!(seed.dirs[0].join("data.db").exists() && seed.dirs[1].join("data.db").exists());

    // Invoke id1..id4 through worker 1, then through worker 2: counters continue, and each id
    // is served by one host whichever worker is called.
    let mut served_by = Vec::new();
    for i in 1..=4 {
        let r = w1
            .http
            .post(&format!("/invoke/myactor/id{i}/increment"), r#"{"In": 42}"#)
            .await;
        assert_eq!(out(&r), 42);
        served_by.push(r.header("x-francis-host").unwrap());
    }
    for i in 1..=4 {
        let r = w2
            .http
            .post(&format!("/invoke/myactor/id{i}/increment"), r#"{"In": 42}"#)
            .await;
        assert_eq!(out(&r), 84);
        assert_eq!(
            r.header("x-francis-host").unwrap(),
            served_by[i - 1],
            "id{i}"
        );
    }
    // Placement spreads actors over both workers (on the default fixed addresses id1..id4 split
    // 3/1; on these random ports a few more ids may be needed to see both).
    let mut hosts: HashSet<String> = served_by.iter().cloned().collect();
    for i in 0..32 {
        if hosts.len() == 2 {
            break;
        }
        let r = w1
            .http
            .post(
                &format!("/invoke/myactor/spread{i}/increment"),
                r#"{"In": 1}"#,
            )
            .await;
        hosts.insert(r.header("x-francis-host").unwrap());
    }
    assert_eq!(
        hosts.len(),
        2,
        "placement never used both workers: {hosts:?}"
    );

    // The local-cluster guide's alarm (with a 1 s interval), set through worker 1: it fires, on one host only.
    let body = format!(
        r#"{{"dueTime":"{}","interval":"1s","ttl":"2028-10-08T10:00:02Z","data":{{"Hello":"World"}}}}"#,
        Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    assert_eq!(
        w1.http
            .post("/alarm/myactor/actor1/alarm1", body)
            .await
            .status,
        204
    );
    eventually("three alarm firings", Duration::from_secs(20), || {
        let http = w2.http.clone();
        async move {
            let r = http.get("/state/myactor/actor1").await;
            (r.status == 200 && r.json()["alarms"].as_i64().unwrap_or(0) >= 3).then_some(())
        }
    })
    .await;
    assert_eq!(
        w2.http.delete("/alarm/myactor/actor1/alarm1").await.status,
        204
    );
    let fired_on = [&w1, &w2]
        .iter()
        .filter(|w| !w.log_lines(&["Actor received alarm", "actor1"]).is_empty())
        .count();
    assert_eq!(fired_on, 1, "the alarm fired on both workers");

    // Idle deactivation (10 s), then re-activation on any host with the counter intact.
    let id1_owner = if served_by[0] == w1.host_address {
        &w1
    } else {
        &w2
    };
    id1_owner
        .wait_for_log(&["Actor deactivated", "\"id1\""], 1)
        .await;
    let r = w2
        .http
        .post("/invoke/myactor/id1/increment", r#"{"In": 1}"#)
        .await;
    assert_eq!(out(&r), 85);

    // Restart worker 2: every counter survives.
    w2.sigterm();
    assert!(w2.wait_exit(Duration::from_secs(30)).await.success());
    let mut w2 = seed.start(1);
    w2.wait_ready().await;
    for (i, expected) in [(1, 86), (2, 85), (3, 85), (4, 85)] {
        let r = w2
            .http
            .post(&format!("/invoke/myactor/id{i}/increment"), r#"{"In": 1}"#)
            .await;
        assert_eq!(out(&r), expected, "id{i}");
    }

    // Kill worker 1: worker 2 alone has no quorum and says so quickly, naming the peer.
    w1.kill();
    let started = std::time::Instant::now();
    let r = eventually("a no-quorum answer", Duration::from_secs(30), || {
        let http = w2.http.clone();
        async move {
            let r = http
                .post("/invoke/myactor/id9/increment", r#"{"In": 1}"#)
                .await;
            (r.status == 503 && r.code() == "no_quorum").then_some(r)
        }
    })
    .await;
    assert!(r.header("retry-after").is_some());
    assert!(
        r.message().contains(&format!("{}", seed.ports[0].1)),
        "{}",
        r.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // Worker 1 comes back: service resumes by itself, nothing lost.
    let mut w1 = seed.start(0);
    w1.wait_ready().await;
    let r = eventually("service to resume", Duration::from_secs(30), || {
        let http = w2.http.clone();
        async move {
            let r = http
                .post("/invoke/myactor/id2/increment", r#"{"In": 1}"#)
                .await;
            (r.status == 200).then_some(r)
        }
    })
    .await;
    assert_eq!(out(&r), 86);
    w1.sigterm();
    w2.sigterm();
    assert!(w1.wait_exit(Duration::from_secs(30)).await.success());
    assert!(w2.wait_exit(Duration::from_secs(30)).await.success());
}

/// `{"In": 1, "pad": "xx…"}`, `bytes` long.
fn padded_increment(bytes: usize) -> String {
    let head = r#"{"In": 1, "pad": ""#;
    let tail = r#""}"#;
    format!(
        "{head}{}{tail}",
        "x".repeat(bytes - head.len() - tail.len())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_get_the_same_answer_wherever_the_actor_lives_and_never_wedge_the_cluster() {
    let root = tempfile::tempdir().unwrap();
    let seed = Seed::new(root.path());
    let mut w1 = seed.start(0);
    let mut w2 = seed.start(1);
    w1.wait_ready().await;
    w2.wait_ready().await;
    // An actor that lives on worker 2.
    let mut remote = None;
    for i in 0..64 {
        let id = format!("big{i}");
        let r = w1
            .http
            .post(&format!("/invoke/myactor/{id}/increment"), r#"{"In": 1}"#)
            .await;
        assert_eq!(out(&r), 1);
        if r.header("x-francis-host").unwrap() == w2.host_address {
            remote = Some(id);
            break;
        }
    }
    let id = remote.expect("some actor lives on worker 2");
    let path = format!("/invoke/myactor/{id}/increment");

    // A body exactly at the limit: the same answer through the worker that hosts the actor
    // and through the one that forwards it.
    let at_limit = padded_increment(worker::MAX_BODY_BYTES);
    assert_eq!(out(&w2.http.post(&path, at_limit.clone()).await), 2);
    assert_eq!(out(&w1.http.post(&path, at_limit).await), 3);
    // One byte more: refused the same way by both, nothing applied.
    let over = padded_increment(worker::MAX_BODY_BYTES + 1);
    for w in [&w1, &w2] {
        w.http
            .post(&path, over.clone())
            .await
            .assert_error(413, "payload_too_large", &["limit"]);
    }

    // Alarms carrying large data commit through the replicated store, and the cluster keeps
    // serving afterwards.
    for (name, size) in [
        ("one-mib", 1 << 20),
        ("near-limit", worker::MAX_BODY_BYTES - 256),
    ] {
        let head = r#"{"dueTime":"2028-10-08T10:00:00Z","data":{"blob":""#;
        let tail = r#""}}"#;
        let body = format!("{head}{}{tail}", "y".repeat(size - head.len() - tail.len()));
        let r = w1
            .http
            .post(&format!("/alarm/myactor/{id}/{name}"), body)
            .await;
        assert_eq!(
            r.status,
            204,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(
        out(&w2.http.post(&path, r#"{"In": 1}"#).await),
        4,
        "a small call after the large ones"
    );
    assert_eq!(out(&w1.http.post(&path, r#"{"In": 1}"#).await), 5);
    w1.sigterm();
    w2.sigterm();
    assert!(w1.wait_exit(Duration::from_secs(30)).await.success());
    assert!(w2.wait_exit(Duration::from_secs(30)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_of_two_workers_stops_promptly_although_it_has_no_quorum() {
    let root = tempfile::tempdir().unwrap();
    let seed = Seed::new(root.path());
    let start = |i: usize| {
        let (http, host) = seed.ports[i];
        Worker::start_on(
            &seed.dirs[i],
            http,
            host,
            &["-peers", &seed.peers, "-health-deadline", "4s"],
        )
    };
    let mut w1 = start(0);
    let mut w2 = start(1);
    w1.wait_ready().await;
    w2.wait_ready().await;
    // Actors on both workers, and an alarm, so that stopping has placements to release.
    for i in 0..8 {
        let r = w1
            .http
            .post(
                &format!("/invoke/myactor/stop{i}/increment"),
                r#"{"In": 1}"#,
            )
            .await;
        assert_eq!(out(&r), 1);
    }
    let alarm = format!(
        r#"{{"dueTime":"{}","interval":"1s"}}"#,
        Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    assert_eq!(
        w2.http.post("/alarm/myactor/stop0/a", alarm).await.status,
        204
    );
    // Killed, not stopped: a worker stopped gracefully leaves the store's voters and the other
    // goes on alone (tests/graceful_stop.rs); a killed one leaves the other without a quorum.
    w1.kill();
    // Worker 2 is alone now: nothing it writes can commit, and it fences itself once its
    // lease runs out. Its graceful stop must not wait on the gone peer for every write
    // (release, re-register, unregister): it once took 13–17 s here on an idle machine, and
    // over 30 s (the grace period) in fault-injection runs with more actors. Now about 2 s
    // idle; the bound leaves room for a loaded machine.
    w2.wait_for_log(&["host fenced itself"], 1).await;
    w2.sigterm();
    assert!(w2.wait_exit(Duration::from_secs(20)).await.success());
}
