//! Two worker processes sharing one SQLite file form one cluster: every call for an actor runs
//! on the one host that owns it, whichever worker receives it; a killed worker's actors move to
//! the survivor after the health deadline, with every acknowledged increment kept.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use support::{Worker, eventually};

const IDS: usize = 8;
const ROUNDS: usize = 10;

fn counter(reply: &support::Reply) -> i64 {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["Out"].as_i64().expect("Out is a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_file_share_actors_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shared.db");
    let data = data.to_str().unwrap();
    let flags = ["-data", data, "-health-deadline", "2s"];
    let (d1, d2) = (dir.path().join("w1"), dir.path().join("w2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let mut w1 = Worker::start(&d1, &flags);
    let mut w2 = Worker::start(&d2, &flags);
    w1.wait_ready().await;
    w2.wait_ready().await;

    // Concurrent increments of every id through both workers.
    let mut calls = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..IDS {
            let http = if (round + i) % 2 == 0 {
                w1.http.clone()
            } else {
                w2.http.clone()
            };
            calls.push(tokio::spawn(async move {
                let r = http
                    .post(&format!("/invoke/myactor/s{i}/increment"), r#"{"In": 1}"#)
                    .await;
                (
                    i,
                    r.header("x-francis-host").expect("x-francis-host"),
                    counter(&r),
                )
            }));
        }
    }
    let mut owner: HashMap<usize, HashSet<String>> = HashMap::new();
    for call in calls {
        let (i, host, _) = call.await.unwrap();
        owner.entry(i).or_default().insert(host);
    }
    for (i, hosts) in &owner {
        assert_eq!(hosts.len(), 1, "s{i} ran on {hosts:?}");
    }
    let owners: HashSet<&String> = owner.values().flatten().collect();
    assert_eq!(
        owners.len(),
        2,
        "both workers should own some actors: {owners:?}"
    );
    // Exact counters, read through either worker.
    for i in 0..IDS {
        let via = if i % 2 == 0 { &w1.http } else { &w2.http };
        let r = via.post(&format!("/peek/myactor/s{i}/peek"), "").await;
        assert_eq!(counter(&r), ROUNDS as i64, "s{i}");
    }
    // The activation logs: each actor was created on exactly one worker.
    for i in 0..IDS {
        let needle = format!("actor_id=\"s{i}\"");
        let created = |w: &Worker| w.log_lines(&["Actor created", &needle]).len();
        assert_eq!(created(&w1) + created(&w2), 1, "s{i} activations");
    }

    // Kill worker 1 (no graceful shutdown): its actors move to worker 2 once its lease expires.
    let lost: Vec<usize> = owner
        .iter()
        .filter(|(_, hosts)| hosts.contains(&w1.host_address))
        .map(|(i, _)| *i)
        .collect();
    assert!(!lost.is_empty());
    w1.kill();
    let killed_at = Instant::now();
    for i in &lost {
        let path = format!("/invoke/myactor/s{i}/increment");
        let r = eventually(
            &format!("s{i} to move to worker 2"),
            Duration::from_secs(20),
            || {
                let http = w2.http.clone();
                let path = path.clone();
                async move {
                    let r = http.post(&path, r#"{"In": 1}"#).await;
                    (r.status == 200).then_some(r)
                }
            },
        )
        .await;
        assert_eq!(
            r.header("x-francis-host").as_deref(),
            Some(w2.host_address.as_str())
        );
        assert_eq!(
            counter(&r),
            ROUNDS as i64 + 1,
            "s{i} lost an acknowledged increment"
        );
    }
    // ...and not before the dead host's lease could have expired.
    assert!(
        killed_at.elapsed() >= Duration::from_secs(1),
        "{:?}",
        killed_at.elapsed()
    );
    w2.sigterm();
    assert!(w2.wait_exit(Duration::from_secs(30)).await.success());
}
