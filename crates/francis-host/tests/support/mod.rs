//! Test actors and helpers shared by the host's integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use francis_core::{
    Actor, ActorContext, ActorInit, ActorRef, Client, Envelope, Error, async_trait,
};
use francis_host::{ActorOptions, HostEvent, LocalHost, TokioClock};
use francis_store::{HostRecord, MemoryProvider, Op, Provider, Reply, StoreResult};
use serde::{Deserialize, Serialize};
use tokio::sync::{Barrier, Notify, broadcast};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const TYPE: &str = "probe";

pub fn actor(id: &str) -> ActorRef {
    ActorRef::new(TYPE, id).unwrap()
}

pub fn json(v: serde_json::Value) -> Envelope {
    Envelope::encode(&v).unwrap()
}

/// Shared observations of every activation of the probe actor type.
pub struct Probe {
    pub start: Instant,
    exclusive: AtomicUsize,
    shared: AtomicUsize,
    pub max_shared: AtomicUsize,
    pub violations: AtomicUsize,
    /// Exclusive turns begun, on every activation.
    pub turns: AtomicUsize,
    pub created: AtomicUsize,
    pub deactivated: AtomicUsize,
    pub log: Mutex<Vec<String>>,
    pub alarms: Mutex<Vec<(String, Option<String>, Duration)>>,
    pub fail_alarms: AtomicUsize,
    /// While set, a failing alarm fails with an error that reads as the cluster's
    /// (`Overloaded`), as an actor passing on a failed call's error would.
    pub fail_alarms_as_overloaded: AtomicBool,
    /// Activations alive per actor id (across every host sharing this probe).
    pub alive: Mutex<std::collections::HashMap<String, usize>>,
    /// Times an actor was activated while another activation of it was alive.
    pub double_activations: AtomicUsize,
    pub release: Notify,
    pub barrier: Barrier,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            start: Instant::now(),
            exclusive: AtomicUsize::new(0),
            shared: AtomicUsize::new(0),
            max_shared: AtomicUsize::new(0),
            violations: AtomicUsize::new(0),
            turns: AtomicUsize::new(0),
            created: AtomicUsize::new(0),
            deactivated: AtomicUsize::new(0),
            log: Mutex::default(),
            alarms: Mutex::default(),
            fail_alarms: AtomicUsize::new(0),
            fail_alarms_as_overloaded: AtomicBool::new(false),
            alive: Mutex::default(),
            double_activations: AtomicUsize::new(0),
            release: Notify::new(),
            barrier: Barrier::new(2),
        }
    }
}

