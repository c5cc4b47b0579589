//! `LocalHost`: the builder, registration of actor types, and the host's lifecycle.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use francis_core::{Actor, ActorInit, ActorRef, RESERVED_PREFIX, TypedActor, validate_name};
use francis_store::{ActorTypeSpec, HostRegistration, Provider, StoreError};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::clock::{Clock, SystemClock};
use crate::config::{ActorOptions, HostTimings};
use crate::error::HostError;
use crate::events::{DeactivationReason, HostEvent};
use crate::policy::{fence_after, heartbeat_attempt_bound, heartbeat_wait, should_deactivate_idle};
use crate::runtime::{Activations, Health, TypeEntry};
use crate::service::HostInner;
use crate::service::HostService;
use crate::state::StoreAccess;

enum StoreChoice {
    None,
    Sqlite(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(String),
    Provider(Arc<dyn Provider>),
}

/// Builds a [`LocalHost`]; offers the options of a local host.
pub struct LocalHostBuilder {
    address: Option<String>,
    bind: Option<std::net::SocketAddr>,
    store: StoreChoice,
    peers: Vec<String>,
    psks: Vec<Vec<u8>>,
    timings: HostTimings,
    clock: Arc<dyn Clock>,
    layer: Option<StoreLayer>,
}

/// Wraps the provider a host uses (see [`LocalHostBuilder::store_layer`]).
type StoreLayer = Box<dyn FnOnce(Arc<dyn Provider>) -> Arc<dyn Provider> + Send>;

impl std::fmt::Debug for LocalHostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHostBuilder")
            .field("address", &self.address)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl LocalHostBuilder {
    /// The peer address this host advertises to other hosts (`host:port`). Required. The peer
    /// server binds it too, unless [`LocalHostBuilder::bind_address`] says otherwise.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The socket address the peer server binds (such as `0.0.0.0:7572`), when it is not the
    /// advertised one: in a container or behind NAT, where the address other hosts reach is not
    /// an address of this machine. The advertised address then need not resolve here, and its
    /// port may differ (a mapped port); port 0 is refused, since other hosts could not know it.
    pub fn bind_address(mut self, bind: std::net::SocketAddr) -> Self {
        self.bind = Some(bind);
        self
    }

    /// Use an SQLite database file (created if missing) as the store.
    pub fn sqlite(mut self, path: impl Into<PathBuf>) -> Self {
        self.store = StoreChoice::Sqlite(path.into());
        self
    }

    /// The peer addresses of every host of a replicated cluster (this host's own address may be
    /// listed too). With peers and `.sqlite(path)`, the store is replicated with Raft: each host
    /// keeps its own SQLite file and applies the same log (`docs/replication.md`). No peers (the
    /// default) means a plain SQLite store. Needs a runtime PSK.
    pub fn peers<I, S>(mut self, peers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.peers = peers
            .into_iter()
            .map(Into::into)
            .filter(|p: &String| !p.trim().is_empty())
            .collect();
        self
    }

    /// Use a PostgreSQL database shared with other hosts as the store: a `postgres://` or
    /// `postgresql://` URL, opened by [`LocalHostBuilder::build`] with the default
    /// [`francis_store_postgres::PostgresOptions`] (tables prefixed `francis_`, created if missing).
    /// For other options, build a [`francis_store_postgres::PostgresProvider`] and pass it to
    /// [`LocalHostBuilder::provider`]. A server that cannot be reached makes `build` fail
    /// with an error naming its host and port (never the password).
    ///
    /// Needs the `postgres` feature of `francis-host`.
    #[cfg(feature = "postgres")]
    pub fn postgres(mut self, url: impl Into<String>) -> Self {
        self.store = StoreChoice::Postgres(url.into());
        self
    }

    /// Tests: an in-memory store, gone with the host, on the host's own clock. Together with
    /// `.clock(Arc::new(TokioClock::new()))` and `#[tokio::test(start_paused = true)]`, alarms,
    /// idle timeouts and TTLs run on paused time (see the testing guide). Behind the `testing`
    /// feature; not for production (nothing is durable).
    #[cfg(feature = "testing")]
    pub fn in_memory(mut self) -> Self {
        self.store = StoreChoice::Provider(Arc::new(francis_store::MemoryProvider::new()));
        self
    }

    /// Use an already-built provider as the store.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.store = StoreChoice::Provider(provider);
        self
    }

