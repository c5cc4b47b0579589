//! Two workers, each with its own `data.db`, replicated: each is stopped with SIGTERM in turn
//! while calls run through the other, and started again before the other stops. The stopping
//! worker leaves the store's voters before it exits, so the other keeps a quorum and serves
//! every actor (those the stopping worker owned too); started again, it rejoins.
//! Every call is answered (a retryable error is retried by the caller), no actor ever answers
//! the same counter value twice (one owner at a time) and no acknowledged increment is lost.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Cluster, Http, eventually, store_members};

const ACTORS: usize = 8;

/// How long one increment may keep retrying retryable errors.
const ANSWERED_WITHIN: Duration = Duration::from_secs(15);

/// Values each actor answered, and calls that were never answered with a value.
#[derive(Default)]
struct Seen {
    values: BTreeMap<String, Vec<i64>>,
    unanswered: Vec<String>,
    answered: usize,
}

/// Increments `id` through `http`, retrying retryable errors (503 with Retry-After).
async fn increment(http: &Http, id: &str) -> Result<i64, String> {
    let path = format!("/invoke/myactor/{id}/increment");
    let end = Instant::now() + ANSWERED_WITHIN;
    loop {
        let last = match http
            .try_send(axum::http::Method::POST, &path, r#"{"In": 1}"#)
            .await
        {
            Ok(r) if r.status == 200 => return Ok(r.json()["Out"].as_i64().expect("Out")),
            Ok(r) if r.status == 503 && r.header("retry-after").is_some() => {
                format!("{} {}", r.status, String::from_utf8_lossy(&r.body))
            }
            Ok(r) => return Err(format!("{} {}", r.status, String::from_utf8_lossy(&r.body))),
            Err(e) => e,
        };
        if Instant::now() >= end {
            return Err(format!("not answered within {ANSWERED_WITHIN:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Calls every actor in turn through `http` until `stop`.
fn load(http: Http, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::Acquire) {
            let id = format!("g{}", i % ACTORS);
            let result = increment(&http, &id).await;
            let mut seen = seen.lock().unwrap();
            match result {
                Ok(v) => {
                    seen.values.entry(id).or_default().push(v);
                    seen.answered += 1;
                }
                Err(e) => seen.unanswered.push(format!("{id}: {e}")),
            }
            i += 1;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_stopped_with_sigterm_in_turn_the_other_serves_every_actor() {
    let root = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(root.path(), 2);
    let start = |i: usize| cluster.start(i, &[]);
    let mut workers = cluster.start_all().await;
    let both = {
        let mut m: Vec<String> = workers.iter().map(|w| w.host_address.clone()).collect();
        m.sort();
        m
    };
    // the actors are spread over both workers
    let mut owners = std::collections::HashSet::new();
    for i in 0..ACTORS {
        let r = workers[0]
            .http
            .post(&format!("/invoke/myactor/g{i}/increment"), r#"{"In": 1}"#)
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        owners.insert(r.header("x-francis-host").unwrap());
    }
    assert_eq!(owners.len(), 2, "{ACTORS} actors landed on one worker only");

    let seen = Arc::new(Mutex::new(Seen::default()));
    for stopping in [0, 1] {
        let via = 1 - stopping;
        let stop = Arc::new(AtomicBool::new(false));
        let task = load(workers[via].http.clone(), seen.clone(), stop.clone());
        let answered = || seen.lock().unwrap().answered;
        let before = answered();
        eventually(
            "calls answered before the stop",
            Duration::from_secs(20),
            || async { (answered() >= before + 16).then_some(()) },
        )
        .await;
        workers[stopping].sigterm();
        let stopped = workers[stopping].wait_exit(Duration::from_secs(30)).await;
        assert!(stopped.success(), "worker {stopping} exited with {stopped}");
        let left = workers[stopping].log_lines(&["left the replicated store's voters"]);
        assert_eq!(
            left.len(),
            1,
            "worker {stopping} left the voters:\n{}",
            workers[stopping].log_text()
        );
        // the other goes on alone, and serves every actor
        let after_stop = answered();
        eventually(
            "calls answered after the stop",
            Duration::from_secs(20),
            || async { (answered() >= after_stop + 2 * ACTORS).then_some(()) },
        )
        .await;
        assert_eq!(
            store_members(&workers[via].http).await,
            vec![workers[via].host_address.clone()]
        );
        stop.store(true, Ordering::Release);
        task.await.unwrap();
        // started again with the same flags, it rejoins: both are voters again
        workers[stopping] = start(stopping);
        workers[stopping].wait_ready().await;
        for w in &workers {
            let http = w.http.clone();
            let both = both.clone();
            eventually(
                "both workers are voters again",
                Duration::from_secs(30),
                || {
                    let (http, both) = (http.clone(), both.clone());
                    async move { (store_members(&http).await == both).then_some(()) }
                },
            )
            .await;
        }
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.unanswered.is_empty(),
        "calls not answered: {:#?}",
        seen.unanswered
    );
    for (id, values) in &seen.values {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            values.len(),
            "{id} answered a value twice: {values:?}"
        );
    }
    // nothing acknowledged was lost: each actor goes on from the highest value it answered
    for (id, values) in &seen.values {
        let highest = *values.iter().max().unwrap();
        let next = increment(&workers[0].http, id).await.unwrap();
        assert_eq!(next, highest + 1, "{id}");
    }
    for w in &workers {
        w.sigterm();
    }
    for w in &mut workers {
        assert!(w.wait_exit(Duration::from_secs(30)).await.success());
    }
}
