//! Replication scenarios on real QUIC: replication to every node's own file, leader
//! failover, no quorum, node identity, snapshot catch-up, membership changes, foreign PSKs.

mod support;

use std::time::{Duration, Instant};

use francis_replication::{RaftRequestHandler, ReplicatedProvider, ReplicationError, node_id_of};
use francis_store::testing::{TTL, actor, at, register};
use francis_store::{Fence, Provider, StoreError};
use francis_transport::Limits;
use support::*;

fn key(i: usize) -> francis_core::ActorRef {
    actor("counter", &format!("k{i:04}"))
}

async fn local_state(p: &ReplicatedProvider, i: usize) -> Option<Vec<u8>> {
    p.local_store()
        .get_state(&key(i), at(0))
        .await
        .expect("read the local store")
        .map(|s| s.data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_node_is_applied_to_every_nodes_own_file() {
    let mut c = Cluster::start(3).await;
    let f = c.follower().await;
    let writer = c.provider(f);
    register(&writer, "h1", &["counter"], at(0)).await;
    let placed = writer.claim(&key(1), "h1", at(1), TTL).await.unwrap();
    writer
        .set_state(&key(1), b"41", None, Fence::Epoch(placed.epoch))
        .await
        .unwrap();
    // linearizable reads through every node see it at once
    for (_, n) in c.running() {
        let s = n.provider.get_state(&key(1), at(2)).await.unwrap();
        assert_eq!(s.map(|s| s.data), Some(b"41".to_vec()));
        let p = n.provider.lookup(&key(1), at(2), TTL).await.unwrap();
        assert_eq!(p, Some(placed.clone()));
    }
    // and every node's own SQLite file holds the rows once it applied them
    for i in 0..3 {
        let p = c.provider(i);
        eventually(
            "the row in each node's file",
            Duration::from_secs(5),
            || {
                let p = p.clone();
                async move { local_state(&p, 1).await == Some(b"41".to_vec()) }
            },
        )
        .await;
    }
    // the files are distinct databases: stop everything and read one file directly
    c.stop_all().await;
    let direct = francis_store_sqlite::SqliteProvider::open(c.data_path(2), Default::default())
        .await
        .unwrap();
    assert_eq!(
        direct
            .get_state(&key(1), at(2))
            .await
            .unwrap()
            .map(|s| s.data),
        Some(b"41".to_vec())
    );
    direct.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_leader_loses_no_acknowledged_write_and_service_resumes() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let f = c.follower().await;
    let writer = c.provider(f);
    register(&writer, "h1", &["counter"], at(0)).await;

    let total = 60;
    let stop_after = 20;
    let mut acked: Vec<(usize, u64)> = Vec::new(); // (key, epoch)
    let mut stopped_at: Option<Instant> = None;
    let mut resumed_after: Option<Duration> = None;
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while i < total {
        assert!(Instant::now() < deadline, "writes did not resume");
        if i == stop_after && stopped_at.is_none() {
            c.stop(leader).await;
            stopped_at = Some(Instant::now());
        }
        // a claim then a fenced state write; an error is retried (both are idempotent)
        let r = async {
            let p = writer.claim(&key(i), "h1", at(10), TTL).await?;
            writer
                .set_state(
                    &key(i),
                    i.to_string().as_bytes(),
                    None,
                    Fence::Epoch(p.epoch),
                )
                .await?;
            Ok::<_, StoreError>(p.epoch)
        }
        .await;
        match r {
            Ok(epoch) => {
                if let (Some(t), None) = (stopped_at, resumed_after) {
                    resumed_after = Some(t.elapsed());
                }
                acked.push((i, epoch));
                i += 1;
            }
            Err(e) => {
                assert!(
                    stopped_at.is_some(),
                    "a write failed before the leader stopped: {e}"
                );
            }
        }
    }
    let resumed = resumed_after.expect("writes resumed after the leader stopped");
    assert!(
        resumed < Duration::from_secs(8),
        "writes resumed only after {resumed:?}"
    );
    let new_leader = c.wait_leader().await;
    assert_ne!(new_leader, leader);
    // health: the new leader names the stopped node; the follower, hearing from its leader,
    // names nobody
    let stopped = vec![c.addrs[leader].clone()];
    let follower = (0..3).find(|i| *i != leader && *i != new_leader).unwrap();
    let (p_new, p_follower) = (c.provider(new_leader), c.provider(follower));
    eventually("the health report", Duration::from_secs(10), || {
        let (p_new, p_follower, stopped) = (p_new.clone(), p_follower.clone(), stopped.clone());
        async move {
            p_new.status().unreachable == stopped && p_follower.status().unreachable.is_empty()
        }
    })
    .await;
    // every acknowledged write is there, through every surviving node
    for (_, n) in c.running() {
        for (k, epoch) in &acked {
            let s = n.provider.get_state(&key(*k), at(11)).await.unwrap();
            assert_eq!(
                s.map(|s| s.data),
                Some(k.to_string().into_bytes()),
                "key {k}"
            );
            let p = n.provider.lookup(&key(*k), at(11), TTL).await.unwrap();
            assert_eq!(p.map(|p| p.epoch), Some(*epoch), "placement of key {k}");
        }
    }
    // the old leader comes back and catches up
    c.restart(leader).await;
    let back = c.provider(leader);
    eventually(
        "the restarted node catches up",
        Duration::from_secs(10),
        || {
            let back = back.clone();
            async move {
                local_state(&back, total - 1).await == Some((total - 1).to_string().into_bytes())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_fail_fast_naming_the_stopped_peer_then_resume() {
    let mut c = Cluster::start(2).await;
    let leader = c.leader().await;
    let other = 1 - leader;
    let survivor = c.provider(leader);
    survivor
        .set_state(&key(1), b"1", None, Fence::Unfenced)
        .await
        .unwrap();
    let stopped_addr = c.addrs[other].clone();
    c.stop(other).await;

    // the leader lost its only peer: writes and reads answer NoQuorum within seconds
    for attempt in 0..2 {
        let started = Instant::now();
        let err = survivor
            .set_state(&key(2), b"2", None, Fence::Unfenced)
            .await
            .expect_err("no write without a quorum");
        let took = started.elapsed();
        match &err {
            StoreError::NoQuorum { unreachable } => {
                assert_eq!(
                    unreachable,
                    &vec![stopped_addr.clone()],
                    "attempt {attempt}"
                );
            }
            other => panic!("expected NoQuorum, got {other}"),
        }
        assert!(err.to_string().contains(&stopped_addr), "{err}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
    let read = survivor.get_state(&key(1), at(0)).await;
    assert!(matches!(read, Err(StoreError::NoQuorum { .. })), "{read:?}");
    assert_eq!(survivor.status().unreachable, vec![stopped_addr.clone()]);

    // the stopped node comes back: service resumes by itself, nothing acknowledged is lost
    c.restart(other).await;
    eventually("writes succeed again", Duration::from_secs(15), || {
        let s = survivor.clone();
        async move {
            s.set_state(&key(3), b"3", None, Fence::Unfenced)
                .await
                .is_ok()
        }
    })
    .await;
    for n in [leader, other] {
        let p = c.provider(n);
        let s = p.get_state(&key(1), at(0)).await.unwrap();
        assert_eq!(s.map(|s| s.data), Some(b"1".to_vec()));
        let s = p.get_state(&key(3), at(0)).await.unwrap();
        assert_eq!(s.map(|s| s.data), Some(b"3".to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_quorum_also_fails_fast() {
    let mut c = Cluster::start(2).await;
    let leader = c.leader().await;
    let follower = 1 - leader;
    let leader_addr = c.addrs[leader].clone();
    c.stop(leader).await;
    let p = c.provider(follower);
    let started = Instant::now();
    let err = p
        .set_state(&key(1), b"1", None, Fence::Unfenced)
        .await
        .expect_err("no write without a quorum");
    assert!(
        matches!(&err, StoreError::NoQuorum { unreachable } if unreachable == &vec![leader_addr.clone()]),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.db");
    let handler = RaftRequestHandler::new();
    let t = transport("127.0.0.1:0".parse().unwrap(), PSK, &handler);
    let addr = t.local_addr().to_string();
    let p = ReplicatedProvider::start(config(&addr, &[], data.clone()), t.clone(), &handler)
        .await
        .unwrap();
    assert_eq!(p.node_id(), node_id_of(&addr));
    p.set_state(&key(1), b"1", None, Fence::Unfenced)
        .await
        .unwrap();
    p.shutdown().await;

    // the same file under another address
    let other = "127.0.0.1:1".to_string();
    let err = ReplicatedProvider::start(config(&other, &[], data.clone()), t.clone(), &handler)
        .await
        .expect_err("another node's database");
    match &err {
        ReplicationError::IdentityMismatch {
            node_id, address, ..
        } => {
            assert_eq!(*node_id, node_id_of(&addr));
            assert_eq!(address, &addr);
        }
        other => panic!("expected IdentityMismatch, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("belongs to node") && msg.contains(&addr),
        "{msg}"
    );

    // the rightful node still opens it, with its data
    let p = ReplicatedProvider::start(config(&addr, &[], data), t.clone(), &handler)
        .await
        .unwrap();
    let s = p.get_state(&key(1), at(0)).await.unwrap();
    assert_eq!(s.map(|s| s.data), Some(b"1".to_vec()));
    p.shutdown().await;
    t.shutdown().await;
}

fn compact_often(c: &mut francis_replication::ReplicationConfig) {
    c.snapshot_every = 10;
    c.logs_to_keep = 0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_compaction_catches_up_from_a_snapshot() {
    let mut c = Cluster::start_tuned(3, compact_often).await;
    let leader = c.leader().await;
    let down = c.follower().await;
    let p = c.provider(leader);
    p.set_state(&key(0), b"0", None, Fence::Unfenced)
        .await
        .unwrap();
    let down_applied = c.provider(down).status().last_applied;
    c.stop(down).await;
    let n = 60;
    for i in 0..n {
        p.set_state(&key(i), i.to_string().as_bytes(), None, Fence::Unfenced)
            .await
            .unwrap();
    }
    eventually(
        "the leader's log compacted",
        Duration::from_secs(10),
        || {
            let p = p.clone();
            async move { p.status().snapshot.is_some() && p.log_len().await.unwrap() < 20 }
        },
    )
    .await;
    // every running node compacted past what the stopped node has: no log can catch it up
    for (_, node) in c.running() {
        eventually(
            "compaction past the stopped node",
            Duration::from_secs(10),
            || {
                let p = node.provider.clone();
                async move { p.status().purged > down_applied }
            },
        )
        .await;
    }

    c.restart(down).await;
    let back = c.provider(down);
    eventually(
        "the restarted node has every write",
        Duration::from_secs(15),
        || {
            let back = back.clone();
            async move {
                local_state(&back, 0).await == Some(b"0".to_vec())
                    && local_state(&back, n - 1).await == Some((n - 1).to_string().into_bytes())
            }
        },
    )
    .await;
    // and it is a full member again: a write through it is applied everywhere
    back.set_state(&key(n), b"last", None, Fence::Unfenced)
        .await
        .unwrap();
    for (_, node) in c.running() {
        let s = node.provider.get_state(&key(n), at(0)).await.unwrap();
        assert_eq!(s.map(|s| s.data), Some(b"last".to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_through_the_library() {
    let mut c = Cluster::start_tuned(3, compact_often).await;
    let p = c.provider(c.follower().await);
    for i in 0..30 {
        p.set_state(&key(i), i.to_string().as_bytes(), None, Fence::Unfenced)
            .await
            .unwrap();
    }
    // a fourth node whose peers name the running cluster joins it by itself
    let handler = RaftRequestHandler::new();
    let t = transport("127.0.0.1:0".parse().unwrap(), PSK, &handler);
    let addr = t.local_addr().to_string();
    let mut peers = c.addrs.clone();
    peers.push(addr.clone());
    let mut cfg = config(&addr, &peers, c.dir.path().join("node-new.db"));
    compact_often(&mut cfg);
    let new = ReplicatedProvider::start(cfg, t.clone(), &handler)
        .await
        .unwrap();
    eventually(
        "the new node is a voting member",
        Duration::from_secs(20),
        || {
            let p = p.clone();
            let addr = addr.clone();
            async move { p.status().members.contains(&addr) }
        },
    )
    .await;
    eventually("the new node caught up", Duration::from_secs(10), || {
        let new = new.clone();
        async move { local_state(&new, 29).await == Some(b"29".to_vec()) }
    })
    .await;
    assert_eq!(p.status().members.len(), 4);
    // reads through it are linearizable
    let s = new.get_state(&key(0), at(0)).await.unwrap();
    assert_eq!(s.map(|s| s.data), Some(b"0".to_vec()));

    // an operator removes it again; the cluster keeps serving
    p.remove_member(&addr).await.unwrap();
    eventually(
        "the node is no longer a member",
        Duration::from_secs(10),
        || {
            let p = p.clone();
            let addr = addr.clone();
            async move { !p.status().members.contains(&addr) }
        },
    )
    .await;
    new.shutdown().await;
    t.shutdown().await;
    p.set_state(&key(99), b"99", None, Fence::Unfenced)
        .await
        .unwrap();
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_psk_cannot_join_vote_or_read() {
    let c = Cluster::start(2).await;
    let p = c.provider(c.leader().await);
    p.set_state(&key(1), b"secret", None, Fence::Unfenced)
        .await
        .unwrap();

    // a stranger configured with the cluster's addresses but another PSK
    let dir = tempfile::tempdir().unwrap();
    let handler = RaftRequestHandler::new();
    let t = transport("127.0.0.1:0".parse().unwrap(), OTHER_PSK, &handler);
    let addr = t.local_addr().to_string();
    let mut peers = c.addrs.clone();
    peers.push(addr.clone());
    let stranger = ReplicatedProvider::start(
        config(&addr, &peers, dir.path().join("s.db")),
        t.clone(),
        &handler,
    )
    .await
    .unwrap();
    // it cannot read anything nor write
    let read = stranger.get_state(&key(1), at(0)).await;
    assert!(matches!(read, Err(StoreError::NoQuorum { .. })), "{read:?}");
    let write = stranger
        .set_state(&key(2), b"x", None, Fence::Unfenced)
        .await;
    assert!(
        matches!(write, Err(StoreError::NoQuorum { .. })),
        "{write:?}"
    );
    assert_eq!(local_state(&stranger, 1).await, None);
    // its raft messages are refused by the transport
    let raw = t
        .request_any_host(
            c.addrs[0].parse().unwrap(),
            francis_transport::proto::Request {
                body: Some(francis_transport::proto::request::Body::Raft(
                    francis_transport::proto::RaftRequest {
                        kind: "forward".into(),
                        payload: bytes::Bytes::from_static(b"\"Status\""),
                    },
                )),
            },
        )
        .await;
    assert!(
        matches!(
            raw,
            Err(francis_transport::TransportError::AuthenticationFailed { .. })
        ),
        "{raw:?}"
    );
    // the cluster is unchanged: same members, same leader, still serving
    assert_eq!(p.status().members.len(), 2);
    assert!(!p.status().members.contains(&addr));
    p.set_state(&key(3), b"3", None, Fence::Unfenced)
        .await
        .unwrap();
    stranger.shutdown().await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_refuses_the_majority_serves_and_healing_catches_up() {
    let c = Cluster::start(3).await;
    let old = c.leader().await;
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let p_old = c.provider(old);
    let p_major = c.provider(majority[0]);
    p_major
        .set_state(&key(1), b"before", None, Fence::Unfenced)
        .await
        .unwrap();

    c.partition(&[old]);
    // the majority side elects a new leader and keeps serving
    eventually(
        "a write on the majority side",
        Duration::from_secs(10),
        || {
            let p = p_major.clone();
            async move {
                p.set_state(&key(2), b"majority", None, Fence::Unfenced)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    let new = majority
        .iter()
        .copied()
        .find(|i| c.provider(*i).status().role == "leader")
        .expect("a leader on the majority side");
    assert_ne!(new, old);
    // the minority side refuses reads and writes, fast, naming the peers it lost
    let started = Instant::now();
    let err = p_old
        .set_state(&key(3), b"minority", None, Fence::Unfenced)
        .await
        .expect_err("the minority cannot write");
    match &err {
        StoreError::NoQuorum { unreachable } => {
            let mut expected: Vec<String> = majority.iter().map(|i| c.addrs[*i].clone()).collect();
            expected.sort();
            assert_eq!(unreachable, &expected);
        }
        other => panic!("expected NoQuorum, got {other}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let read = p_old.get_state(&key(1), at(0)).await;
    assert!(matches!(read, Err(StoreError::NoQuorum { .. })), "{read:?}");

    // heal: the old leader follows the new one and catches up; its refused write is gone
    c.heal();
    eventually("the old leader caught up", Duration::from_secs(10), || {
        let p = p_old.clone();
        async move { local_state(&p, 2).await == Some(b"majority".to_vec()) }
    })
    .await;
    for i in 0..3 {
        let p = c.provider(i);
        let s = p.get_state(&key(3), at(0)).await.unwrap();
        assert_eq!(s, None, "a write refused for lack of quorum was applied");
        let s = p.get_state(&key(1), at(0)).await.unwrap();
        assert_eq!(s.map(|s| s.data), Some(b"before".to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_started_one_after_the_other_form_one_cluster() {
    let dir = tempfile::tempdir().unwrap();
    // reserve two addresses; the second node is not running at first
    let (ha, hb) = (RaftRequestHandler::new(), RaftRequestHandler::new());
    let ta = transport("127.0.0.1:0".parse().unwrap(), PSK, &ha);
    let tb = transport("127.0.0.1:0".parse().unwrap(), PSK, &hb);
    let (a, b) = (ta.local_addr().to_string(), tb.local_addr().to_string());
    let b_bind = tb.local_addr();
    tb.shutdown().await;
    drop(tb);
    let peers = vec![a.clone(), b.clone()];

    let pa =
        ReplicatedProvider::start(config(&a, &peers, dir.path().join("a.db")), ta.clone(), &ha)
            .await
            .unwrap();
    // alone, it has no quorum
    let err = pa.set_state(&key(1), b"1", None, Fence::Unfenced).await;
    assert!(
        matches!(&err, Err(StoreError::NoQuorum { unreachable }) if unreachable == &vec![b.clone()]),
        "{err:?}"
    );

    // the second starts later, with the same peers: one cluster forms
    let tb = transport_again(b_bind, PSK, &hb, &Cut::default()).await;
    let pb =
        ReplicatedProvider::start(config(&b, &peers, dir.path().join("b.db")), tb.clone(), &hb)
            .await
            .unwrap();
    eventually(
        "a write through the second node",
        Duration::from_secs(10),
        || {
            let pb = pb.clone();
            async move {
                pb.set_state(&key(2), b"2", None, Fence::Unfenced)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    let s = pa.get_state(&key(2), at(0)).await.unwrap();
    assert_eq!(s.map(|s| s.data), Some(b"2".to_vec()));
    let mut members = pa.status().members;
    members.sort();
    let mut expected = peers.clone();
    expected.sort();
    assert_eq!(members, expected);
    assert_eq!(pb.status().members, members);
    for (p, t) in [(pa, ta), (pb, tb)] {
        p.shutdown().await;
        t.shutdown().await;
    }
}

/// A JSON document of about `bytes` bytes (what state and alarm data are).
fn document(bytes: usize) -> Vec<u8> {
    let mut doc = b"{\"blob\":\"".to_vec();
    doc.extend(std::iter::repeat_n(b'x', bytes.saturating_sub(11)));
    doc.extend_from_slice(b"\"}");
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_up_to_the_message_limit_commit_and_larger_ones_are_refused_before_the_log() {
    let c = Cluster::start(3).await;
    let f = c.follower().await;
    let writer = c.provider(f);
    register(&writer, "h1", &["counter"], at(0)).await;
    let placed = writer.claim(&key(1), "h1", at(1), TTL).await.unwrap();
    let fence = Fence::Epoch(placed.epoch);
    let other = writer.claim(&key(2), "h1", at(1), TTL).await.unwrap();
    let limit = Limits::default().max_message_size;
    // Each takes longer to ship and persist than a heartbeat interval, yet commits, and the
    // cluster keeps serving small writes afterwards.
    for size in [1 << 20, 4 << 20, limit] {
        let doc = document(size);
        writer
            .set_state(&key(1), &doc, None, fence)
            .await
            .unwrap_or_else(|e| panic!("a write of {size} bytes: {e}"));
        let read = writer.get_state(&key(1), at(2)).await.unwrap();
        assert_eq!(read.map(|s| s.data.len()), Some(doc.len()));
        writer
            .set_state(&key(2), b"1", None, Fence::Epoch(other.epoch))
            .await
            .expect("a small write after a large one");
    }
    // Over the limit: refused at once, as bad input, and nothing reaches the log (the
    // leader applies every acknowledged write before it answers).
    let too_big = document(limit + 64 * 1024);
    let leader = c.leader().await;
    let last_applied = c.provider(leader).status().last_applied;
    let err = writer
        .set_state(&key(1), &too_big, None, fence)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("at most"), "{err}");
    assert_eq!(c.provider(leader).status().last_applied, last_applied);
    // Every node's own file holds the last large document.
    for i in 0..3 {
        let p = c.provider(i);
        eventually("the document in each file", Duration::from_secs(20), || {
            let p = p.clone();
            async move { local_state(&p, 1).await.map(|d| d.len()) == Some(limit) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_of_the_leader_sends_writes_made_through_a_follower_to_the_next_leader() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let f = c.follower().await;
    let writer = c.provider(f);
    register(&writer, "h1", &["counter"], at(0)).await;
    let writes = tokio::spawn(async move {
        let mut failures = Vec::new();
        for i in 0..40 {
            let r = async {
                let p = writer.claim(&key(i), "h1", at(10), TTL).await?;
                writer
                    .set_state(&key(i), b"1", None, Fence::Epoch(p.epoch))
                    .await
            }
            .await;
            if let Err(e) = r {
                failures.push(format!("write {i}: {e}"));
            }
        }
        failures
    });
    // Stop the leader while the writes run: they wait for the next leader instead of
    // getting "raft stopped" or "not running".
    let p = c.provider(f);
    eventually("some writes", Duration::from_secs(10), || {
        let p = p.clone();
        async move { local_state(&p, 5).await.is_some() }
    })
    .await;
    c.stop(leader).await;
    let failures = writes.await.unwrap();
    // No write is answered "raft stopped", "not running" or "no quorum": they wait for the
    // next leader. The one write whose connection the stopping leader closes under it (the
    // writes run one at a time) may be answered, truthfully, that it may or may not have been
    // applied.
    assert!(failures.len() <= 1, "{failures:#?}");
    for f in &failures {
        assert!(f.contains("may or may not have been applied"), "{f}");
    }
    assert_ne!(c.wait_leader().await, leader);
    // Every write that was acknowledged is there.
    let p = c.provider(f);
    for i in 0..40 {
        if !failures
            .iter()
            .any(|f| f.starts_with(&format!("write {i}:")))
        {
            assert_eq!(
                p.get_state(&key(i), at(11)).await.unwrap().map(|s| s.data),
                Some(b"1".to_vec()),
                "write {i}"
            );
        }
    }
}

/// Writes arriving together on a leader share log entries (a batch each), and every write
/// still gets its own answer: a stale epoch is refused alone, the others apply. Two large
/// writes that would not fit one entry together each commit in an entry of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_and_each_gets_its_own_answer() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let f = c.follower().await;
    let (l, fp) = (c.provider(leader), c.provider(f));
    register(&l, "h1", &["counter"], at(0)).await;
    let mut epochs = Vec::new();
    for i in 0..32 {
        epochs.push(l.claim(&key(i), "h1", at(1), TTL).await.unwrap().epoch);
    }
    let before = l.status().last_applied.unwrap();
    let writes: Vec<_> = (0..96)
        .map(|n| {
            let i = n % 32;
            // a third of them stale; the rest through the leader or forwarded by a follower
            let (via, epoch, value) = match n / 32 {
                0 => (l.clone(), epochs[i], format!("{n}")),
                1 => (fp.clone(), epochs[i] + 1, "stale".to_string()),
                _ => (fp.clone(), epochs[i], format!("{n}")),
            };
            tokio::spawn(async move {
                let fence = Fence::Epoch(epoch);
                (
                    n,
                    via.set_state(&key(i), value.as_bytes(), None, fence).await,
                )
            })
        })
        .collect();
    for w in writes {
        let (n, result) = w.await.unwrap();
        match (n / 32, result) {
            (1, Err(StoreError::Fenced { epoch, .. })) => assert_eq!(epoch, epochs[n % 32] + 1),
            (1, other) => panic!("write {n} with a stale epoch: {other:?}"),
            (_, Ok(())) => {}
            (_, Err(e)) => panic!("write {n}: {e}"),
        }
    }
    let entries = l.status().last_applied.unwrap() - before;
    assert!(
        entries <= 48,
        "96 writes took {entries} log entries: they were not batched"
    );
    for i in 0..32 {
        // Each actor got two of the writes that apply; one of them is last.
        let got = l.get_state(&key(i), at(2)).await.unwrap().unwrap().data;
        let got = String::from_utf8(got).unwrap();
        assert!(
            got == format!("{i}") || got == format!("{}", i + 64),
            "actor {i} holds {got:?}"
        );
    }

    let big = document(9 << 20);
    let (a, b) = (l.clone(), fp.clone());
    let (ea, eb) = (epochs[0], epochs[1]);
    let (da, db) = (big.clone(), big.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { a.set_state(&key(0), &da, None, Fence::Epoch(ea)).await }),
        tokio::spawn(async move { b.set_state(&key(1), &db, None, Fence::Epoch(eb)).await }),
    );
    ra.unwrap().expect("the first large write");
    rb.unwrap().expect("the second large write");
    for i in [0, 1] {
        let read = l.get_state(&key(i), at(2)).await.unwrap();
        assert_eq!(read.map(|s| s.data.len()), Some(big.len()));
    }
}

/// Two nodes, each stopped gracefully in turn (the leader first, then the other): a node that
/// leaves the voter set before it stops leaves the other with a quorum of one, so writes go on
/// through it; started again on its files, the node asks to be added back, catches up and
/// votes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_each_leave_in_turn_the_other_serves_and_the_leaver_rejoins() {
    let mut c = Cluster::start(2).await;
    let first = c.leader().await;
    let second = 1 - first;
    let mut written = 0;
    for leaving in [first, second] {
        let stays = 1 - leaving;
        assert!(
            c.provider(leaving).leave().await.unwrap(),
            "node {leaving} left"
        );
        c.stop(leaving).await;
        let survivor = c.provider(stays);
        assert_eq!(survivor.status().members, vec![c.addrs[stays].clone()]);
        // writes through the survivor go on (after at most an election of one)
        let start = written;
        eventually(
            "a write through the survivor",
            Duration::from_secs(10),
            || {
                let survivor = survivor.clone();
                async move {
                    survivor
                        .set_state(&key(start), b"w", None, Fence::Unfenced)
                        .await
                        .is_ok()
                }
            },
        )
        .await;
        for i in start + 1..start + 20 {
            survivor
                .set_state(&key(i), b"w", None, Fence::Unfenced)
                .await
                .unwrap_or_else(|e| panic!("write {i} through the survivor: {e}"));
        }
        written = start + 20;
        // the survivor is the only voter: it cannot leave
        assert!(!survivor.leave().await.unwrap());
        // the leaver comes back, is a voter again and has every write
        c.restart(leaving).await;
        let back = c.provider(leaving);
        let both = {
            let mut m = c.addrs.clone();
            m.sort();
            m
        };
        eventually(
            "the restarted node is a voter again",
            Duration::from_secs(20),
            || {
                let (survivor, both) = (survivor.clone(), both.clone());
                async move {
                    let mut m = survivor.status().members;
                    m.sort();
                    m == both
                }
            },
        )
        .await;
        let last = written - 1;
        eventually(
            "the restarted node caught up",
            Duration::from_secs(10),
            || {
                let back = back.clone();
                async move { local_state(&back, last).await == Some(b"w".to_vec()) }
            },
        )
        .await;
        // a write through it needs both again, and commits
        back.set_state(&key(written), b"w", None, Fence::Unfenced)
            .await
            .unwrap();
        written += 1;
    }
    for i in 0..2 {
        c.stop(i).await;
    }
}
