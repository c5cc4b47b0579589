//! Hosts sharing one PostgreSQL database (each with its own `PostgresProvider` and pool, as
//! separate processes would have): what only PostgreSQL has, beside the scenarios of
//! `scenarios.rs` (run there on every backend): a host cut off from the database's network,
//! and a database that cannot be reached at start. Real time, real QUIC; conditions are
//! polled with deadlines. Needs `FRANCIS_TEST_POSTGRES_URL`; each test uses tables of its own (a unique
//! prefix), dropped when it ends, and says it is skipped without the variable.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use francis_host::{HostEvent, LocalHost};
use francis_store::Provider;
use francis_store_postgres::{PostgresProvider, PostgresTestTables, TEST_POSTGRES_URL_ENV};
use support::*;
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

/// A provider of its own (as another process would have) on the shared tables.
async fn provider(tables: &PostgresTestTables) -> PostgresProvider {
    tables
        .connect_with(
            tables
                .options()
                .pool_size(8)
                .acquire_timeout(Duration::from_secs(5)),
        )
        .await
}

/// A host with its own provider (pool) on the shared tables.
async fn host_on(provider: Arc<dyn Provider>, probe: Arc<Probe>, pace: Pace) -> TestHost {
    let addr = free_udp_addr();
    start_with_probe(provider, cluster_options(), probe, move |b| {
        cluster_host(b, addr, pace)
    })
    .await
}

/// A TCP relay between a host's provider and the database, which the test can cut and restore
/// (as a network partition between that host and the database would).
struct Relay {
    addr: SocketAddr,
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
        Relay { addr, tasks }
    }

    /// Closes the listener and every relayed connection.
    async fn cut(mut self) -> SocketAddr {
        self.tasks.shutdown().await;
        self.addr
    }
}

/// The `host:port` of a `postgres://` URL (port 5432 when absent), and the URL with it
/// replaced by `addr`.
fn split_server(url: &str) -> (String, impl Fn(SocketAddr) -> String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let at = authority.rfind('@').map_or(0, |i| i + 1);
    let (userinfo, server) = authority.split_at(at);
    let server = if server.contains(':') {
        server.to_owned()
    } else {
        format!("{server}:5432")
    };
    let (scheme, userinfo, tail) = (scheme.to_owned(), userinfo.to_owned(), tail.to_owned());
    (server, move |addr| {
        format!("{scheme}://{userinfo}{addr}{tail}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_from_the_database_fences_itself_and_comes_back() {
    let Some(tables) = tables_or_skip("a_host_cut_off_from_the_database") else {
        return;
    };
    let (server, via) = split_server(tables.url());
    let upstream = tokio::net::lookup_host(server.as_str())
        .await
        .unwrap()
        .next()
        .expect("the database's address");
    let relay = Relay::start("127.0.0.1:0".parse().unwrap(), upstream).await;
    let cut_off = PostgresProvider::connect(
        &via(relay.addr),
        tables.options().acquire_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let probe = Arc::new(Probe::default());
    let a = host_on(Arc::new(cut_off), probe.clone(), FAILOVER).await;
    let b = host_on(Arc::new(provider(&tables).await), probe.clone(), FAILOVER).await;
    let victim = actor_owned_by(&b.service(), &a, "p").await;

    let mut a_events = a.host.events();
    let cut_at = Instant::now();
    let relay_addr = relay.cut().await;
    let fenced = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(HostEvent::Fenced { .. }) = a_events.recv().await {
                return Instant::now();
            }
        }
    })
    .await
    .expect("A never fenced itself");
    assert!(
        fenced - cut_at < DEADLINE,
        "fenced after {:?}",
        fenced - cut_at
    );
    // B takes the actor over once A's lease expired in the store; nothing acknowledged is lost
    let (n, host) = increment_eventually(&b.service(), &victim, Duration::from_secs(20)).await;
    assert_eq!((n, host.as_str()), (2, b.host.address()));

    // the database comes back: A re-registers by itself and serves (routing to B) again
    let relay = Relay::start(relay_addr, upstream).await;
    let until = Instant::now() + Duration::from_secs(20);
    while a.host.health() != francis_host::Health::Serving {
        assert!(
            Instant::now() < until,
            "A never recovered: {:?}",
            a.host.health()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (n, host) = increment_eventually(&a.service(), &victim, Duration::from_secs(10)).await;
    assert_eq!((n, host.as_str()), (3, b.host.address()));
    assert_eq!(probe.double_activations.load(Ordering::SeqCst), 0);
    a.stop().await;
    b.stop().await;
    relay.cut().await;
}

#[tokio::test]
async fn an_unreachable_database_fails_build_with_a_clear_error() {
    let port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = LocalHost::builder()
        .address(free_udp_addr().to_string())
        .postgres(format!(
            "postgres://francis:hunter2@127.0.0.1:{port}/francis"
        ))
        .build()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("PostgreSQL"), "{text}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    assert!(!format!("{err:?}").contains("hunter2"));

    let err = LocalHost::builder()
        .address(free_udp_addr().to_string())
        .postgres("mysql://u@h/d")
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("postgres://"),
        "a non-PostgreSQL URL is refused: {err}"
    );
}
