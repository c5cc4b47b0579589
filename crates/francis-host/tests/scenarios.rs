//! The multi-host scenarios, one suite run on every store a cluster can share: one SQLite file
//! opened by every host (as separate processes would), a PostgreSQL database (each host its own
//! pool; skipped, saying so, without `FRANCIS_TEST_POSTGRES_URL`), and the replicated store
//! (each host its own SQLite file, Raft over the hosts' peer transport). Exact counters, single
//! activation, a graceful move, failover after a host freezes, alarms across that failover and
//! stale routes. Real time and real QUIC; conditions are polled with deadlines.
//!
//! A host "freezes" through a store layer that stops answering (as if its process hung): it
//! can no longer heartbeat, while the store itself (and, replicated, that host's Raft node)
//! goes on serving the others.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use francis_core::{ActorService, Envelope};
use francis_host::{Health, HostEvent, HostService};
use francis_store::Provider;
use francis_store_postgres::{PostgresTestTables, TEST_POSTGRES_URL_ENV};
use francis_store_sqlite::{SqliteOptions, SqliteProvider};
use support::*;
use tokio::time::Instant;

/// The store the hosts of a test cluster share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    SharedSqlite,
    Postgres,
    Replicated,
}

/// One cluster at a time: three hosts (with a Raft group each, replicated) are a full load for
/// two cores, and the failover scenarios measure deadlines.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Hosts on one backend, each behind a store layer that can freeze it.
struct Cluster {
    _turn: tokio::sync::SemaphorePermit<'static>,
    backend: Backend,
    dir: tempfile::TempDir,
    tables: Option<PostgresTestTables>,
    probe: Arc<Probe>,
    pace: Pace,
    hosts: Vec<TestHost>,
    /// Each host's view of the store, in host order.
    stores: Vec<Arc<StallingProvider>>,
}

impl Cluster {
    /// `n` hosts serving on `backend`, started together (a replicated store needs a quorum
    /// before any host serves); `None` when the backend is not available here.
    async fn start(backend: Backend, n: usize, pace: Pace, test: &str) -> Option<Cluster> {
        let tables = match backend {
            Backend::Postgres => match PostgresTestTables::from_env() {
                Some(t) => Some(t),
                None => {
                    println!("skipped {test}: {TEST_POSTGRES_URL_ENV} is not set");
                    return None;
                }
            },
            _ => None,
        };
        let mut cluster = Cluster {
            _turn: ONE_AT_A_TIME.acquire().await.unwrap(),
            backend,
            dir: tempfile::tempdir().unwrap(),
            tables,
            probe: Arc::new(Probe::default()),
            pace,
            hosts: Vec::new(),
            stores: Vec::new(),
        };
        let addrs: Vec<SocketAddr> = (0..n).map(|_| free_udp_addr()).collect();
        let starts = (0..n).map(|i| cluster.host(i, addrs[i], &addrs));
        for (host, store) in futures::future::join_all(starts).await {
            cluster.hosts.push(host);
            cluster.stores.push(store);
        }
        Some(cluster)
    }

    /// Host `i` at `addr` (with `peers`, the whole cluster, when replicated).
    async fn host(
        &self,
        i: usize,
        addr: SocketAddr,
        peers: &[SocketAddr],
    ) -> (TestHost, Arc<StallingProvider>) {
        let shared: Option<Arc<dyn Provider>> = match self.backend {
            Backend::SharedSqlite => Some(Arc::new(
                SqliteProvider::open(&self.dir.path().join("shared.db"), SqliteOptions::default())
                    .await
                    .unwrap(),
            )),
            Backend::Postgres => {
                let tables = self.tables.as_ref().expect("tables of the test");
                let options = tables
                    .options()
                    .pool_size(8)
                    .acquire_timeout(Duration::from_secs(5));
                Some(Arc::new(tables.connect_with(options).await))
            }
            Backend::Replicated => None,
        };
        let own_file = self.dir.path().join(format!("host{i}.db"));
        let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let pace = self.pace;
        let (tx, rx) = std::sync::mpsc::channel();
        let host = start_configured(cluster_options(), self.probe.clone(), move |b| {
            let b = match shared {
                Some(provider) => b.provider(provider),
                None => b.sqlite(own_file).peers(peers),
            };
            cluster_host(b, addr, pace).store_layer(move |inner| {
                let layer = Arc::new(StallingProvider::wrap(inner));
                tx.send(layer.clone()).unwrap();
                layer
            })
        })
        .await;
        (host, rx.recv().unwrap())
    }

    fn services(&self) -> Vec<HostService> {
        self.hosts.iter().map(|h| h.service()).collect()
    }

