//! A worker that dies (kill -9) while other workers have calls routed to it: the next call for
//! one of its actors, through a survivor with a cached route to it, answers within seconds (an
//! error saying the owner is unavailable, or the actor served elsewhere), never after the
//! transport's request timeout; and once the dead owner's lease has run out (default timings),
//! a survivor serves it. Three workers, each with its own `data.db`, replicated.

mod support;

use std::time::{Duration, Instant};

use support::{Cluster, eventually};

/// The longest a call for a dead owner's actor may take.
const NOTICED_WITHIN: Duration = Duration::from_secs(5);

/// The longest until a dead owner's actors are served again, with the default timings.
const FAILED_OVER_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_routed_to_an_owner_killed_with_kill_9_answers_within_seconds() {
    let root = tempfile::tempdir().unwrap();
    let mut workers = Cluster::new(root.path(), 3).start_all().await;
    // An actor owned by worker 0, called through worker 1 (which caches the route).
    let mut victim = None;
    for i in 0..64 {
        let path = format!("/invoke/myactor/d{i}/increment");
        let r = workers[1].http.post(&path, r#"{"In": 1}"#).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        if r.header("x-francis-host").unwrap() == workers[0].host_address {
            // Once more, so the pooled connection to the owner is in use.
            let r = workers[1].http.post(&path, r#"{"In": 1}"#).await;
            assert_eq!(r.status, 200);
            victim = Some(path);
            break;
        }
    }
    let victim = victim.expect("some actor lands on worker 0");
    workers[0].kill();
    let killed_at = Instant::now();
    let started = Instant::now();
    let r = workers[1].http.post(&victim, r#"{"In": 1}"#).await;
    let took = started.elapsed();
    println!(
        "after kill -9 of the owner: {} {} in {took:?}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        took < NOTICED_WITHIN,
        "the call for the dead owner's actor took {took:?}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    if r.status != 200 {
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.header("retry-after").is_some(), "a retry can help");
    }
    // The survivor now knows the owner stopped answering: the next call does not wait again.
    let started = Instant::now();
    let r = workers[1].http.post(&victim, r#"{"In": 1}"#).await;
    let took = started.elapsed();
    println!(
        "the next call: {} {} in {took:?}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.code(), "host_unavailable", "{}", r.message());
    // New actors are placed on the workers that answer, although the dead one still holds
    // its lease: none of them lands on it.
    for i in 0..12 {
        let r = workers[1]
            .http
            .post(&format!("/invoke/myactor/new{i}/increment"), r#"{"In": 1}"#)
            .await;
        assert_eq!(
            r.status,
            200,
            "new{i}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_ne!(r.header("x-francis-host").unwrap(), workers[0].host_address);
    }
    // Once the dead owner's lease runs out (the default health deadline, 8 s), a survivor
    // serves the actor, with every acknowledged increment.
    let r = eventually(
        "the actor served by a survivor",
        Duration::from_secs(40),
        || {
            let http = workers[1].http.clone();
            let victim = victim.clone();
            async move {
                let r = http.post(&victim, r#"{"In": 1}"#).await;
                (r.status == 200).then_some(r)
            }
        },
    )
    .await;
    let moved_after = killed_at.elapsed();
    println!("served by a survivor {moved_after:?} after the kill");
    assert!(
        moved_after < FAILED_OVER_WITHIN,
        "served again only {moved_after:?} after the kill"
    );
    assert_eq!(
        r.json()["Out"].as_i64(),
        Some(3),
        "acknowledged increments kept"
    );
    assert_ne!(r.header("x-francis-host").unwrap(), workers[0].host_address);
    for w in &workers[1..] {
        w.sigterm();
    }
    for w in &mut workers[1..] {
        assert!(w.wait_exit(Duration::from_secs(30)).await.success());
    }
}

/// The same in the two-worker local cluster's shape: the survivor has no quorum once the other
/// is killed, so it cannot take the actor over, but a call routed to the dead owner still
/// answers within seconds (a retryable error), and so does the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_a_call_routed_to_an_owner_killed_with_kill_9_answers_within_seconds() {
    let root = tempfile::tempdir().unwrap();
    let mut workers = Cluster::new(root.path(), 2).start_all().await;
    let mut victim = None;
    for i in 0..64 {
        let path = format!("/invoke/myactor/t{i}/increment");
        let r = workers[1].http.post(&path, r#"{"In": 1}"#).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        if r.header("x-francis-host").unwrap() == workers[0].host_address {
            victim = Some(path);
            break;
        }
    }
    let victim = victim.expect("some actor lands on worker 0");
    workers[0].kill();
    for attempt in ["the first call", "the next call"] {
        let started = Instant::now();
        let r = workers[1].http.post(&victim, r#"{"In": 1}"#).await;
        let took = started.elapsed();
        println!(
            "{attempt} after kill -9 of the owner: {} {} in {took:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(took < NOTICED_WITHIN, "{attempt} took {took:?}");
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.header("retry-after").is_some(), "a retry can help");
    }
    workers[1].sigterm();
    assert!(
        workers[1]
            .wait_exit(Duration::from_secs(30))
            .await
            .success()
    );
}
