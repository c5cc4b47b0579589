//! Clusters of replication nodes on loopback (real QUIC), each node with its own transport
//! and its own SQLite files in a shared temporary directory.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashSet;
use std::sync::Mutex;

use francis_replication::{RaftRequestHandler, ReplicatedProvider, ReplicationConfig};
use francis_transport::proto::{Request, Response, WireError};
use francis_transport::{Limits, RequestHandler, Transport, TransportConfig, async_trait};

pub const PSK: &[u8] = b"replication-test-psk-0123456789abcdef-0123";
pub const OTHER_PSK: &[u8] = b"another-cluster-psk-fedcba9876543210-fedc";

/// Logs to the test's output when `RUST_LOG` is set (shown for failing tests).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Polls `cond` every 20 ms until it holds, panicking after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Transport limits for tests: fail fast on dead peers.
pub fn limits() -> Limits {
    let mut l = Limits::default();
    l.connect_timeout = Duration::from_millis(500);
    l.request_timeout = Duration::from_secs(5);
    l.shutdown_grace = Duration::from_millis(500);
    l
}

/// Starts a transport serving `handler` at `bind` (port 0: a free one).
pub fn transport(bind: SocketAddr, psk: &[u8], handler: &RaftRequestHandler) -> Transport {
    start_gated(bind, psk, handler, &Cut::default()).expect("start a transport")
}

/// The host ids on one side of a network partition: a request crosses the partition (and is
/// refused, as if dropped) when exactly one of its two ends is in the set.
pub type Cut = Arc<Mutex<HashSet<String>>>;

/// A handler that refuses requests crossing the partition, and passes the others on.
#[derive(Debug)]
struct Gate {
    inner: RaftRequestHandler,
    me: String,
    cut: Cut,
}

#[async_trait]
impl RequestHandler for Gate {
    async fn handle(&self, peer_host_id: &str, request: Request) -> Response {
        let crosses = {
            let cut = self.cut.lock().unwrap();
            cut.contains(peer_host_id) != cut.contains(&self.me)
        };
        if crosses {
            return Response::error(WireError::new(
                francis_core::ErrorKind::HostUnavailable,
                "partitioned",
                None,
            ));
        }
        self.inner.handle(peer_host_id, request).await
    }
}

fn start_gated(
    bind: SocketAddr,
    psk: &[u8],
    handler: &RaftRequestHandler,
    cut: &Cut,
) -> Result<Transport, francis_transport::TransportError> {
    let host_id = format!("node-{}", uuid_like());
    let gate = Gate {
        inner: handler.clone(),
        me: host_id.clone(),
        cut: cut.clone(),
    };
    Transport::start(
        TransportConfig::new(host_id, bind, vec![psk.to_vec()]).with_limits(limits()),
        Arc::new(gate),
    )
}