    /// Stops every host still running, together (a replicated store keeps its quorum until
    /// the last of them is on its way out).
    async fn stop(self) {
        let stops = self.hosts.into_iter().map(|h| async move {
            h.shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(30), h.task).await
        });
        for stopped in futures::future::join_all(stops).await {
            let result = stopped.expect("a host stops within 30 s").unwrap();
            if let Err(e) = result {
                // A host that fenced itself in a failover scenario may end with its error.
                println!("host stopped with: {e}");
            }
        }
    }
}

/// 12 counters incremented 20 times each, concurrently, through three hosts: each is served
/// by exactly one host whichever host the call reached, placement spreads, and every count
/// is exact.
async fn counters_stay_exact_and_single_activation_holds(backend: Backend, test: &str) {
    let Some(cluster) = Cluster::start(backend, 3, STEADY, test).await else {
        return;
    };
    let services = cluster.services();
    let ids: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    // 20 increments of each counter, in 5 waves of 48 concurrent calls (4 per counter): a
    // single burst of all 240 at once made a replicated 3-node store on 2 cores lose its
    // quorum for a moment (a retryable no_quorum), which is not what this scenario checks.
    let mut owners = HashMap::<String, HashSet<String>>::new();
    for wave in 0..5 {
        let mut calls = Vec::new();
        for round in wave * 4..(wave + 1) * 4 {
            for (i, id) in ids.iter().enumerate() {
                let svc = services[(round + i) % 3].clone();
                let id = id.clone();
                calls.push(tokio::spawn(async move { served_by(&svc, &id).await }));
            }
        }
        for (n, call) in calls.into_iter().enumerate() {
            let (_, host) = call.await.unwrap();
            owners
                .entry(ids[n % ids.len()].clone())
                .or_default()
                .insert(host);
        }
    }
    for (id, hosts) in &owners {
        assert_eq!(hosts.len(), 1, "{id} served by {hosts:?}");
    }
    let distinct: HashSet<_> = owners.values().flatten().collect();
    assert!(
        distinct.len() >= 2,
        "placement did not spread: {distinct:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        let (n, _) = served_by(&services[(i + 1) % 3], id).await;
        assert_eq!(n, 21, "{id}");
    }
    assert_eq!(cluster.probe.double_activations.load(Ordering::SeqCst), 0);
    assert_eq!(cluster.probe.created.load(Ordering::SeqCst), ids.len());
    cluster.stop().await;
}

/// A host that stops gracefully releases its actors on the way out: another host serves them
/// at once (well within a health deadline), with their state.
async fn a_graceful_stop_moves_actors_at_once(backend: Backend, test: &str) {
    let Some(mut cluster) = Cluster::start(backend, 3, FAILOVER, test).await else {
        return;
    };
    let via_b = cluster.hosts[1].service();
    let mut on_a = Vec::new();
    for i in 0..64 {
        let id = format!("g{i}");
        let (_, host) = served_by(&via_b, &id).await;
        if host == cluster.hosts[0].host.address() {
            on_a.push(id);
        }
        if on_a.len() == 3 {
            break;
        }
    }
    assert!(!on_a.is_empty(), "no actor landed on A");
    let a = cluster.hosts.remove(0);
    cluster.stores.remove(0);
    let a_address = a.host.address().to_owned();
    a.stop().await;
    // Without waiting for A's lease to expire; a replicated store whose leader was A elects
    // another leader first (a few Raft election timeouts).
    let limit = match backend {
        Backend::Replicated => DEADLINE + Duration::from_secs(5),
        Backend::SharedSqlite | Backend::Postgres => DEADLINE,
    };
    let started = Instant::now();
    for id in &on_a {
        let (n, host) = increment_eventually(&via_b, id, limit).await;
        assert_eq!(n, 2, "{id} kept its state");
        assert_ne!(host, a_address);
    }
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    assert_eq!(cluster.probe.double_activations.load(Ordering::SeqCst), 0);
    cluster.stop().await;
}

