//! Test actors and helpers shared by the host's integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use francis_core::{
    Actor, ActorContext, ActorInit, ActorRef, Client, Envelope, Error, async_trait,
};
use francis_host::{ActorOptions, Health, HostEvent, LocalHost, TokioClock};
use francis_store::{MemoryProvider, Provider};
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
    pub created: AtomicUsize,
    pub deactivated: AtomicUsize,
    pub log: Mutex<Vec<String>>,
    pub alarms: Mutex<Vec<(String, Option<String>, Duration)>>,
    pub fail_alarms: AtomicUsize,
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
            created: AtomicUsize::new(0),
            deactivated: AtomicUsize::new(0),
            log: Mutex::default(),
            alarms: Mutex::default(),
            fail_alarms: AtomicUsize::new(0),
            release: Notify::new(),
            barrier: Barrier::new(2),
        }
    }
}

impl Probe {
    fn enter_exclusive(&self) {
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

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Count {
    pub n: i64,
}

pub struct ProbeActor {
    probe: Arc<Probe>,
    state: Client<Count>,
}

impl ProbeActor {
    pub fn new(init: ActorInit, probe: Arc<Probe>) -> Self {
        probe.created.fetch_add(1, Ordering::SeqCst);
        ProbeActor {
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
            return Err(Error::actor("alarm failed on purpose"));
        }
        Ok(())
    }

    async fn deactivate(&mut self, _ctx: &ActorContext) -> Result<(), Error> {
        self.probe.deactivated.fetch_add(1, Ordering::SeqCst);
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
    let builder = LocalHost::builder()
        .address("127.0.0.1:7571")
        .provider(provider)
        .clock(Arc::new(TokioClock::new()));
    let host = Arc::new(configure(builder).build().await.unwrap());
    let probe = Arc::new(Probe::default());
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
    let mut health = host.health_watch();
    tokio::time::timeout(
        Duration::from_secs(30),
        health.wait_for(|h| *h == Health::Serving),
    )
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
