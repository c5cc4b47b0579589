//! Behaviour specific to the SQLite provider: the file, its schema, group commit, several
//! providers (as processes would) sharing one file, and refused inputs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use francis_core::{AlarmProperties, Interval};
use francis_store::testing::{TTL, actor, at, register, registration};
use francis_store::{Fence, Provider, StoreError};
use francis_store_sqlite::{Durability, SCHEMA_VERSION, SqliteOptions, SqliteProvider};
use sqlx::{Connection, SqliteConnection};

async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("raw connection")
}

async fn open(path: &Path) -> SqliteProvider {
    SqliteProvider::open(path, SqliteOptions::default())
        .await
        .expect("open")
}

/// Providers opening one new file at the same moment (as the processes of a cluster starting
/// together do) all open it: switching to WAL mode is not waited for by SQLite's busy timeout,
/// so the provider retries it; every one then works on the one file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_opening_a_new_file_at_once_all_open_it() {
    for round in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("together{round}.db"));
        let opens: Vec<_> = (0..12)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(
                    async move { SqliteProvider::open(&path, SqliteOptions::default()).await },
                )
            })
            .collect();
        let mut providers = Vec::new();
        for o in opens {
            providers.push(o.await.unwrap().expect("every concurrent open succeeds"));
        }
        for (i, p) in providers.iter().enumerate() {
            register(p, &format!("h{i}"), &["t"], at(0)).await;
        }
        let hosts = providers[0].live_hosts(at(0), TTL).await.unwrap();
        assert_eq!(
            hosts.len(),
            providers.len(),
            "one file holds every registration"
        );
        for p in providers {
            p.close().await;
        }
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut raw(&path).await)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
}

#[tokio::test]
async fn creates_a_missing_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    assert!(!path.exists());
    let p = open(&path).await;
    assert!(path.exists(), "the file was created");
    let mut c = raw(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = sqlx::query_scalar("SELECT MAX(version) FROM francis_schema")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    p.close().await;
}

#[tokio::test]
async fn opens_sqlite_urls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("url.db");
    let url = format!("sqlite:{}", path.display());
    let p = SqliteProvider::open(&url, SqliteOptions::default())
        .await
        .unwrap();
    p.set_state(&actor("t", "a"), b"1", None, Fence::Unfenced)
        .await
        .unwrap();
    p.close().await;
    // the same file through its plain path
    let p = open(&path).await;
    assert!(
        p.get_state(&actor("t", "a"), at(0))
            .await
            .unwrap()
            .is_some()
    );
    p.close().await;
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/store.db");
    match SqliteProvider::open(&path, SqliteOptions::default()).await {
        Err(StoreError::Backend(text)) => {
            assert!(text.contains("unable to open"), "{text}");
        }
        other => panic!("expected a database error, got {other:?}"),
    }
    assert!(!path.exists());
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    let p = open(&path).await;
    p.set_state(&actor("t", "a"), b"kept", None, Fence::Unfenced)
        .await
        .unwrap();
    p.close().await;
    let mut c = raw(&path).await;
    sqlx::query("INSERT INTO francis_schema (version, name) VALUES (?1, 'from the future')")
        .bind(SCHEMA_VERSION + 7)
        .execute(&mut c)
        .await
        .unwrap();
    match SqliteProvider::open(&path, SqliteOptions::default()).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, SCHEMA_VERSION + 7);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let err = SqliteProvider::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("newer than this build"), "{err}");
    let data: Vec<u8> = sqlx::query_scalar("SELECT data FROM state")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(data, b"kept", "the refused database is untouched");
}