    /// Puts a layer of yours between this host and its store, whichever store is chosen: the
    /// host makes every store operation through what `layer` returns (to count, time or trace
    /// them, or to inject faults in a test). With a replicated store, the layer sees this
    /// host's operations, not the replication traffic between hosts.
    pub fn store_layer(
        mut self,
        layer: impl FnOnce(Arc<dyn Provider>) -> Arc<dyn Provider> + Send + 'static,
    ) -> Self {
        self.layer = Some(Box::new(layer));
        self
    }

    /// The cluster keys from which the hosts' mutual-TLS CA is derived (the worker's `-runtime-psk`).
    /// The first signs this host's certificate; certificates from any are trusted.
    pub fn runtime_psks<I, K>(mut self, psks: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        self.psks = psks.into_iter().map(|k| k.as_ref().to_vec()).collect();
        self
    }

    /// How long running turns may take to finish on shutdown.
    pub fn shutdown_grace_period(mut self, grace: Duration) -> Self {
        self.timings.shutdown_grace_period = grace;
        self
    }

    /// Health-check deadline: how long a host stays live without a heartbeat (a host fences
    /// itself a quarter of it earlier). Heartbeats become at least four times as frequent.
    pub fn health_deadline(mut self, deadline: Duration) -> Self {
        self.timings.health_deadline = deadline;
        self.timings.heartbeat_interval = self.timings.heartbeat_interval.min(deadline / 4);
        self
    }

    /// All timings at once.
    pub fn timings(mut self, timings: HostTimings) -> Self {
        self.timings = timings;
        self
    }

    /// Edits the timings in place: `.with_timings(|t| t.alarm_poll_interval = ms(100))`.
    pub fn with_timings(mut self, edit: impl FnOnce(&mut HostTimings)) -> Self {
        edit(&mut self.timings);
        self
    }

