//! Two application workers and one `-store-only` worker (a voter that hosts no actors), each
//! with its own `data.db`, replicated: no actor is ever placed on the store-only worker, calls
//! through it reach the others, and after a kill -9 of either application worker the other one
//! keeps a quorum with the store-only worker and serves every actor once the dead worker's
//! lease has run out, with every acknowledged increment.

mod support;

use std::time::Duration;

use support::{Cluster, eventually};

const ACTORS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_only_voter_keeps_the_quorum_when_either_application_worker_dies() {
    for victim in [0, 1] {
        let root = tempfile::tempdir().unwrap();
        let cluster = Cluster::new(root.path(), 3);
        let mut workers = vec![
            cluster.start(0, &[]),
            cluster.start(1, &[]),
            cluster.start(2, &["-store-only"]),
        ];
        for w in &mut workers {
            w.wait_ready().await;
        }
        let voter = workers[2].host_address.clone();
        // calls through every worker, the store-only one included; none runs on it
        let mut owners = std::collections::HashSet::new();
        for i in 0..ACTORS {
            let via = &workers[i % 3];
            let r = via
                .http
                .post(&format!("/invoke/myactor/s{i}/increment"), r#"{"In": 1}"#)
                .await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let owner = r.header("x-francis-host").unwrap();
            assert_ne!(owner, voter, "an actor was placed on the store-only worker");
            owners.insert(owner);
        }
        assert_eq!(
            owners.len(),
            2,
            "the actors are spread over the application workers"
        );
        workers[victim].kill();
        let survivor = 1 - victim;
        // every actor is served again (by the surviving application worker), counts intact
        for i in 0..ACTORS {
            let path = format!("/invoke/myactor/s{i}/increment");
            let http = workers[2].http.clone();
            let r = eventually(&format!("s{i} served"), Duration::from_secs(40), || {
                let (http, path) = (http.clone(), path.clone());
                async move {
                    let r = http.post(&path, r#"{"In": 1}"#).await;
                    (r.status == 200).then_some(r)
                }
            })
            .await;
            // Nothing acknowledged is lost (a call that failed while the owner was dying may
            // still have run, so more is possible).
            let out = r.json()["Out"].as_i64().expect("Out");
            assert!(out >= 2, "s{i} lost its acknowledged increment: {out}");
            assert_eq!(
                r.header("x-francis-host").unwrap(),
                workers[survivor].host_address
            );
        }
        for i in [survivor, 2] {
            workers[i].sigterm();
        }
        for i in [survivor, 2] {
            assert!(
                workers[i]
                    .wait_exit(Duration::from_secs(30))
                    .await
                    .success()
            );
        }
    }
}
