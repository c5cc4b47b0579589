//! Membership of a replicated cluster, from the operator's side: a worker started with the
//! running cluster in its `-peers` joins it as a voter; a dead worker removed with
//! `DELETE /cluster/members/{address}` no longer counts for the majority, so the two left
//! survive the graceful stop of one of them; bad requests are clear 400s that change nothing.

mod support;

use std::time::Duration;

use support::{Cluster, Http, Worker, eventually, store_members};

async fn wait_members(http: &Http, expected: &[String]) {
    let mut expected = expected.to_vec();
    expected.sort();
    eventually("the expected members", Duration::from_secs(30), || {
        let (http, expected) = (http.clone(), expected.clone());
        async move { (store_members(&http).await == expected).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joins_a_running_cluster_and_a_dead_one_is_removed_for_good() {
    let root = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(root.path(), 3);
    let addr = |i: usize| cluster.address(i);
    let two = format!("{},{}", addr(0), addr(1));
    let mut workers: Vec<Worker> = (0..2)
        .map(|i| cluster.start_with_peers(i, &two, &[]))
        .collect();
    for w in &mut workers {
        w.wait_ready().await;
    }
    wait_members(&workers[0].http, &[addr(0), addr(1)]).await;
    let r = workers[0]
        .http
        .post("/invoke/myactor/m1/increment", r#"{"In": 1}"#)
        .await;
    assert_eq!(r.status, 200);

    // a third worker, started with all three addresses, joins the running cluster
    let mut third = cluster.start(2, &[]);
    third.wait_ready().await;
    let all = [addr(0), addr(1), addr(2)];
    for http in [&workers[0].http, &workers[1].http, &third.http] {
        wait_members(http, &all).await;
    }

    // bad requests: clear 400s, nothing changed
    let r = workers[0].http.delete("/cluster/members/nonsense").await;
    r.assert_error(400, "invalid_argument", &["host:port"]);
    let r = workers[0].http.delete("/cluster/members/127.0.0.1:1").await;
    r.assert_error(400, "invalid_argument", &["not a member", &addr(2)]);
    assert_eq!(store_members(&workers[0].http).await.len(), 3);

    // the third dies for good and is removed
    third.kill();
    let r = workers[1]
        .http
        .delete(&format!("/cluster/members/{}", addr(2)))
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    for w in &workers {
        wait_members(&w.http, &[addr(0), addr(1)]).await;
    }
    // so a graceful stop of one of the two left is no outage
    workers[1].sigterm();
    assert!(
        workers[1]
            .wait_exit(Duration::from_secs(30))
            .await
            .success()
    );
    wait_members(&workers[0].http, &[addr(0)]).await;
    // The first call may find the stopped worker's route (a retryable 503); a caller retries.
    let http = workers[0].http.clone();
    let r = eventually(
        "m1 served by the worker left",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move {
                let r = http
                    .post("/invoke/myactor/m1/increment", r#"{"In": 1}"#)
                    .await;
                if r.status != 200 {
                    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
                    assert!(r.header("retry-after").is_some(), "a retry can help");
                }
                (r.status == 200).then_some(r)
            }
        },
    )
    .await;
    assert_eq!(r.json()["Out"].as_i64(), Some(2));
    workers[0].sigterm();
    assert!(
        workers[0]
            .wait_exit(Duration::from_secs(30))
            .await
            .success()
    );
}
