//! Behaviour specific to the PostgreSQL provider: connection errors, the prefixed schema and
//! its migrations, several providers (as separate hosts would) racing on one database, and a
//! connection lost and regained, and batches as one transaction. Tests needing a server use `FRANCIS_TEST_POSTGRES_URL` and
//! say they are skipped without it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use francis_core::AlarmProperties;
use francis_store::testing::{TTL, actor, at, register, registration};
use francis_store::{ClaimRefusal, Fence, LeaseRequest, Op, Provider, Reply, StoreError};
use francis_store_postgres::{
    POSTGRES_SCHEMA_VERSION, PostgresOptions, PostgresProvider, PostgresTestTables,
    TEST_POSTGRES_URL_ENV,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Private tables in the test database, or `None` after printing why the test is skipped.
fn tables_or_skip(test: &str) -> Option<PostgresTestTables> {
    let tables = PostgresTestTables::from_env();
    if tables.is_none() {
        println!("skipped {test}: {TEST_POSTGRES_URL_ENV} is not set");
    }
    tables
}

async fn raw(url: &str) -> PgConnection {
    PgConnection::connect(url).await.expect("raw connection")
}

/// A local port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_naming_host_and_port() {
    let port = closed_port().await;
    let url = format!("postgres://francis:hunter2-secret@127.0.0.1:{port}/app");
    let started = Instant::now();
    let err = PostgresProvider::connect(
        &url,
        PostgresOptions::default().acquire_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("database app"), "{text}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    assert!(!format!("{err:?}").contains("hunter2"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_acquire_timeout() {
    // accepts TCP connections and never says a word
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let err = PostgresProvider::connect(
        &format!("postgres://u:pw@{addr}/db"),
        PostgresOptions::default().acquire_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("no answer"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    silent.abort();
}

#[tokio::test]
async fn bad_urls_and_prefixes_are_refused_before_connecting() {
    for url in [
        "postgres://u:topsecret@host:notaport/db",
        "mysql://u:topsecret@host/db",
    ] {
        match PostgresProvider::connect(url, PostgresOptions::default()).await {
            Err(StoreError::InvalidArgument(text)) => {
                assert!(text.contains("invalid PostgreSQL URL"), "{text}");
                assert!(!text.contains("topsecret"), "the password leaked: {text}");
            }
            other => panic!("{url}: expected InvalidArgument, got {other:?}"),
        }
    }
    for prefix in ["Upper_", "x; DROP TABLE y; --", "9lives_", "a-b"] {
        match PostgresProvider::connect(
            "postgres://u@127.0.0.1:1/db",
            PostgresOptions::default().table_prefix(prefix),
        )
        .await
        {
            Err(StoreError::InvalidArgument(text)) => {
                assert!(text.contains("table prefix"), "{text}")
            }
            other => panic!("prefix {prefix:?}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn tables_carry_the_prefix_and_the_schema_version() {
    let Some(tables) = tables_or_skip("tables_carry_the_prefix_and_the_schema_version") else {
        return;
    };
    let p = tables.connect().await;
    assert_eq!(p.table_prefix(), tables.prefix());
    let mut c = raw(tables.url()).await;
    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class
         WHERE relkind IN ('r', 'S') AND starts_with(relname::text, $1)",
    )
    .bind(tables.prefix())
    .fetch_all(&mut c)
    .await
    .unwrap();
    names.sort();
    let expected: Vec<String> = [
        "alarms",
        "epoch",
        "host_types",
        "hosts",
        "placements",
        "schema_version",
        "state",
    ]
    .iter()
    .map(|t| format!("{}{t}", tables.prefix()))
    .collect();
    assert_eq!(names, expected);
    let version: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT MAX(version) FROM {}schema_version",
        tables.prefix()
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(version, POSTGRES_SCHEMA_VERSION);

    // another prefix is another store
    let other = PostgresTestTables::new(tables.url());
    let q = other.connect().await;
    p.set_state(&actor("t", "a"), b"mine", None, Fence::Unfenced)
        .await
        .unwrap();
    assert!(
        q.get_state(&actor("t", "a"), at(0))
            .await
            .unwrap()
            .is_none()
    );
    p.close().await;
    q.close().await;
    assert_eq!(other.drop_tables().await.unwrap(), 7);
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let Some(tables) = tables_or_skip("a_newer_schema_is_refused_and_left_alone") else {
        return;
    };
    let p = tables.connect().await;
    p.set_state(&actor("t", "a"), b"kept", None, Fence::Unfenced)
        .await
        .unwrap();
    p.close().await;
    let mut c = raw(tables.url()).await;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {}schema_version (version, name) VALUES ($1, 'from the future')",
        tables.prefix()
    )))
    .bind(POSTGRES_SCHEMA_VERSION + 7)
    .execute(&mut c)
    .await
    .unwrap();
    match PostgresProvider::connect(tables.url(), tables.options()).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, POSTGRES_SCHEMA_VERSION + 7);
            assert_eq!(supported, POSTGRES_SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let data: Vec<u8> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT data FROM {}state",
        tables.prefix()
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(data, b"kept", "the refused tables are untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_starting_together_migrate_once() {
    let Some(tables) = tables_or_skip("hosts_starting_together_migrate_once") else {
        return;
    };
    let tables = Arc::new(tables);
    let mut starting = JoinSet::new();
    for _ in 0..6 {
        let tables = tables.clone();
        starting.spawn(async move { tables.connect().await });
    }
    let providers = starting.join_all().await;
    assert_eq!(providers.len(), 6);
    let mut c = raw(tables.url()).await;
    let versions: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT version FROM {}schema_version ORDER BY version",
        tables.prefix()
    )))
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(versions, (1..=POSTGRES_SCHEMA_VERSION).collect::<Vec<_>>());
    for p in providers {
        p.close().await;
    }
}