    /// The wall clock (tests use [`crate::TokioClock`] with paused time).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Opens the store and builds the host; nothing is served until [`LocalHost::run`].
    pub async fn build(self) -> Result<LocalHost, HostError> {
        let address = self
            .address
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| HostError::InvalidConfig("an advertised address is required".into()))?;
        self.timings.validate().map_err(HostError::InvalidConfig)?;
        let host_id = new_host_id();
        let replicated = !self.peers.is_empty();
        if replicated && self.psks.is_empty() {
            return Err(HostError::InvalidConfig(
                "a replicated store (peers) needs a runtime PSK: peers talk over mutual TLS".into(),
            ));
        }
        #[cfg(feature = "replication")]
        let raft = replicated.then(francis_replication::RaftRequestHandler::new);
        #[cfg(not(feature = "replication"))]
        let raft: Option<crate::replica::RaftHandler> = if replicated {
            return Err(HostError::InvalidConfig(
                "peers (a replicated store) need the `replication` feature of francis-host".into(),
            ));
        } else {
            None
        };
        let peer = crate::peer::PeerLink::new(&address, self.bind, self.psks, raft.clone()).await?;
        #[cfg_attr(not(feature = "replication"), allow(unused_mut))]
        let mut replica = None;
        let provider: Arc<dyn Provider> = match (self.store, raft) {
            (StoreChoice::None, _) => {
                return Err(HostError::InvalidConfig(
                    "a store is required: call .sqlite(path), .postgres(url) or .provider(..)"
                        .into(),
                ));
            }
            #[cfg(feature = "replication")]
            (StoreChoice::Sqlite(path), Some(raft)) => {
                // The replicated store talks over the peer transport, so it starts now.
                let transport = peer.start(&host_id)?.expect("a PSK is configured");
                let config =
                    francis_replication::ReplicationConfig::new(&address, self.peers, path);
                let started =
                    francis_replication::ReplicatedProvider::start(config, transport, &raft).await;
                let provider = match started {
                    Ok(p) => p,
                    Err(e) => {
                        peer.stop().await;
                        return Err(HostError::Replication(e));
                    }
                };
                replica = Some(provider.clone());
                Arc::new(provider)
            }
            (_, Some(_)) => {
                return Err(HostError::InvalidConfig(
                    "peers (a replicated store) need .sqlite(path): each host keeps its own file"
                        .into(),
                ));
            }
            (StoreChoice::Provider(p), None) => p,
            #[cfg(feature = "postgres")]
            (StoreChoice::Postgres(url), None) => Arc::new(
                francis_store_postgres::PostgresProvider::connect(
                    &url,
                    francis_store_postgres::PostgresOptions::default(),
                )
                .await?,
            ),
            (StoreChoice::Sqlite(path), None) => Arc::new(
                francis_store_sqlite::SqliteProvider::open(
                    &path,
                    francis_store_sqlite::SqliteOptions::default(),
                )
                .await?,
            ),
        };
        let provider = match self.layer {
            Some(layer) => layer(provider),
            None => provider,
        };
        let store = StoreAccess {
            provider,
            clock: self.clock,
            timeout: self.timings.store_timeout,
        };
        let act = Activations::new(address, host_id, self.timings, store);
        let inner = HostInner::new(act, peer, replica);
        inner.act.set_outbound(crate::outbound::for_host(&inner));
        Ok(LocalHost { inner })
    }
}

fn new_host_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// An actor host: activates registered actor types on demand, runs their turns, fires their
/// alarms, and keeps its registration alive in the store.
///
/// Register actor types, take the [`HostService`] with [`LocalHost::service`], then call
/// [`LocalHost::run`] until shutdown.
///
/// Cheap to clone: clones are handles to the same host, so one can be moved into the task
/// that runs it while another keeps [`LocalHost::events`], [`LocalHost::health`] and
/// [`LocalHost::active_actors`] at hand.
#[derive(Clone)]
pub struct LocalHost {
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for LocalHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHost")
            .field("address", &self.inner.act.address)
            .field("host_id", &self.inner.act.host_id())
            .finish_non_exhaustive()
    }
}

impl LocalHost {
    /// A builder with the documented defaults.
    pub fn builder() -> LocalHostBuilder {
        LocalHostBuilder {
            address: None,
            bind: None,
            store: StoreChoice::None,
            peers: Vec::new(),
            psks: Vec::new(),
            timings: HostTimings::default(),
            clock: Arc::new(SystemClock),
            layer: None,
        }
    }

    /// Registers a typed actor (an `impl` block marked `#[actor]`) under its type name
    /// ([`TypedActor::TYPE`]); otherwise as [`LocalHost::register_actor`].
    pub fn register<A: TypedActor>(
        &self,
        factory: impl Fn(ActorInit) -> A + Send + Sync + 'static,
        options: ActorOptions,
    ) -> Result<(), HostError> {
        self.register_actor(A::TYPE, factory, options)
    }