impl Probe {
    fn enter_exclusive(&self) {
        self.turns.fetch_add(1, Ordering::SeqCst);
        if self.exclusive.fetch_add(1, Ordering::SeqCst) != 0
            || self.shared.load(Ordering::SeqCst) != 0
        {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn exit_exclusive(&self) {
        self.exclusive.fetch_sub(1, Ordering::SeqCst);
    }
    fn enter_shared(&self) {
        let now = self.shared.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_shared.fetch_max(now, Ordering::SeqCst);
        if self.exclusive.load(Ordering::SeqCst) != 0 {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn exit_shared(&self) {
        self.shared.fetch_sub(1, Ordering::SeqCst);
    }
    pub fn push(&self, entry: impl Into<String>) {
        self.log.lock().unwrap().push(entry.into());
    }
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    pub fn alarm_count(&self) -> usize {
        self.alarms.lock().unwrap().len()
    }
}

/// The argument of the probe's `relay` method.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Relay {
    /// The probes to call, in order.
    pub hops: Vec<String>,
    /// Peek the last one's count instead of calling it.
    #[serde(default)]
    pub peek: bool,
}

/// Starts `relay` on probe `first` through `svc`, with `hops` after it.
pub async fn relay(
    svc: &francis_host::HostService,
    first: &str,
    hops: &[&str],
    peek: bool,
) -> Result<Option<Envelope>, Error> {
    use francis_core::ActorService;
    let hops = hops.iter().map(|h| h.to_string()).collect();
    svc.invoke(
        &actor(first),
        "relay",
        Envelope::encode(&Relay { hops, peek })?,
    )
    .await
}

/// Probe `id`'s count, read with a peek through `svc`.
pub async fn peek_count(svc: &francis_host::HostService, id: &str) -> i64 {
    use francis_core::ActorService;
    svc.peek(&actor(id), "count", Envelope::null())
        .await
        .unwrap()
        .unwrap()
        .decode()
        .unwrap()
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Count {
    pub n: i64,
}

pub struct ProbeActor {
    id: String,
    probe: Arc<Probe>,
    state: Client<Count>,
}

impl ProbeActor {
    pub fn new(init: ActorInit, probe: Arc<Probe>) -> Self {
        probe.created.fetch_add(1, Ordering::SeqCst);
        let id = init.actor.actor_id().to_owned();
        let mut alive = probe.alive.lock().unwrap();
        let count = alive.entry(id.clone()).or_default();
        *count += 1;
        if *count > 1 {
            probe.double_activations.fetch_add(1, Ordering::SeqCst);
        }
        drop(alive);
        ProbeActor {
            id,
            probe,
            state: Client::new(init.actor),
        }
    }
}

#[async_trait]
impl Actor for ProbeActor {
    async fn invoke(
        &mut self,
        ctx: &ActorContext,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        self.probe.enter_exclusive();
        let result = self.invoke_inner(ctx, method, data).await;
        self.probe.exit_exclusive();
        result
    }

    async fn peek(
        &self,
        ctx: &ActorContext,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        self.probe.enter_shared();
        let result = async {
            match method {
                "count" => {
                    for _ in 0..5 {
                        tokio::task::yield_now().await;
                    }
                    let c = self.state.get(ctx).await?;
                    Ok(Some(Envelope::encode(&c.n)?))
                }
                "barrier" => {
                    self.probe.barrier.wait().await;
                    Ok(None)
                }
                "log" => {
                    let tag: String = data.decode()?;
                    self.probe.push(format!("{tag}:start"));
                    tokio::task::yield_now().await;
                    self.probe.push(format!("{tag}:end"));
                    Ok(None)
                }
                "write" => {
                    self.state.set(ctx, Count { n: 99 }).await?;
                    Ok(None)
                }
                _ => Err(Error::actor(format!("unknown peek {method}"))),
            }
        }
        .await;
        self.probe.exit_shared();
        result
    }

    async fn alarm(
        &mut self,
        _ctx: &ActorContext,
        name: &str,
        data: Option<Envelope>,
    ) -> Result<(), Error> {
        self.probe.enter_exclusive();
        self.probe.alarms.lock().unwrap().push((
            name.to_owned(),
            data.map(|d| d.to_string()),
            self.probe.start.elapsed(),
        ));
        self.probe.exit_exclusive();
        let fail = self
            .probe
            .fail_alarms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            if self.probe.fail_alarms_as_overloaded.load(Ordering::SeqCst) {
                return Err(Error::Overloaded(
                    "a call the alarm made was refused".into(),
                ));
            }
            return Err(Error::actor("alarm failed on purpose"));
        }
        Ok(())
    }

    async fn deactivate(&mut self, _ctx: &ActorContext) -> Result<(), Error> {
        self.probe.deactivated.fetch_add(1, Ordering::SeqCst);
        *self
            .probe
            .alive
            .lock()
            .unwrap()
            .entry(self.id.clone())
            .or_default() -= 1;
        Ok(())
    }
}

impl ProbeActor {
    async fn invoke_inner(
        &mut self,
        ctx: &ActorContext,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        match method {
            "increment" => {
                let mut c = self.state.get(ctx).await?;
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                c.n += 1;
                self.state.set(ctx, c.clone()).await?;
                Ok(Some(Envelope::encode(&c.n)?))
            }
            "get" => Ok(Some(Envelope::encode(&self.state.get(ctx).await?.n)?)),
            "hold" => {
                self.probe.push("hold:start");
                tokio::select! {
                    _ = self.probe.release.notified() => self.probe.push("hold:released"),
                    _ = ctx.cancelled() => self.probe.push("hold:cancelled"),
                }
                Ok(None)
            }
            "hold-increment" => {
                // Waits for the release whatever happens to the caller, then counts.
                self.probe.push("hold-increment:start");
                self.probe.release.notified().await;
                let mut c = self.state.get(ctx).await?;
                c.n += 1;
                self.state.set(ctx, c.clone()).await?;
                self.probe.push("hold-increment:end");
                Ok(Some(Envelope::encode(&c.n)?))
            }
            "hold-forever" => {
                self.probe.push("hold-forever:start");
                std::future::pending::<()>().await;
                Ok(None)
            }
            "log" => {
                let tag: String = data.decode()?;
                self.probe.push(format!("{tag}:start"));
                tokio::task::yield_now().await;
                self.probe.push(format!("{tag}:end"));
                Ok(None)
            }
            "halt-self" => {
                ctx.halt();
                Ok(Some(Envelope::encode(&self.state.get(ctx).await?.n)?))
            }
            "relay" => {
                // Calls the next probe of `hops` with the rest (peeking its count when only
                // one is left and `peek` is set); the last of the chain counts.
                let Relay { mut hops, peek } = data.decode()?;
                if hops.is_empty() {
                    let mut c = self.state.get(ctx).await?;
                    c.n += 1;
                    self.state.set(ctx, c.clone()).await?;
                    return Ok(Some(Envelope::encode(&c.n)?));
                }
                let next = actor(&hops.remove(0));
                if peek && hops.is_empty() {
                    return ctx.service().peek(&next, "count", Envelope::null()).await;
                }
                let rest = Envelope::encode(&Relay { hops, peek })?;
                ctx.service().invoke(&next, "relay", rest).await
            }
            "count-and-relay" => {
                // Counts, then relays to `hops` (its own write goes first).
                let mut c = self.state.get(ctx).await?;
                c.n += 1;
                self.state.set(ctx, c).await?;
                let Relay { mut hops, peek } = data.decode()?;
                let next = actor(&hops.remove(0));
                let rest = Envelope::encode(&Relay { hops, peek })?;
                ctx.service().invoke(&next, "relay", rest).await
            }
            "fail" => Err(Error::actor("the actor said no")),
            "panic" => panic!("probe panicked on purpose"),
            _ => Err(Error::MethodNotImplemented {
                actor: ctx.actor().clone(),
                entry: "invoke",
                method: method.to_owned(),
            }),
        }
    }
}

/// An actor type that implements nothing.
pub struct Empty;

#[async_trait]
impl Actor for Empty {}

pub fn options() -> ActorOptions {
    ActorOptions {
        idle_timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    }
}

/// A running host over `provider`, on tokio's clock.
pub struct TestHost {
    pub host: Arc<LocalHost>,
    pub probe: Arc<Probe>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), francis_host::HostError>>,
    pub events: broadcast::Receiver<HostEvent>,
}

pub async fn start(provider: Arc<dyn Provider>, opts: ActorOptions) -> TestHost {
    start_with(provider, opts, |b| b).await
}

pub async fn start_with(
    provider: Arc<dyn Provider>,
    opts: ActorOptions,
    configure: impl FnOnce(francis_host::LocalHostBuilder) -> francis_host::LocalHostBuilder,
) -> TestHost {
    start_with_probe(provider, opts, Arc::new(Probe::default()), configure).await
}

/// Like [`start_with`], with a probe shared with other hosts (to see activations across them).
pub async fn start_with_probe(
    provider: Arc<dyn Provider>,
    opts: ActorOptions,
    probe: Arc<Probe>,
    configure: impl FnOnce(francis_host::LocalHostBuilder) -> francis_host::LocalHostBuilder,
) -> TestHost {
    start_configured(opts, probe, move |b| configure(b.provider(provider))).await
}

/// A running host built by `configure` (which chooses the store), serving the probe type.
pub async fn start_configured(
    opts: ActorOptions,
    probe: Arc<Probe>,
    configure: impl FnOnce(francis_host::LocalHostBuilder) -> francis_host::LocalHostBuilder,
) -> TestHost {
    let builder = LocalHost::builder()
        .address("127.0.0.1:7571")
        .clock(Arc::new(TokioClock::new()));
    let host = Arc::new(configure(builder).build().await.unwrap());
    let p = probe.clone();
    host.register_actor(TYPE, move |init| ProbeActor::new(init, p.clone()), opts)
        .unwrap();
    host.register_actor("empty", |_| Empty, ActorOptions::default())
        .unwrap();
    let events = host.events();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let host = host.clone();
        let shutdown = shutdown.clone();
        async move { host.run(shutdown).await }
    });
    tokio::time::timeout(Duration::from_secs(30), host.serving())
        .await
        .expect("host serves")
        .unwrap();
    TestHost {
        host,
        probe,
        shutdown,
        task,
        events,
    }
}