#[tokio::test]
async fn strings_postgres_cannot_hold_are_invalid_arguments() {
    let Some(tables) = tables_or_skip("strings_postgres_cannot_hold_are_invalid_arguments") else {
        return;
    };
    let p = tables.connect().await;
    let err = p
        .register_host(&registration("h\0", "a:1", &[("t", None)]), at(0), TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    let err = p
        .set_alarm(
            &actor("t", "a"),
            "tick\0",
            &AlarmProperties::once(at(0)),
            Fence::Unfenced,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    assert!(
        p.get_alarm(&actor("t", "a"), "tick")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        p.live_hosts(at(0), TTL).await.unwrap().is_empty(),
        "nothing written"
    );
}

/// Several providers (one per "host", each with its own pool) claim the same actors at once,
/// with different candidates, and compete for a capacity-limited host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_from_many_providers_have_one_winner_and_respect_capacity() {
    let Some(tables) = tables_or_skip("claims_from_many_providers_have_one_winner") else {
        return;
    };
    let mut providers = Vec::new();
    for _ in 0..4 {
        providers.push(Arc::new(tables.connect().await));
    }
    let hosts = ["h1", "h2", "h3", "h4"];
    for h in hosts {
        register(&*providers[0], h, &["t"], at(0)).await;
    }
    providers[0]
        .register_host(
            &registration("small", "addr-small", &[("u", Some(3))]),
            at(0),
            TTL,
        )
        .await
        .unwrap();

    let mut claims = JoinSet::new();
    for i in 0..80 {
        let p = providers[i % providers.len()].clone();
        let a = actor("t", &format!("a{}", i % 5));
        let candidate = hosts[(i / 5) % hosts.len()];
        claims.spawn(async move { (a.clone(), p.claim(&a, candidate, at(1), TTL).await) });
    }
    let mut seen: HashMap<String, HashSet<(String, u64)>> = HashMap::new();
    for (a, result) in claims.join_all().await {
        let placement = result.expect("claim succeeds");
        seen.entry(a.actor_id().to_owned())
            .or_default()
            .insert((placement.host_id, placement.epoch));
    }
    assert_eq!(seen.len(), 5);
    for (id, placements) in &seen {
        assert_eq!(placements.len(), 1, "{id} placed {placements:?}");
    }

    let mut capped = JoinSet::new();
    for i in 0..20 {
        let p = providers[i % providers.len()].clone();
        let a = actor("u", &format!("c{i}"));
        capped.spawn(async move { p.claim(&a, "small", at(1), TTL).await });
    }
    let mut won = 0;
    for result in capped.join_all().await {
        match result {
            Ok(_) => won += 1,
            Err(StoreError::ClaimRefused { reason, .. }) => {
                assert_eq!(reason, ClaimRefusal::AtCapacity)
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won, 3, "exactly the capacity was placed");
    assert_eq!(
        providers[1].count_placements("small", "u").await.unwrap(),
        3
    );
}

/// An old owner keeps writing with its epoch while another host takes the actor over: every
/// write that succeeded committed before the takeover, and none succeeds after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writes_racing_a_takeover_never_land_after_it() {
    let Some(tables) = tables_or_skip("fenced_writes_racing_a_takeover") else {
        return;
    };
    let old_host = Arc::new(tables.connect().await);
    let new_host = tables.connect().await;
    register(&*old_host, "old", &["t"], at(0)).await;
    let a = actor("t", "a");
    let old = old_host.claim(&a, "old", at(0), TTL).await.unwrap();
    let later = at(TTL.as_millis() as i64 + 1);
    register(&new_host, "new", &["t"], later).await;

    let writer = {
        let p = old_host.clone();
        let a = a.clone();
        tokio::spawn(async move {
            let mut written = 0_u32;
            for i in 0..2_000_u32 {
                match p
                    .set_state(
                        &a,
                        format!("old-{i}").as_bytes(),
                        None,
                        Fence::Epoch(old.epoch),
                    )
                    .await
                {
                    Ok(()) => written += 1,
                    Err(StoreError::Fenced { .. }) => return written,
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("the takeover never fenced the old owner");
        })
    };
    // let some old writes land first
    let until = Instant::now() + Duration::from_secs(10);
    while new_host.get_state(&a, at(0)).await.unwrap().is_none() {
        assert!(Instant::now() < until, "no old write landed");
        tokio::task::yield_now().await;
    }
    let taken = new_host.claim(&a, "new", later, TTL).await.unwrap();
    assert!(taken.epoch > old.epoch);
    new_host
        .set_state(&a, b"new", None, Fence::Epoch(taken.epoch))
        .await
        .unwrap();
    let written = writer.await.unwrap();
    assert!(written > 0);
    assert_eq!(
        new_host.get_state(&a, at(0)).await.unwrap().unwrap().data,
        b"new",
        "a stale write landed after the takeover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_leased_from_many_providers_are_leased_once() {
    let Some(tables) = tables_or_skip("alarms_leased_from_many_providers") else {
        return;
    };
    let mut providers = Vec::new();
    for _ in 0..3 {
        providers.push(Arc::new(tables.connect().await));
    }
    const ALARMS: usize = 60;
    for i in 0..ALARMS {
        providers[0]
            .set_alarm(
                &actor("t", &format!("a{i:02}")),
                "x",
                &AlarmProperties::once(at(i as i64)),
                Fence::Unfenced,
            )
            .await
            .unwrap();
    }
    let mut leasers = JoinSet::new();
    for i in 0..12 {
        let p = providers[i % providers.len()].clone();
        leasers.spawn(async move {
            p.lease_alarms(
                &LeaseRequest {
                    host_id: format!("h{i}"),
                    actor_types: vec!["t".into()],
                    horizon: at(1_000),
                    limit: 6,
                    lease_duration: Duration::from_secs(20),
                    lease_id: format!("lease-{i}"),
                },
                at(0),
            )
            .await
            .expect("lease")
        });
    }
    let all: Vec<_> = leasers.join_all().await.into_iter().flatten().collect();
    let unique: HashSet<_> = all
        .iter()
        .map(|l| (l.lease.actor.clone(), l.lease.name.clone()))
        .collect();
    assert_eq!(unique.len(), all.len(), "an alarm was leased twice");
    assert_eq!(all.len(), ALARMS, "12 x 6 slots cover all {ALARMS} alarms");
}

/// A TCP relay between the provider and the server, which the test can cut and restore.
struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    tasks: JoinSet<()>,
}

impl Relay {
    async fn start(addr: SocketAddr, upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind(addr).await.expect("relay bind");
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pipes = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                pipes.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay {
            addr,
            upstream,
            tasks,
        }
    }

    /// Closes the listener and every relayed connection (dropping their sockets).
    async fn cut(mut self) -> (SocketAddr, SocketAddr) {
        self.tasks.shutdown().await;
        (self.addr, self.upstream)
    }
}

/// `url` with its `host:port` replaced by `addr`.
fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!("{scheme}://{userinfo}{addr}{tail}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_unavailable_then_recovers_by_itself() {
    let Some(tables) = tables_or_skip("a_lost_connection_is_unavailable_then_recovers") else {
        return;
    };
    let server = PgConnectOptions::from_str(tables.url()).unwrap();
    let upstream: SocketAddr = tokio::net::lookup_host((server.get_host(), server.get_port()))
        .await
        .unwrap()
        .next()
        .expect("the server's address");
    let relay = Relay::start("127.0.0.1:0".parse().unwrap(), upstream).await;
    let p = PostgresProvider::connect(
        &via(tables.url(), relay.addr),
        tables.options().acquire_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    register(&p, "h1", &["t"], at(0)).await;
    let a = actor("t", "a");
    p.set_state(&a, b"before", None, Fence::Unfenced)
        .await
        .unwrap();

    let (addr, upstream) = relay.cut().await;
    for _ in 0..3 {
        let started = Instant::now();
        match p.set_state(&a, b"during", None, Fence::Unfenced).await {
            Err(StoreError::Unavailable(text)) => {
                assert!(text.contains(&addr.to_string()), "{text}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        match p.heartbeat("h1", at(1)).await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    let relay = Relay::start(addr, upstream).await;
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        match p.set_state(&a, b"after", None, Fence::Unfenced).await {
            Ok(()) => break,
            Err(StoreError::Unavailable(_)) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("did not recover: {e}"),
        }
    }
    assert_eq!(
        p.get_state(&a, at(0)).await.unwrap().unwrap().data,
        b"after"
    );
    p.heartbeat("h1", at(2)).await.unwrap();
    p.close().await;
    relay.cut().await;
}

fn set_state(a: &francis_core::ActorRef, data: &[u8], fence: Fence) -> Op {
    Op::SetState {
        actor: a.clone(),
        data: data.to_vec(),
        expires_at: None,
        fence,
    }
}

/// The state document of `a` as another reader sees it now.
async fn stored(p: &PostgresProvider, a: &francis_core::ActorRef) -> Option<Vec<u8>> {
    p.get_state(a, at(0)).await.unwrap().map(|s| s.data)
}

#[tokio::test]
async fn a_fenced_write_in_a_batch_is_refused_alone() {
    let Some(tables) = tables_or_skip("a_fenced_write_in_a_batch_is_refused_alone") else {
        return;
    };
    let p = tables.connect().await;
    register(&p, "h1", &["t"], at(0)).await;
    let owned = actor("t", "owned");
    let placement = p.claim(&owned, "h1", at(0), TTL).await.unwrap();
    p.set_state(&owned, b"before", None, Fence::Epoch(placement.epoch))
        .await
        .unwrap();
    let (a, c) = (actor("t", "a"), actor("t", "c"));
    let results = p
        .execute_batch(vec![
            set_state(&a, b"a", Fence::Unfenced),
            set_state(&owned, b"stale", Fence::Epoch(placement.epoch + 1)),
            set_state(&c, b"c", Fence::Epoch(placement.epoch + 1)),
            set_state(&c, b"c", Fence::Unfenced),
            // sees the first write of its own batch
            Op::GetState {
                actor: a.clone(),
                now: at(0),
            },
        ])
        .await;
    assert_eq!(results.len(), 5);
    assert!(matches!(results[0], Ok(Reply::Unit)), "{results:?}");
    assert!(
        matches!(&results[1], Err(StoreError::Fenced { actor, .. }) if *actor == owned),
        "{results:?}"
    );
    assert!(
        matches!(&results[2], Err(StoreError::Fenced { actor, .. }) if *actor == c),
        "{results:?}"
    );
    assert!(matches!(results[3], Ok(Reply::Unit)), "{results:?}");
    match &results[4] {
        Ok(Reply::State(Some(state))) => assert_eq!(state.data, b"a"),
        other => panic!("expected the batch's own write, got {other:?}"),
    }
    assert_eq!(stored(&p, &a).await.as_deref(), Some(&b"a"[..]));
    assert_eq!(stored(&p, &c).await.as_deref(), Some(&b"c"[..]));
    assert_eq!(
        stored(&p, &owned).await.as_deref(),
        Some(&b"before"[..]),
        "the fenced write was applied"
    );
}

/// A raw session holding `FOR UPDATE` on the placement row of `t/b` in an open transaction,
/// so a fenced write to `t/b` waits for it; and its backend's pid.
async fn lock_placement(tables: &PostgresTestTables) -> (PgConnection, i32) {
    let mut locker = raw(tables.url()).await;
    sqlx::raw_sql("BEGIN").execute(&mut locker).await.unwrap();
    let locked: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT 1 FROM {}placements WHERE actor_type = 't' AND actor_id = 'b' FOR UPDATE",
        tables.prefix()
    )))
    .fetch_optional(&mut locker)
    .await
    .unwrap();
    assert_eq!(locked, Some(1), "t/b is placed");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut locker)
        .await
        .unwrap();
    (locker, pid)
}

/// The pid of the backend waiting for a lock `holder` holds, once there is one.
async fn blocked_by(observer: &mut PgConnection, holder: i32) -> i32 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(holder)
        .fetch_optional(&mut *observer)
        .await
        .unwrap();
        if let Some(pid) = waiting {
            return pid;
        }
        assert!(Instant::now() < until, "nothing waited for the lock");
        tokio::task::yield_now().await;
    }
}

/// Places `t/b` on a host `h1`; its epoch.
async fn place_b(p: &PostgresProvider) -> u64 {
    register(p, "h1", &["t"], at(0)).await;
    p.claim(&actor("t", "b"), "h1", at(0), TTL)
        .await
        .unwrap()
        .epoch
}

/// The batch [write `t/a`, write `t/b` fenced with `epoch`], started on `p`.
fn start_batch(
    p: &Arc<PostgresProvider>,
    epoch: u64,
) -> tokio::task::JoinHandle<Vec<francis_store::StoreResult<Reply>>> {
    let p = p.clone();
    tokio::spawn(async move {
        p.execute_batch(vec![
            set_state(&actor("t", "a"), b"a", Fence::Unfenced),
            set_state(&actor("t", "b"), b"b", Fence::Epoch(epoch)),
        ])
        .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_seen_by_others_only_once_it_commits() {
    let Some(tables) = tables_or_skip("a_batch_is_seen_by_others_only_once_it_commits") else {
        return;
    };
    let p = Arc::new(tables.connect().await);
    let (a, b) = (actor("t", "a"), actor("t", "b"));
    let epoch = place_b(&p).await;
    let (mut locker, locker_pid) = lock_placement(&tables).await;
    let batch = start_batch(&p, epoch);
    let mut observer = raw(tables.url()).await;
    // the batch waits in its second operation, so its first one has run
    blocked_by(&mut observer, locker_pid).await;
    assert_eq!(
        stored(&p, &a).await,
        None,
        "a write of an open batch is visible"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    let results = batch.await.unwrap();
    assert!(
        matches!(results[..], [Ok(Reply::Unit), Ok(Reply::Unit)]),
        "{results:?}"
    );
    assert_eq!(stored(&p, &a).await.as_deref(), Some(&b"a"[..]));
    assert_eq!(stored(&p, &b).await.as_deref(), Some(&b"b"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_connection_is_lost_applies_nothing() {
    let Some(tables) = tables_or_skip("a_batch_whose_connection_is_lost_applies_nothing") else {
        return;
    };
    let p = Arc::new(tables.connect().await);
    let (a, b) = (actor("t", "a"), actor("t", "b"));
    let epoch = place_b(&p).await;
    let (mut locker, locker_pid) = lock_placement(&tables).await;
    let batch = start_batch(&p, epoch);
    let mut observer = raw(tables.url()).await;
    let batch_pid = blocked_by(&mut observer, locker_pid).await;
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(batch_pid)
        .fetch_one(&mut observer)
        .await
        .unwrap();
    assert!(terminated);
    let results = batch.await.unwrap();
    assert_eq!(results.len(), 2);
    for result in &results {
        match result {
            Err(StoreError::Unavailable(text)) => {
                assert!(text.contains("batch not applied"), "{text}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    assert_eq!(
        stored(&p, &a).await,
        None,
        "part of a lost batch was applied"
    );
    assert_eq!(stored(&p, &b).await, None);
    // the provider goes on with a fresh connection
    p.set_state(&a, b"later", None, Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(stored(&p, &a).await.as_deref(), Some(&b"later"[..]));
}

#[tokio::test]
async fn a_batch_whose_commit_fails_applies_nothing() {
    let Some(tables) = tables_or_skip("a_batch_whose_commit_fails_applies_nothing") else {
        return;
    };
    let p = tables.connect().await;
    register(&p, "h1", &["t"], at(0)).await;
    // a check PostgreSQL runs only at COMMIT: state of `t/poison` cannot be committed
    let prefix = tables.prefix();
    let mut c = raw(tables.url()).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE FUNCTION {prefix}refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.actor_id = 'poison' THEN RAISE EXCEPTION 'poison is not committed'; END IF;
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER {prefix}poison_at_commit AFTER INSERT OR UPDATE ON {prefix}state
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {prefix}refuse_poison();"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    let (a, poison) = (actor("t", "a"), actor("t", "poison"));
    let failed = p
        .execute_batch(vec![
            set_state(&a, b"a", Fence::Unfenced),
            set_state(&poison, b"x", Fence::Unfenced),
            Op::Heartbeat {
                host_id: "h1".into(),
                now: at(5),
            },
        ])
        .await;
    let after_failure = (
        stored(&p, &a).await,
        stored(&p, &poison).await,
        p.live_hosts(at(5), TTL).await.unwrap(),
    );
    // the same without the poison commits
    let committed = p
        .execute_batch(vec![
            set_state(&a, b"a", Fence::Unfenced),
            Op::Heartbeat {
                host_id: "h1".into(),
                now: at(7),
            },
        ])
        .await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP FUNCTION {prefix}refuse_poison() CASCADE"
    )))
    .execute(&mut c)
    .await
    .unwrap();

    assert_eq!(failed.len(), 3);
    for result in &failed {
        match result {
            Err(StoreError::Unavailable(text)) => {
                assert!(
                    text.contains("batch not applied") && text.contains("poison is not committed"),
                    "{text}"
                )
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    let (a_state, poison_state, hosts) = after_failure;
    assert_eq!(
        (a_state, poison_state),
        (None, None),
        "part of the batch was applied"
    );
    assert_eq!(hosts[0].last_heartbeat, at(0), "its heartbeat was applied");
    assert!(
        matches!(committed[..], [Ok(Reply::Unit), Ok(Reply::Unit)]),
        "{committed:?}"
    );
    assert_eq!(stored(&p, &a).await.as_deref(), Some(&b"a"[..]));
    assert_eq!(
        p.live_hosts(at(7), TTL).await.unwrap()[0].last_heartbeat,
        at(7)
    );
}

#[tokio::test]
async fn a_failing_statement_in_a_batch_is_undone_alone() {
    let Some(tables) = tables_or_skip("a_failing_statement_in_a_batch_is_undone_alone") else {
        return;
    };
    let p = tables.connect().await;
    // every alarm statement now fails in the database (and aborts the transaction it is in)
    let mut c = raw(tables.url()).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE {}alarms CASCADE",
        tables.prefix()
    )))
    .execute(&mut c)
    .await
    .unwrap();
    let (a, b) = (actor("t", "a"), actor("t", "b"));
    let results = p
        .execute_batch(vec![
            set_state(&a, b"a", Fence::Unfenced),
            Op::SetAlarm {
                actor: a.clone(),
                name: "tick".into(),
                properties: AlarmProperties::once(at(0)),
                fence: Fence::Unfenced,
            },
            set_state(&b, b"b", Fence::Unfenced),
        ])
        .await;
    assert!(matches!(results[0], Ok(Reply::Unit)), "{results:?}");
    match &results[1] {
        Err(StoreError::Backend(text)) => assert!(text.contains("alarms"), "{text}"),
        other => panic!("expected the database's error, got {other:?}"),
    }
    assert!(matches!(results[2], Ok(Reply::Unit)), "{results:?}");
    assert_eq!(stored(&p, &a).await.as_deref(), Some(&b"a"[..]));
    assert_eq!(stored(&p, &b).await.as_deref(), Some(&b"b"[..]));
}