/// A host whose store stops answering fences itself; its actors move only once its lease has
/// expired in the store, after it fenced, and no acknowledged increment is lost.
async fn a_frozen_host_fences_itself_and_its_actors_move_after_the_deadline(
    backend: Backend,
    test: &str,
) {
    let Some(cluster) = Cluster::start(backend, 3, FAILOVER, test).await else {
        return;
    };
    let (a, b) = (&cluster.hosts[0], &cluster.hosts[1]);
    let via_b = b.service();
    let victim = actor_owned_by(&via_b, a, "k").await;
    served_by(&via_b, &victim).await;
    let mut a_events = a.host.events();
    let fenced_at = tokio::spawn(async move {
        loop {
            if let Ok(HostEvent::Fenced { .. }) = a_events.recv().await {
                return Instant::now();
            }
        }
    });
    let frozen_at = Instant::now();
    cluster.stores[0].stall.store(true, Ordering::SeqCst);
    let (n, host) = increment_eventually(&via_b, &victim, Duration::from_secs(20)).await;
    let moved_at = Instant::now();
    assert_ne!(host, a.host.address());
    assert_eq!(n, 3, "an acknowledged increment was lost");
    let moved_after = moved_at - frozen_at;
    assert!(
        moved_after >= DEADLINE - Duration::from_millis(300),
        "moved after {moved_after:?}, before the frozen host's lease expired"
    );
    let fenced_at = tokio::time::timeout(Duration::from_secs(1), fenced_at)
        .await
        .expect("the frozen host never fenced itself")
        .unwrap();
    assert!(
        fenced_at < moved_at,
        "fenced {:?} after the actor moved",
        fenced_at - moved_at
    );
    assert!(matches!(a.host.health(), Health::Fenced(_)));
    assert_eq!(cluster.probe.double_activations.load(Ordering::SeqCst), 0);
    cluster.stores[0].stall.store(false, Ordering::SeqCst);
    cluster.stop().await;
}

/// A repeating alarm fires on its actor's owner and keeps its cadence when that owner freezes
/// and the actor moves: never twice for one due time, never on two activations.
async fn alarms_keep_their_cadence_across_a_failover(backend: Backend, test: &str) {
    let Some(cluster) = Cluster::start(backend, 3, FAILOVER, test).await else {
        return;
    };
    let via_b = cluster.hosts[1].service();
    let victim = actor_owned_by(&via_b, &cluster.hosts[0], "t").await;
    alarm_cadence_survives_an_owner_freeze(&via_b, &victim, &cluster.stores[0], &cluster.probe)
        .await;
    cluster.stop().await;
}

/// A host whose cached route is stale (the actor moved from one host to another behind its
/// back) is corrected by the old owner's "not hosted" and answers from the new owner; the
/// caller sees an ordinary answer.
async fn a_stale_route_is_corrected_invisibly(backend: Backend, test: &str) {
    let Some(cluster) = Cluster::start(backend, 3, STEADY, test).await else {
        return;
    };
    let via_a = cluster.hosts[0].service();
    let mut pick = None;
    for i in 0..30 {
        let id = format!("s{i}");
        let (_, host) = served_by(&via_a, &id).await;
        if host != cluster.hosts[0].host.address() {
            pick = Some((id, host));
            break;
        }
    }
    let (id, first_owner) = pick.expect("some actor lands off A");
    let (owner, other) = if first_owner == cluster.hosts[1].host.address() {
        (&cluster.hosts[1], &cluster.hosts[2])
    } else {
        (&cluster.hosts[2], &cluster.hosts[1])
    };
    // The owner lets it go; the other host takes it (A does not know).
    owner.service().halt(&actor(&id)).await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    let moved = loop {
        match other
            .service()
            .invoke_on(
                other.host.address().parse().unwrap(),
                &other.host.host_id(),
                &actor(&id),
                "increment",
                Envelope::null(),
                false,
            )
            .await
        {
            Ok(out) => break out,
            Err(e) if e.is_retryable() && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(moved.output.unwrap().decode::<i64>().unwrap(), 2);
    let (n, host) = served_by(&via_a, &id).await;
    assert_eq!((n, host.as_str()), (3, other.host.address()));
    assert_eq!(cluster.probe.double_activations.load(Ordering::SeqCst), 0);
    cluster.stop().await;
}

/// The suite on one backend: a module of tests named after the scenarios.
macro_rules! scenarios_on {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn counters_stay_exact_and_single_activation_holds() {
                super::counters_stay_exact_and_single_activation_holds(
                    $backend,
                    concat!(stringify!($module), "::counters"),
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_graceful_stop_moves_actors_at_once() {
                super::a_graceful_stop_moves_actors_at_once(
                    $backend,
                    concat!(stringify!($module), "::graceful_stop"),
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_frozen_host_fences_itself_and_its_actors_move_after_the_deadline() {
                super::a_frozen_host_fences_itself_and_its_actors_move_after_the_deadline(
                    $backend,
                    concat!(stringify!($module), "::freeze"),
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn alarms_keep_their_cadence_across_a_failover() {
                super::alarms_keep_their_cadence_across_a_failover(
                    $backend,
                    concat!(stringify!($module), "::alarms"),
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_stale_route_is_corrected_invisibly() {
                super::a_stale_route_is_corrected_invisibly(
                    $backend,
                    concat!(stringify!($module), "::stale_route"),
                )
                .await;
            }
        }
    };
}

scenarios_on!(shared_sqlite, Backend::SharedSqlite);
scenarios_on!(postgres, Backend::Postgres);
scenarios_on!(replicated, Backend::Replicated);