pub async fn memory_host(opts: ActorOptions) -> TestHost {
    start(Arc::new(MemoryProvider::new()), opts).await
}

impl TestHost {
    pub fn service(&self) -> francis_host::HostService {
        self.host.service()
    }

    /// Waits (on tokio's clock) for an event matching `pred`, failing after `limit`.
    pub async fn event(&mut self, limit: Duration, pred: impl Fn(&HostEvent) -> bool) -> HostEvent {
        tokio::time::timeout(limit, async {
            loop {
                match self.events.recv().await {
                    Ok(e) if pred(&e) => return e,
                    Ok(_) => continue,
                    Err(e) => panic!("event stream ended: {e}"),
                }
            }
        })
        .await
        .expect("expected event did not arrive in time")
    }

    /// Waits (on tokio's clock) until the probe logged `entry`.
    pub async fn wait_for_log(&self, entry: &str) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !self.probe.log().iter().any(|e| e == entry) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{entry} never logged: {:?}", self.probe.log()));
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub async fn invoke(
    svc: &francis_host::HostService,
    id: &str,
    method: &str,
) -> Result<Option<Envelope>, Error> {
    use francis_core::ActorService;
    svc.invoke(&actor(id), method, Envelope::null()).await
}

pub async fn increment(svc: &francis_host::HostService, id: &str) -> i64 {
    invoke(svc, id, "increment")
        .await
        .unwrap()
        .unwrap()
        .decode()
        .unwrap()
}

/// A provider that can be made to hang on every call, as if the store (or the whole host
/// process) froze for the host using it.
pub struct StallingProvider {
    inner: Arc<dyn Provider>,
    pub stall: AtomicBool,
    /// Heartbeats that start before this instant never answer (a store whose leader is gone).
    pub heartbeat_outage_until: Mutex<Option<Instant>>,
    /// The next this many `live_hosts` reads return no host (a view read while this host was
    /// between registrations).
    pub hide_hosts: AtomicUsize,
    /// While set, `live_hosts` answers these hosts, as live (a view that lags behind).
    pub frozen_view: Mutex<Option<Vec<HostRecord>>>,
    /// While set, `live_hosts` fails as a store without quorum does.
    pub fail_live_hosts: AtomicBool,
    /// While set, state writes wait (a commit that takes its time).
    pub hold_writes: AtomicBool,
    /// Wakes the state writes that wait on `hold_writes`.
    pub writes_released: Notify,
    /// While set, state writes fail as fenced (the placement moved on).
    pub fence_writes: AtomicBool,
    /// The next this many `complete_alarms` fail as a store that is briefly unavailable.
    pub fail_alarm_outcomes: AtomicUsize,
    /// The name of every operation passed on, in order.
    pub seen: Mutex<Vec<&'static str>>,
}

impl StallingProvider {
    pub fn new(inner: impl Provider) -> Self {
        Self::wrap(Arc::new(inner))
    }