    /// Registers an actor type served by this host. Must happen before [`LocalHost::run`];
    /// a duplicate, malformed or reserved type is an error.
    pub fn register_actor<F, A>(
        &self,
        actor_type: &str,
        factory: F,
        options: ActorOptions,
    ) -> Result<(), HostError>
    where
        F: Fn(ActorInit) -> A + Send + Sync + 'static,
        A: Actor,
    {
        validate_name("actor type", actor_type).map_err(HostError::InvalidActorType)?;
        if actor_type.starts_with(RESERVED_PREFIX) {
            return Err(HostError::InvalidActorType(
                francis_core::Error::ActorTypeReserved(actor_type.to_owned()),
            ));
        }
        options.validate().map_err(HostError::InvalidConfig)?;
        if self.inner.act.running.load(Ordering::Acquire) {
            return Err(HostError::AlreadyRunning);
        }
        let mut types = self.inner.act.types.write().expect("types lock");
        if types.contains_key(actor_type) {
            return Err(HostError::DuplicateActorType(actor_type.to_owned()));
        }
        types.insert(
            actor_type.to_owned(),
            Arc::new(TypeEntry {
                factory: Arc::new(move |init| Box::new(factory(init)) as Box<dyn Actor>),
                options,
                methods: Default::default(),
            }),
        );
        Ok(())
    }

    /// The service handle, to invoke actors and manage state and alarms.
    pub fn service(&self) -> HostService {
        HostService::new(self.inner.clone())
    }

    /// The advertised address.
    pub fn address(&self) -> &str {
        &self.inner.act.address
    }

    /// The current host id (a new one after self-fencing).
    pub fn host_id(&self) -> String {
        self.inner.act.host_id()
    }

    /// The cluster CA certificate (PEM) derived from the first runtime PSK, for operators to pin
    /// or inspect; byte-identical on every host with the same key. `None` without a PSK.
    pub fn ca_pem(&self) -> Option<String> {
        self.inner.peer.ca_pem()
    }

    /// The replicated store's view (role, leader, unreachable peers), when this host takes
    /// part in one.
    #[cfg(feature = "replication")]
    pub fn replication_status(&self) -> Option<francis_replication::ReplicationStatus> {
        self.inner.replica.as_ref().map(|r| r.status())
    }

    /// Whether the host serves calls now. Never `Serving` once the host's lease has lapsed
    /// by its own monotonic clock, even if its heartbeat task has not noticed yet.
    pub fn health(&self) -> Health {
        self.inner.act.current_health()
    }

    /// Watches the host's health (e.g. to wait until it serves).
    pub fn health_watch(&self) -> watch::Receiver<Health> {
        self.inner.act.health.subscribe()
    }

    /// Lifecycle events from now on (activations, deactivations, alarms, fencing).
    pub fn events(&self) -> broadcast::Receiver<HostEvent> {
        self.inner.act.events.subscribe()
    }

    /// The actors active on this host.
    pub fn active_actors(&self) -> Vec<ActorRef> {
        self.service().active_actors()
    }