/// Starts a transport on a port a stopped node used: the old endpoint releases its socket
/// shortly after it is closed, so binding is retried until then.
pub async fn transport_again(
    bind: SocketAddr,
    psk: &[u8],
    handler: &RaftRequestHandler,
    cut: &Cut,
) -> Transport {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match start_gated(bind, psk, handler, cut) {
            Ok(t) => return t,
            Err(francis_transport::TransportError::Bind { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot restart the transport at {bind}: {e}"),
        }
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Short timings so elections and "no quorum" happen within a second or two.
pub fn config(address: &str, peers: &[String], data: PathBuf) -> ReplicationConfig {
    let mut c = ReplicationConfig::new(address, peers.to_vec(), data);
    c.heartbeat_interval = Duration::from_millis(100);
    // Short enough for quick failovers, long enough that a loaded 2-core CI machine (tests of
    // several crates running at once) does not see spurious elections or forward timeouts.
    c.election_timeout = (Duration::from_millis(600), Duration::from_millis(1200));
    c.quorum_timeout = Duration::from_secs(3);
    c.rpc_timeout = Duration::from_millis(2000);
    c
}

/// One running node.
#[derive(Debug)]
pub struct TestNode {
    pub provider: ReplicatedProvider,
    pub transport: Transport,
    pub handler: RaftRequestHandler,
}

impl TestNode {
    pub async fn stop(self) {
        self.provider.shutdown().await;
        self.transport.shutdown().await;
    }
}

/// A cluster whose nodes can be stopped and restarted on their files and ports.
#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<String>,
    pub nodes: Vec<Option<TestNode>>,
    pub tune: fn(&mut ReplicationConfig),
    pub cut: Cut,
}

fn no_tuning(_: &mut ReplicationConfig) {}

impl Cluster {
    /// Starts `n` nodes at once and waits for a leader everyone knows.
    pub async fn start(n: usize) -> Cluster {
        Self::start_tuned(n, no_tuning).await
    }

    pub async fn start_tuned(n: usize, tune: fn(&mut ReplicationConfig)) -> Cluster {
        init_logs();
        let dir = tempfile::tempdir().expect("temporary directory");
        let handlers: Vec<RaftRequestHandler> = (0..n).map(|_| RaftRequestHandler::new()).collect();
        let cut = Cut::default();
        let transports: Vec<Transport> = handlers
            .iter()
            .map(|h| start_gated("127.0.0.1:0".parse().unwrap(), PSK, h, &cut).expect("transport"))
            .collect();
        let addrs: Vec<String> = transports
            .iter()
            .map(|t| t.local_addr().to_string())
            .collect();
        let mut cluster = Cluster {
            dir,
            addrs,
            nodes: (0..n).map(|_| None).collect(),
            tune,
            cut,
        };
        let starts = transports
            .into_iter()
            .zip(handlers)
            .enumerate()
            .map(|(i, (t, h))| {
                let config = cluster.config(i);
                async move {
                    let provider = ReplicatedProvider::start(config, t.clone(), &h)
                        .await
                        .expect("start a node");
                    TestNode {
                        provider,
                        transport: t,
                        handler: h,
                    }
                }
            });
        let nodes = futures::future::join_all(starts).await;
        cluster.nodes = nodes.into_iter().map(Some).collect();
        cluster.wait_leader().await;
        cluster
    }

    pub fn data_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}.db"))
    }

    pub fn config(&self, i: usize) -> ReplicationConfig {
        let mut c = config(&self.addrs[i], &self.addrs, self.data_path(i));
        (self.tune)(&mut c);
        c
    }

    pub fn node(&self, i: usize) -> &TestNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn provider(&self, i: usize) -> ReplicatedProvider {
        self.node(i).provider.clone()
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &TestNode)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// The index of the node every running node agrees is the leader.
    pub fn agreed_leader(&self) -> Option<usize> {
        let mut leader = None;
        for (_, n) in self.running() {
            let l = n.provider.status().leader?;
            match &leader {
                None => leader = Some(l),
                Some(prev) if *prev != l => return None,
                Some(_) => {}
            }
        }
        let leader = leader?;
        let i = self.addrs.iter().position(|a| *a == leader)?;
        let is_leader = self.nodes[i].as_ref()?.provider.status().role == "leader";
        is_leader.then_some(i)
    }

    pub async fn wait_leader(&self) -> usize {
        eventually(
            "a leader known to every running node",
            Duration::from_secs(15),
            || async { self.agreed_leader().is_some() },
        )
        .await;
        self.agreed_leader().expect("leader")
    }

    pub async fn leader(&self) -> usize {
        self.wait_leader().await
    }

    pub async fn follower(&self) -> usize {
        let l = self.wait_leader().await;
        self.running()
            .map(|(i, _)| i)
            .find(|i| *i != l)
            .expect("a follower")
    }

    /// Stops node `i` (Raft, databases, transport).
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.stop().await;
        }
    }

    /// Starts node `i` again on its files and address.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let handler = RaftRequestHandler::new();
        let addr: SocketAddr = self.addrs[i].parse().unwrap();
        let transport = transport_again(addr, PSK, &handler, &self.cut).await;
        let provider = ReplicatedProvider::start(self.config(i), transport.clone(), &handler)
            .await
            .expect("restart a node");
        self.nodes[i] = Some(TestNode {
            provider,
            transport,
            handler,
        });
    }

    /// Cuts the network between `side` and the other nodes (requests across are refused).
    pub fn partition(&self, side: &[usize]) {
        let mut cut = self.cut.lock().unwrap();
        cut.clear();
        for i in side {
            cut.insert(self.node(*i).transport.host_id().to_string());
        }
    }

    /// Restores the network.
    pub fn heal(&self) {
        self.cut.lock().unwrap().clear();
    }

    pub async fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}