    /// Wraps a provider already shared (a host's store layer).
    pub fn wrap(inner: Arc<dyn Provider>) -> Self {
        StallingProvider {
            inner,
            stall: AtomicBool::new(false),
            heartbeat_outage_until: Mutex::new(None),
            hide_hosts: AtomicUsize::new(0),
            frozen_view: Mutex::new(None),
            fail_live_hosts: AtomicBool::new(false),
            hold_writes: AtomicBool::new(false),
            writes_released: Notify::new(),
            fence_writes: AtomicBool::new(false),
            fail_alarm_outcomes: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// How many operations named `name` were passed on.
    pub fn count(&self, name: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|n| **n == name)
            .count()
    }

    /// Lets the state writes that wait on `hold_writes` go, and those after them.
    pub fn release_writes(&self) {
        self.hold_writes.store(false, Ordering::SeqCst);
        self.writes_released.notify_waiters();
    }

    /// From now on, `live_hosts` answers the hosts live now, whatever happens to them.
    pub async fn freeze_view(&self) {
        let hosts = self
            .inner
            .live_hosts(Utc::now(), Duration::from_secs(3600))
            .await
            .unwrap();
        *self.frozen_view.lock().unwrap() = Some(hosts);
    }

    async fn gate(&self) {
        if self.stall.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

impl StallingProvider {
    /// What the fault settings make of one operation: `None` to pass it on.
    async fn intercept(&self, op: &Op) -> Option<StoreResult<Reply>> {
        self.gate().await;
        match op {
            Op::Heartbeat { .. } => {
                let outage = *self.heartbeat_outage_until.lock().unwrap();
                if outage.is_some_and(|until| Instant::now() < until) {
                    std::future::pending::<()>().await;
                }
                None
            }
            Op::LiveHosts { now, .. } => {
                if self.fail_live_hosts.load(Ordering::SeqCst) {
                    return Some(Err(francis_store::StoreError::NoQuorum {
                        unreachable: vec!["127.0.0.1:1".into()],
                    }));
                }
                let hidden = self
                    .hide_hosts
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if hidden {
                    return Some(Ok(Reply::Hosts(Vec::new())));
                }
                let frozen = self.frozen_view.lock().unwrap().clone();
                frozen.map(|mut hosts| {
                    for h in &mut hosts {
                        h.last_heartbeat = *now;
                    }
                    Ok(Reply::Hosts(hosts))
                })
            }
            Op::SetState { actor, .. } | Op::DeleteState { actor, .. } => {
                loop {
                    let released = self.writes_released.notified();
                    if !self.hold_writes.load(Ordering::SeqCst) {
                        break;
                    }
                    released.await;
                }
                if self.fence_writes.load(Ordering::SeqCst) {
                    return Some(Err(francis_store::StoreError::Fenced {
                        actor: actor.clone(),
                        epoch: 0,
                    }));
                }
                None
            }
            Op::CompleteAlarms { .. } => {
                let fail = self
                    .fail_alarm_outcomes
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                fail.then(|| {
                    Err(francis_store::StoreError::Unavailable(
                        "the store is briefly unavailable".into(),
                    ))
                })
            }
            _ => None,
        }
    }
}

#[async_trait]
impl Provider for StallingProvider {
    async fn execute_batch(&self, ops: Vec<Op>) -> Vec<StoreResult<Reply>> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(self.execute(op).await);
        }
        results
    }

    async fn execute(&self, op: Op) -> StoreResult<Reply> {
        self.seen.lock().unwrap().push(op.name());
        match self.intercept(&op).await {
            Some(answer) => answer,
            None => self.inner.execute(op).await,
        }
    }
}

/// Polls `cond` until it holds, failing after `limit` (for state a background task reaches).
pub async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The runtime PSK of the multi-host tests.
pub const CLUSTER_PSK: &str = "a-test-runtime-psk-that-is-long-enough";

/// The health deadline of the failover tests.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// How quickly hosts give up on the store and on each other.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub health_deadline: Duration,
    pub store_timeout: Duration,
}

/// Failover tests: a short health deadline, and store calls that give up well within it (so a
/// turn stuck on a frozen store ends before another host may take the actor).
pub const FAILOVER: Pace = Pace {
    health_deadline: DEADLINE,
    store_timeout: Duration::from_secs(1),
};

/// Load tests, where nobody should fail over: room for a store round trip under a burst of
/// calls on a loaded two-core machine.
pub const STEADY: Pace = Pace {
    health_deadline: Duration::from_secs(10),
    store_timeout: Duration::from_secs(5),
};

/// The actor options of the multi-host tests: actors stay active through a test.
pub fn cluster_options() -> ActorOptions {
    ActorOptions {
        idle_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

/// A multi-host test's host at `addr`, on `pace`, with quick heartbeats and alarms.
pub fn cluster_host(
    b: francis_host::LocalHostBuilder,
    addr: std::net::SocketAddr,
    pace: Pace,
) -> francis_host::LocalHostBuilder {
    b.address(addr.to_string())
        .runtime_psks([CLUSTER_PSK])
        .with_timings(|t| {
            t.health_deadline = pace.health_deadline;
            t.heartbeat_interval = Duration::from_millis(250);
            t.store_timeout = pace.store_timeout;
            t.alarm_poll_interval = Duration::from_millis(100);
            t.alarm_fetch_ahead = Duration::from_millis(200);
            t.alarm_lease = Duration::from_secs(1);
            t.invoke_timeout = Duration::from_secs(10);
        })
}

/// A free UDP port on 127.0.0.1, for a host's peer (QUIC) address.
pub fn free_udp_addr() -> std::net::SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Increments `id` through `svc`; returns the count and the host that ran it.
pub async fn served_by(svc: &francis_host::HostService, id: &str) -> (i64, String) {
    let out = svc
        .invoke_traced(&actor(id), "increment", Envelope::null())
        .await
        .unwrap();
    (out.output.unwrap().decode().unwrap(), out.served_by)
}

/// Retries `increment` until it succeeds or `limit` passes; returns the count and the host.
pub async fn increment_eventually(
    svc: &francis_host::HostService,
    id: &str,
    limit: Duration,
) -> (i64, String) {
    let until = Instant::now() + limit;
    loop {
        match svc
            .invoke_traced(&actor(id), "increment", Envelope::null())
            .await
        {
            Ok(out) => return (out.output.unwrap().decode().unwrap(), out.served_by),
            // A timed-out call was not acknowledged (its write never landed): retry it too.
            Err(e)
                if (e.is_retryable() || e.kind() == francis_core::ErrorKind::Timeout)
                    && Instant::now() < until =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("increment of {id} failed: {e}"),
        }
    }
}

/// An actor id (`<prefix><n>`) that `via` routes to `owner`.
pub async fn actor_owned_by(
    via: &francis_host::HostService,
    owner: &TestHost,
    prefix: &str,
) -> String {
    for i in 0..40 {
        let id = format!("{prefix}{i}");
        let (_, host) = served_by(via, &id).await;
        if host == owner.host.address() {
            return id;
        }
    }
    panic!("no actor landed on {}", owner.host.address());
}

/// The alarm-failover scenario shared by the store-specific cluster tests: a repeating alarm
/// (every 500 ms) set through `via` on `victim`, an actor owned by the host whose store is
/// `frozen`, fires there; then that store freezes, and once the owner's lease has expired the
/// alarm keeps firing on another host. Never twice for one due time (firings stay at least half
/// an interval apart), never on two activations at once.
pub async fn alarm_cadence_survives_an_owner_freeze(
    via: &francis_host::HostService,
    victim: &str,
    frozen: &StallingProvider,
    probe: &Probe,
) {
    use francis_core::ActorService;
    let interval = Duration::from_millis(500);
    via.set_alarm(
        &actor(victim),
        "tick",
        francis_core::AlarmProperties {
            due_time: Utc::now(),
            interval: Some(francis_core::Interval::new(interval).unwrap()),
            ttl: None,
            data: None,
        },
    )
    .await
    .unwrap();
    let wait_for = |count: usize, limit: Duration| async move {
        let until = Instant::now() + limit;
        while probe.alarm_count() < count {
            assert!(
                Instant::now() < until,
                "only {} firings",
                probe.alarm_count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for(3, Duration::from_secs(10)).await;
    frozen.stall.store(true, Ordering::SeqCst);
    let before = probe.alarm_count();
    // after the owner's lease expires, another host takes the actor and its alarm over
    wait_for(before + 3, Duration::from_secs(15)).await;
    let times: Vec<Duration> = probe
        .alarms
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, t)| *t)
        .collect();
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= interval / 2, "{times:?}");
    }
    assert_eq!(probe.double_activations.load(Ordering::SeqCst), 0);
    via.delete_alarm(&actor(victim), "tick").await.unwrap();
    frozen.stall.store(false, Ordering::SeqCst);
}

/// A host started by [`host_on`].
pub struct RunningHost {
    pub host: Arc<LocalHost>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), francis_host::HostError>>,
}

impl RunningHost {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Registers the probe actor type on `host` with the cluster scenarios' options, recording into
/// `probe`.
pub fn serve_probe(host: &LocalHost, probe: &Arc<Probe>) {
    let p = probe.clone();
    host.register_actor(
        TYPE,
        move |init| ProbeActor::new(init, p.clone()),
        cluster_options(),
    )
    .unwrap();
}

/// Invokes `method` of `id` through `svc` until the call is routed: a host learns of another's
/// actor types from the store's membership, so a first call may find nobody serving the type
/// yet (or the owner not yet reachable). Fails after 20 s.
pub async fn invoke_until_routed(
    svc: &francis_host::HostService,
    id: &ActorRef,
    method: &str,
) -> Option<Envelope> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match francis_core::ActorService::invoke(svc, id, method, Envelope::null()).await {
            Ok(out) => return out,
            Err(e)
                if e.is_retryable()
                    || e.kind() == francis_core::ErrorKind::ActorTypeUnsupported =>
            {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A host on its own connection to the SQLite file at `path` (shared with other hosts), with a
/// free peer port, serving what `register` registers.
pub async fn host_on(path: &std::path::Path, register: impl FnOnce(&LocalHost)) -> RunningHost {
    host_built(path, free_udp_addr().to_string(), |b| b, register).await
}

/// As [`host_on`], advertising `address`, with `edit` applied to the builder.
pub async fn host_built(
    path: &std::path::Path,
    address: String,
    edit: impl FnOnce(francis_host::LocalHostBuilder) -> francis_host::LocalHostBuilder,
    register: impl FnOnce(&LocalHost),
) -> RunningHost {
    use francis_store_sqlite::{SqliteOptions, SqliteProvider};
    let provider = SqliteProvider::open(path, SqliteOptions::default())
        .await
        .unwrap();
    let builder = cluster_host(
        LocalHost::builder().provider(Arc::new(provider)),
        free_udp_addr(),
        FAILOVER,
    )
    .address(address);
    let host = Arc::new(edit(builder).build().await.unwrap());
    register(&host);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (host, shutdown) = (host.clone(), shutdown.clone());
        async move { host.run(shutdown).await }
    });
    tokio::time::timeout(Duration::from_secs(30), host.serving())
        .await
        .expect("host serves")
        .unwrap();
    RunningHost {
        host,
        shutdown,
        task,
    }
}