    /// Registers the host, serves until `shutdown` fires, then shuts down gracefully: new calls
    /// are refused, running turns get the grace period to finish (then are cancelled), every
    /// actor is deactivated and its placement released, and the registration is removed.
    ///
    /// An error ends `run` and is also shown on the health watch as [`Health::Failed`], so a
    /// task waiting for the host to serve ([`LocalHost::serving`]) learns of it even when
    /// `run` was spawned and nobody reads its result yet.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), HostError> {
        if self.inner.act.running.swap(true, Ordering::AcqRel) {
            return Err(HostError::AlreadyRunning);
        }
        let result = self.serve(shutdown).await;
        if let Err(e) = &result {
            error!(host = %self.inner.act.address, "host stopped with an error: {e}");
            self.inner
                .act
                .health
                .send_replace(Health::Failed(e.to_string()));
        }
        result
    }

    /// Waits until the host serves calls (its [`LocalHost::run`] registered it); fails with
    /// [`HostError::NotServing`] if `run` fails or the host stops first. A host that is fenced
    /// meanwhile re-registers by itself, so that is waited out. Waits forever if `run` is
    /// never called.
    pub async fn serving(&self) -> Result<(), HostError> {
        let mut health = self.health_watch();
        let seen = health
            .wait_for(|h| matches!(h, Health::Serving | Health::Stopped | Health::Failed(_)))
            .await
            .map_err(|_| HostError::NotServing("the host is gone".into()))?;
        match &*seen {
            Health::Serving => Ok(()),
            Health::Failed(why) => Err(HostError::NotServing(why.clone())),
            _ => Err(HostError::NotServing(
                "the host stopped before it served".into(),
            )),
        }
    }

    async fn serve(&self, shutdown: CancellationToken) -> Result<(), HostError> {
        let inner = &self.inner;
        // Bind the peer port first: a second process on the same address fails here, clearly.
        inner.peer.start(&inner.act.host_id())?;
        // A replicated store may have no quorum yet (the other hosts are starting): wait for it.
        loop {
            match register(inner).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() => {
                    warn!(host = %inner.act.address, "cannot register yet, retrying: {e}");
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            stop_peer(inner).await;
                            inner.act.health.send_replace(Health::Stopped);
                            return Ok(());
                        }
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => {
                    stop_peer(inner).await;
                    return Err(e);
                }
            }
        }
        let types: Vec<String> = inner
            .act
            .types
            .read()
            .expect("types lock")
            .keys()
            .cloned()
            .collect();
        let shortest_idle = inner
            .act
            .types
            .read()
            .expect("types lock")
            .values()
            .filter_map(|t| t.options.idle_timeout)
            .min();
        if let Some(idle) = shortest_idle {
            inner
                .router
                .set_cache_ttl(francis_placement::cache_entry_ttl(idle));
        }
        info!(host = %inner.act.address, host_id = %inner.act.host_id(), actor_types = ?types, "host started");
        inner.act.health.send_replace(Health::Serving);

        let stop = CancellationToken::new();
        let background = [
            tokio::spawn(crate::alarms::run(inner.clone(), stop.clone())),
            tokio::spawn(heartbeat_loop(inner.clone(), stop.clone())),
            tokio::spawn(idle_reaper(inner.clone(), stop.clone())),
            tokio::spawn(state_cleanup(inner.clone(), stop.clone())),
        ];

        shutdown.cancelled().await;
        info!(host = %inner.act.address, "host shutting down");
        inner.act.health.send_replace(Health::Draining);
        stop.cancel();
        let grace = inner.act.timings.shutdown_grace_period;
        let deadline = Instant::now() + grace;
        // New activations are refused now; sweep until nothing is left.
        for _ in 0..3 {
            let left = deadline.saturating_duration_since(Instant::now());
            if !inner
                .act
                .deactivate_all(DeactivationReason::Shutdown, left)
                .await
            {
                warn!(host = %inner.act.address, "turns still running after the {grace:?} grace period; cancelling them");
                inner.act.cancel_all_turns();
                let bound = inner.act.timings.store_timeout + Duration::from_secs(5);
                inner
                    .act
                    .deactivate_all(DeactivationReason::Shutdown, bound)
                    .await;
            }
            if inner.act.table.is_empty() {
                break;
            }
        }
        for task in background {
            let _ = task.await;
        }
        let store = &inner.act.store;
        if let Err(e) = store
            .call(store.provider.unregister_host(&inner.act.host_id()))
            .await
        {
            warn!(host = %inner.act.address, "could not unregister host: {e}");
        }
        leave_voters(inner).await;
        stop_peer(inner).await;
        inner.act.health.send_replace(Health::Stopped);
        info!(host = %inner.act.address, "host stopped");
        Ok(())
    }
}

/// Before a graceful stop, leaves the replicated store's voter set (if any), so the other
/// hosts keep a quorum without this one: the other of two goes on serving every actor.
async fn leave_voters(inner: &HostInner) {
    if let Some(replica) = &inner.replica {
        match replica.leave().await {
            Ok(true) => info!(host = %inner.act.address, "left the replicated store's voters"),
            Ok(false) => {}
            Err(e) => warn!(host = %inner.act.address,
                "could not leave the replicated store's voters (the others keep needing this \
                 host for a quorum until it is back): {e}"),
        }
    }
}

/// Stops the replicated store (if any), then the peer transport it talks over.
async fn stop_peer(inner: &HostInner) {
    if let Some(replica) = &inner.replica {
        replica.shutdown().await;
    }
    inner.peer.stop().await;
}