/// Holds the database's write lock from another connection so the provider's writer queues up
/// a batch, then checks that a fenced write in that batch fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fenced_write_does_not_spoil_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.db");
    let p = Arc::new(open(&path).await);
    register(&*p, "h1", &["t"], at(0)).await;
    let owned = actor("t", "owned");
    let placement = p.claim(&owned, "h1", at(0), TTL).await.unwrap();
    let before = p.writer_stats();

    let mut blocker = raw(&path).await;
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    const OPS: u64 = 50;
    let mut tasks = Vec::new();
    for i in 0..OPS {
        let p = p.clone();
        let owned = owned.clone();
        let stale = Fence::Epoch(placement.epoch + 1);
        tasks.push(tokio::spawn(async move {
            if i == OPS / 2 {
                p.set_state(&owned, b"stale", None, stale).await
            } else {
                p.set_state(&actor("t", &format!("a{i}")), b"ok", None, Fence::Unfenced)
                    .await
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(4);
    while p.writer_stats().submitted < before.submitted + OPS {
        assert!(Instant::now() < deadline, "writes were not queued in time");
        tokio::task::yield_now().await;
    }
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();

    for (i, t) in tasks.into_iter().enumerate() {
        let result = t.await.unwrap();
        if i as u64 == OPS / 2 {
            assert!(
                matches!(result, Err(StoreError::Fenced { .. })),
                "{result:?}"
            );
        } else {
            result.unwrap_or_else(|e| panic!("write {i}: {e}"));
        }
    }
    let after = p.writer_stats();
    assert!(
        after.batches - before.batches <= 2,
        "{OPS} queued writes took {} transactions",
        after.batches - before.batches
    );
    assert_eq!(
        after.committed_batches - before.committed_batches,
        after.batches - before.batches
    );
    for i in (0..OPS).filter(|i| *i != OPS / 2) {
        let a = actor("t", &format!("a{i}"));
        assert_eq!(p.get_state(&a, at(0)).await.unwrap().unwrap().data, b"ok");
    }
    assert!(p.get_state(&owned, at(0)).await.unwrap().is_none());
}

/// Claims queued together run together (one read and one write for all of them) with the
/// outcome each would have had alone: distinct epochs, one placement for an actor claimed
/// several times, a capacity counted across the batch, refusals alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_queued_together_keep_their_one_by_one_outcomes() {
    use francis_store::ClaimRefusal;
    use francis_store::testing::registration;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claims.db");
    let p = Arc::new(open(&path).await);
    let reg = registration("h1", "addr-h1", &[("t", None), ("capped", Some(5))]);
    p.register_host(&reg, at(0), TTL).await.unwrap();
    let earlier = p
        .claim(&actor("t", "first"), "h1", at(0), TTL)
        .await
        .unwrap();
    let before = p.writer_stats();

    let mut blocker = raw(&path).await;
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    // 40 new actors, one actor 10 times, 12 claims on a type capped at 5, 4 on an unknown host
    let mut wanted = Vec::new();
    for i in 0..40 {
        wanted.push((actor("t", &format!("a{i}")), "h1"));
        if i % 4 == 0 {
            wanted.push((actor("t", "dup"), "h1"));
            wanted.push((actor("capped", &format!("c{i}")), "h1"));
            wanted.push((actor("t", &format!("lost{i}")), "h9"));
        }
        if i % 4 == 1 {
            wanted.push((actor("capped", &format!("c{i}")), "h1"));
        }
    }
    let n = wanted.len() as u64;
    let tasks: Vec<_> = wanted
        .iter()
        .cloned()
        .map(|(a, host)| {
            let p = p.clone();
            tokio::spawn(async move { p.claim(&a, host, at(1), TTL).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(4);
    while p.writer_stats().submitted < before.submitted + n {
        assert!(Instant::now() < deadline, "claims were not queued in time");
        tokio::task::yield_now().await;
    }
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();

    let mut epochs = std::collections::BTreeSet::new();
    let (mut dup_epoch, mut capped, mut at_capacity, mut unknown) = (None, 0, 0, 0);
    for ((a, host), t) in wanted.iter().zip(tasks) {
        match (t.await.unwrap(), a.actor_type(), *host) {
            (Ok(placed), "t", "h1") if a.actor_id() == "dup" => {
                assert_eq!(*dup_epoch.get_or_insert(placed.epoch), placed.epoch);
            }
            (Ok(placed), "t" | "capped", "h1") => {
                assert_eq!(placed.host_id, "h1");
                assert!(placed.epoch > earlier.epoch);
                assert!(epochs.insert(placed.epoch), "epoch {} twice", placed.epoch);
                capped += usize::from(a.actor_type() == "capped");
            }
            (
                Err(StoreError::ClaimRefused {
                    reason: ClaimRefusal::AtCapacity,
                    ..
                }),
                "capped",
                _,
            ) => at_capacity += 1,
            (
                Err(StoreError::ClaimRefused {
                    reason: ClaimRefusal::CandidateNotLive,
                    ..
                }),
                _,
                "h9",
            ) => unknown += 1,
            (other, ty, host) => panic!("{a} on {host} ({ty}): {other:?}"),
        }
    }
    let dup_epoch = dup_epoch.expect("dup was placed");
    assert!(epochs.insert(dup_epoch), "dup shares an epoch");
    assert_eq!((capped, at_capacity, unknown), (5, 15, 10));
    assert_eq!(p.count_placements("h1", "capped").await.unwrap(), 5);
    let after = p.writer_stats();
    assert!(
        after.batches - before.batches <= 2,
        "{n} queued claims took {} transactions",
        after.batches - before.batches
    );
    // what was written is what was answered, and the counter moved past every epoch
    for (a, host) in wanted.iter().filter(|(_, h)| *h == "h1") {
        if let Some(found) = p.lookup(a, at(1), TTL).await.unwrap() {
            assert!(
                epochs.contains(&found.epoch),
                "{a} stored with epoch {}",
                found.epoch
            );
        } else {
            assert_eq!(a.actor_type(), "capped", "{a} on {host} not stored");
        }
    }
    let highest = *epochs.last().unwrap();
    let next = p
        .claim(&actor("t", "after"), "h1", at(2), TTL)
        .await
        .unwrap();
    assert_eq!(next.epoch, highest + 1);
}

/// Two providers on one file behave as two processes would: SQLite's locks serialise their
/// writers, and a claim raced from both still has exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_providers_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = Arc::new(open(&path).await);
    let b = Arc::new(open(&path).await);
    register(&*a, "h1", &["t"], at(0)).await;
    register(&*b, "h2", &["t"], at(0)).await;
    assert_eq!(a.live_hosts(at(0), TTL).await.unwrap().len(), 2);

    let mut tasks = Vec::new();
    for i in 0..40 {
        let (p, candidate) = if i % 2 == 0 {
            (a.clone(), "h1")
        } else {
            (b.clone(), "h2")
        };
        tasks.push(tokio::spawn(async move {
            p.claim(&actor("t", &format!("x{}", i % 4)), candidate, at(1), TTL)
                .await
        }));
    }
    let mut placements = Vec::new();
    for t in tasks {
        placements.push(t.await.unwrap().unwrap());
    }
    let mut epochs = std::collections::HashMap::new();
    for pl in &placements {
        let e = epochs
            .entry(pl.actor.clone())
            .or_insert((pl.host_id.clone(), pl.epoch));
        assert_eq!(*e, (pl.host_id.clone(), pl.epoch), "one winner per actor");
    }
    assert_eq!(epochs.len(), 4);
    let distinct: std::collections::HashSet<u64> = epochs.values().map(|(_, e)| *e).collect();
    assert_eq!(distinct.len(), 4, "epochs are unique across both writers");
    Arc::try_unwrap(a).unwrap().close().await;
    Arc::try_unwrap(b).unwrap().close().await;
}

#[tokio::test]
async fn normal_durability_works_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("normal.db");
    let options = SqliteOptions::default()
        .durability(Durability::Normal)
        .read_connections(2)
        .max_batch(8)
        .queue_capacity(16);
    let p = SqliteProvider::open(&path, options.clone()).await.unwrap();
    p.set_state(&actor("t", "a"), b"n", None, Fence::Unfenced)
        .await
        .unwrap();
    p.close().await;
    let p = SqliteProvider::open(&path, options).await.unwrap();
    assert_eq!(
        p.get_state(&actor("t", "a"), at(0))
            .await
            .unwrap()
            .unwrap()
            .data,
        b"n"
    );
    p.close().await;
}

#[tokio::test]
async fn bad_registrations_are_refused_and_change_nothing() {
    let p = SqliteProvider::in_memory().await.unwrap();
    let cases = [
        registration("", "addr", &[("t", None)]),
        registration("h1", "", &[("t", None)]),
        registration("h1", "addr", &[("t", None), ("t", Some(2))]),
        registration("h1", "addr", &[("", None)]),
    ];
    for reg in cases {
        match p.register_host(&reg, at(0), TTL).await {
            Err(StoreError::InvalidArgument(m)) => assert!(!m.is_empty()),
            other => panic!("{reg:?}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(p.live_hosts(at(0), TTL).await.unwrap().is_empty());
}

#[tokio::test]
async fn unstorable_arguments_are_refused() {
    let p = SqliteProvider::in_memory().await.unwrap();
    let a = actor("t", "a");
    assert!(matches!(
        p.list_states("t", None, 0, false, at(0)).await,
        Err(StoreError::InvalidArgument(_))
    ));
    // An interval longer than the store's 64-bit nanoseconds cannot even be built, so no
    // alarm can carry one; the longest that can is stored exactly.
    assert!(Interval::new(Duration::from_secs(u64::MAX)).is_err());
    let longest = AlarmProperties {
        interval: Some(Interval::new(Duration::from_nanos(i64::MAX as u64)).unwrap()),
        ..AlarmProperties::once(at(0))
    };
    p.set_alarm(&a, "longest", &longest, Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(p.get_alarm(&a, "longest").await.unwrap(), Some(longest));
    let backwards = AlarmProperties {
        ttl: Some(at(-1)),
        ..AlarmProperties::once(at(0))
    };
    match p.set_alarm(&a, "x", &backwards, Fence::Unfenced).await {
        Err(StoreError::InvalidArgument(m)) => assert!(m.contains("ttl"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(p.get_alarm(&a, "x").await.unwrap().is_none());
}

#[tokio::test]
async fn corrupt_rows_are_reported_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.db");
    let p = open(&path).await;
    let a = actor("t", "a");
    p.set_alarm(&a, "x", &AlarmProperties::once(at(0)), Fence::Unfenced)
        .await
        .unwrap();
    let mut c = raw(&path).await;
    sqlx::query("UPDATE alarms SET data = ?1, interval_ns = -5")
        .bind(b"not json".to_vec())
        .execute(&mut c)
        .await
        .unwrap();
    match p.get_alarm(&a, "x").await {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("interval"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    sqlx::query("UPDATE alarms SET interval_ns = NULL")
        .execute(&mut c)
        .await
        .unwrap();
    match p.get_alarm(&a, "x").await {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("JSON"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    p.close().await;
}