fn registration(inner: &HostInner, host_id: String) -> HostRegistration {
    let types = inner.act.types.read().expect("types lock");
    let mut actor_types: Vec<ActorTypeSpec> = types
        .iter()
        .map(|(name, entry)| ActorTypeSpec {
            actor_type: name.clone(),
            max_active: entry.options.concurrency_limit,
        })
        .collect();
    actor_types.sort_by(|a, b| a.actor_type.cmp(&b.actor_type));
    HostRegistration {
        host_id,
        address: inner.act.address.clone(),
        actor_types,
    }
}

/// Registers the host. An earlier process on the same address whose lease has not expired yet
/// (it crashed moments ago) is taken over: only one process can serve an address at a time.
async fn register(inner: &HostInner) -> Result<(), HostError> {
    let store = &inner.act.store;
    let reg = registration(inner, inner.act.host_id());
    let deadline = inner.act.timings.health_deadline;
    let sent = Instant::now();
    let attempt = |reg: HostRegistration| async move {
        match tokio::time::timeout(
            store.timeout,
            store
                .provider
                .register_host(&reg, store.clock.now(), deadline),
        )
        .await
        {
            Ok(r) => r.map_err(HostError::from),
            Err(_) => Err(HostError::StoreTimeout(store.timeout)),
        }
    };
    match attempt(reg.clone()).await {
        Err(HostError::Store(StoreError::AddressInUse { host_id, .. })) => {
            warn!(host = %inner.act.address, previous_host_id = %host_id,
                  "address still registered to an earlier host whose lease has not expired; taking over");
            store
                .call(store.provider.unregister_host(&host_id))
                .await
                .map_err(|e| HostError::InvalidConfig(format!("cannot take over address: {e}")))?;
            attempt(reg).await?;
        }
        other => other?,
    }
    inner.act.renew_lease(sent);
    inner.act.emit(HostEvent::Registered {
        host_id: inner.act.host_id(),
    });
    Ok(())
}

/// Heartbeats; fences the host when no heartbeat can complete before the fence point, or when
/// a call found the lease lapsed (after a freeze, calls may notice before this task runs).
/// A failed heartbeat is retried soon, each attempt bounded by part of the budget left
/// ([`heartbeat_wait`], [`heartbeat_attempt_bound`]): a store that is electing a new leader
/// must not cost the whole budget.
async fn heartbeat_loop(inner: Arc<HostInner>, stop: CancellationToken) {
    let timings = inner.act.timings.clone();
    let deadline = timings.health_deadline;
    let mut next = Instant::now() + timings.heartbeat_interval;
    let mut failures = 0u32;
    loop {
        let woken = tokio::select! {
            // Stopping wins over a timer that is also ready.
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => false,
            _ = inner.act.lease_lapsed.notified() => true,
        };
        let last_ok_sent = inner.act.lease_sent().unwrap_or_else(Instant::now);
        let sent = Instant::now();
        let reason = match heartbeat_attempt_bound(sent - last_ok_sent, deadline) {
            // A wake-up left over from before a re-registration finds a fresh lease.
            Some(_) if woken => continue,
            Some(bound) => {
                let store = &inner.act.store;
                let result = tokio::time::timeout(
                    bound,
                    store
                        .provider
                        .heartbeat(&inner.act.host_id(), store.clock.now()),
                )
                .await;
                match result {
                    Ok(Ok(())) => {
                        inner.act.renew_lease(sent);
                        failures = 0;
                        None
                    }
                    Ok(Err(StoreError::HostNotFound(_))) => {
                        Some("its registration was removed from the store".to_owned())
                    }
                    Ok(Err(e)) => {
                        failures += 1;
                        warn!(host = %inner.act.address, "heartbeat failed, will retry: {e}");
                        None
                    }
                    Err(_) => {
                        failures += 1;
                        warn!(host = %inner.act.address, "heartbeat did not answer within {bound:?}, will retry");
                        None
                    }
                }
            }
            // Past the fence point (a call saw it, or this task was frozen): no heartbeat may
            // revive a lease that another host may be about to take over.
            None => Some(format!(
                "no heartbeat completed within {:?}",
                fence_after(deadline)
            )),
        };
        if let Some(reason) = reason {
            fence(&inner, reason, &stop).await;
            if stop.is_cancelled() {
                return;
            }
            failures = 0;
        }
        let since = inner
            .act
            .lease_sent()
            .map_or(Duration::ZERO, |at| Instant::now() - at);
        next =
            Instant::now() + heartbeat_wait(since, failures, timings.heartbeat_interval, deadline);
    }
}

/// Stops serving, halts every activation, and re-registers under a new host id.
async fn fence(inner: &Arc<HostInner>, reason: String, stop: &CancellationToken) {
    let old_id = inner.act.host_id();
    error!(host = %inner.act.address, host_id = %old_id, "host fenced itself: {reason}; halting all actors");
    inner
        .act
        .health
        .send_replace(Health::Fenced(reason.clone()));
    inner.act.emit(HostEvent::Fenced {
        host_id: old_id,
        reason,
    });
    inner.act.cancel_all_turns();
    let bound = inner.act.timings.store_timeout + Duration::from_secs(5);
    inner
        .act
        .deactivate_all(DeactivationReason::Fenced, bound)
        .await;
    inner.act.set_host_id(new_host_id());
    inner.router.clear();
    loop {
        if stop.is_cancelled() {
            // Shutting down: a new registration would only have to be removed again.
            return;
        }
        // The peer certificate names the host id: the transport takes the new one.
        let restarted = match inner.peer.rename(&inner.act.host_id()) {
            Ok(()) => register(inner).await,
            Err(e) => Err(e),
        };
        match restarted {
            Ok(()) => {
                // Views read while this host was not registered lack it.
                inner.router.clear();
                info!(host = %inner.act.address, host_id = %inner.act.host_id(), "host re-registered after fencing");
                if !stop.is_cancelled() {
                    inner.act.health.send_replace(Health::Serving);
                }
                return;
            }
            Err(e) => warn!(host = %inner.act.address, "re-registration failed, will retry: {e}"),
        }
        tokio::select! {
            // Stopping wins over a timer that is also ready.
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(inner.act.timings.heartbeat_interval) => {}
        }
    }
}

/// Deactivates actors idle for their type's idle timeout.
async fn idle_reaper(inner: Arc<HostInner>, stop: CancellationToken) {
    let shortest = inner
        .act
        .types
        .read()
        .expect("types lock")
        .values()
        .filter_map(|t| t.options.idle_timeout)
        .min();
    let Some(shortest) = shortest else {
        return;
    };
    let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::select! {
            // Stopping wins over a timer that is also ready.
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        for act in inner.act.all_active() {
            if act.halting.load(Ordering::Acquire) {
                continue;
            }
            let idle_for = act.last_used.lock().expect("last_used lock").elapsed();
            let pending = act.pending.load(Ordering::Acquire);
            if should_deactivate_idle(pending, idle_for, act.ty.options.idle_timeout) {
                inner.act.begin_deactivation(&act, DeactivationReason::Idle);
            }
        }
    }
}

/// Purges expired state now and then (reads already ignore it).
async fn state_cleanup(inner: Arc<HostInner>, stop: CancellationToken) {
    loop {
        tokio::select! {
            // Stopping wins over a timer that is also ready.
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(inner.act.timings.state_cleanup_interval) => {}
        }
        let store = &inner.act.store;
        match store
            .call(store.provider.delete_expired_state(store.clock.now()))
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(host = %inner.act.address, purged = n, "expired actor state purged"),
            Err(e) => warn!(host = %inner.act.address, "could not purge expired state: {e}"),
        }
    }
}
