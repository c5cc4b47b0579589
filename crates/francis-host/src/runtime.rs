//! The activation table and turns: activation exactly once, the FIFO turn lock, deactivation.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use francis_core::{
    Actor, ActorContext, ActorFactory, ActorInit, ActorRef, ContextParts, Envelope, Error, Service,
    SetStateOptions,
};
use francis_store::{ClaimRefusal, Placement, StoreError};
use futures::FutureExt;
use tokio::sync::{OnceCell, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::chain::{CallChain, ChainedService};
use crate::config::{ActorOptions, HostTimings};
use crate::events::{DeactivationReason, HostEvent};
use crate::policy::{RequestMemory, fence_after, must_fence, remembers_request};
use crate::requests::{Begin, RecentRequests, Ticket, outcome_of};
use crate::service::HostService;
use crate::state::{ActivationStore, StoreAccess};

/// Whether and how a host serves calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Built, not yet running (or still registering).
    Starting,
    /// Registered and serving.
    Serving,
    /// Shutting down: no new calls, running turns finish.
    Draining,
    /// Stopped serving because it lost its lease; it re-registers by itself.
    Fenced(String),
    /// Shut down.
    Stopped,
}

/// A registered actor type.
pub(crate) struct TypeEntry {
    pub factory: ActorFactory,
    pub options: ActorOptions,
}

/// One activation of one actor on this host.
pub(crate) struct Activation {
    pub actor: ActorRef,
    pub host_id: String,
    pub epoch: u64,
    pub ty: Arc<TypeEntry>,
    /// The turn lock; `None` once deactivated. tokio's RwLock queues waiters FIFO, so
    /// readers (peeks) never starve a writer, and a waiter that is dropped leaves the queue.
    pub slot: Arc<tokio::sync::RwLock<Option<Box<dyn Actor>>>>,
    pub store: Arc<ActivationStore>,
    pub service: Service,
    /// Turns running or waiting for the lock.
    pub pending: AtomicUsize,
    pub last_used: Mutex<Instant>,
    /// Set once deactivation is decided: callers stop taking turns and wait for `deactivated`.
    pub halting: AtomicBool,
    /// Cancels running turns (halt, fencing, end of the shutdown grace period).
    pub cancel: CancellationToken,
    /// Fires once the activation is gone from the table and its placement released.
    pub deactivated: CancellationToken,
}

/// Keeps `pending` accurate for a turn that is waiting or running, and stamps `last_used`.
struct Pending<'a>(&'a Activation);

impl<'a> Pending<'a> {
    fn new(act: &'a Activation) -> Self {
        act.pending.fetch_add(1, Ordering::AcqRel);
        Pending(act)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        *self.0.last_used.lock().expect("last_used lock") = Instant::now();
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a turn does.
#[derive(Clone)]
pub(crate) enum Op {
    Invoke {
        method: String,
        data: Envelope,
        /// The actors this call passed through.
        chain: CallChain,
    },
    Peek {
        method: String,
        data: Envelope,
        chain: CallChain,
    },
    Alarm {
        name: String,
        data: Option<Envelope>,
    },
    SetState {
        value: Envelope,
        options: SetStateOptions,
    },
    DeleteState,
}

impl Op {
    pub(crate) fn read_only(&self) -> bool {
        matches!(self, Op::Peek { .. })
    }

    /// The chain of the call that asked for this turn (none for the host's own turns).
    fn caller_chain(&self) -> Option<&CallChain> {
        match self {
            Op::Invoke { chain, .. } | Op::Peek { chain, .. } => Some(chain),
            _ => None,
        }
    }
}

/// Who asked for a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// This host, which never sends one request twice.
    Here,
    /// Another host, which resends a request under the same id when its answer was lost.
    Peer,
}

enum TurnGuard {
    Exclusive(OwnedRwLockWriteGuard<Option<Box<dyn Actor>>>),
    Shared(OwnedRwLockReadGuard<Option<Box<dyn Actor>>>),
}

/// Everything the host shares between its service, its background tasks and its turns.
pub(crate) struct HostInner {
    pub address: String,
    host_id: RwLock<String>,
    pub timings: HostTimings,
    pub store: StoreAccess,
    pub types: RwLock<HashMap<String, Arc<TypeEntry>>>,
    pub table: DashMap<ActorRef, Arc<OnceCell<Arc<Activation>>>>,
    pub health: watch::Sender<Health>,
    pub events: broadcast::Sender<HostEvent>,
    /// Parent of every activation's cancellation; replaced after fencing.
    cancel_root: Mutex<CancellationToken>,
    pub running: AtomicBool,
    /// Where actors live, as far as this host knows.
    pub router: crate::routing::Router,
    /// The peer link: started by `run` when runtime PSKs are configured.
    pub peer: crate::peer::PeerLink,
    /// The replicated store this host takes part in, if any (also its `store.provider`).
    pub replica: Option<crate::replica::Replica>,
    /// When the last successful heartbeat (or registration) was *sent*, on the monotonic
    /// clock; `None` until the host registered. The lease every call checks.
    lease: Mutex<Option<Instant>>,
    /// Wakes the heartbeat task when a call found the lease lapsed, so it fences the host.
    pub lease_lapsed: tokio::sync::Notify,
    /// Outcomes of turns other hosts may resend, by request id.
    pub recent: Arc<RecentRequests>,
}

impl HostInner {
    pub fn new(
        address: String,
        host_id: String,
        timings: HostTimings,
        store: StoreAccess,
        peer: crate::peer::PeerLink,
        replica: Option<crate::replica::Replica>,
    ) -> Self {
        // Routing times its cache and membership view on the host's one clock.
        let router = crate::routing::Router::new(store.clock.clone());
        HostInner {
            address,
            host_id: RwLock::new(host_id),
            timings,
            store,
            types: RwLock::new(HashMap::new()),
            table: DashMap::new(),
            health: watch::channel(Health::Starting).0,
            events: broadcast::channel(1024).0,
            cancel_root: Mutex::new(CancellationToken::new()),
            running: AtomicBool::new(false),
            router,
            peer,
            replica,
            lease: Mutex::new(None),
            lease_lapsed: tokio::sync::Notify::new(),
            recent: RecentRequests::new(RequestMemory::default()),
        }
    }

    /// Records that a heartbeat (or registration) sent at `sent` succeeded.
    pub fn renew_lease(&self, sent: Instant) {
        let mut lease = self.lease.lock().expect("lease lock");
        if lease.is_none_or(|at| at < sent) {
            *lease = Some(sent);
        }
    }

    /// When the last successful heartbeat was sent (`None` before registration).
    pub fn lease_sent(&self) -> Option<Instant> {
        *self.lease.lock().expect("lease lock")
    }

    /// Refuses the call if this host's lease has lapsed by its own monotonic clock: after a
    /// freeze (SIGSTOP, a long GC-like stall), queued calls and timers run in the same instant,
    /// so a background timer alone would let a few calls through. The host then stops serving
    /// at once and its heartbeat task fences it.
    pub fn check_lease(&self) -> Result<(), Error> {
        let Some(sent) = self.lease_sent() else {
            return Ok(());
        };
        let since = sent.elapsed();
        if !must_fence(since, self.timings.health_deadline) {
            return Ok(());
        }
        let reason = format!(
            "no heartbeat for {since:?}, past the fence point of {:?}",
            fence_after(self.timings.health_deadline)
        );
        self.health.send_if_modified(|h| {
            if *h == Health::Serving {
                *h = Health::Fenced(reason.clone());
                true
            } else {
                false
            }
        });
        self.lease_lapsed.notify_one();
        Err(Error::HostUnavailable(format!(
            "host {} stopped serving: {reason}; it is fencing itself",
            self.address
        )))
    }

    /// The host's health, with the lease checked now: never `Serving` past the lease.
    pub fn current_health(&self) -> Health {
        if *self.health.borrow() == Health::Serving {
            let _ = self.check_lease();
        }
        self.health.borrow().clone()
    }

    pub fn host_id(&self) -> String {
        self.host_id.read().expect("host id lock").clone()
    }

    pub fn set_host_id(&self, id: String) {
        *self.host_id.write().expect("host id lock") = id;
    }

    pub fn cancel_root(&self) -> CancellationToken {
        self.cancel_root.lock().expect("cancel root lock").clone()
    }

    /// Cancels every running turn and gives future activations a fresh parent token.
    pub fn cancel_all_turns(&self) {
        let old = std::mem::take(&mut *self.cancel_root.lock().expect("cancel root lock"));
        old.cancel();
    }

    pub fn emit(&self, event: HostEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    /// Refuses calls unless the host is serving and its lease is valid.
    pub fn check_serving(&self) -> Result<(), Error> {
        match &*self.health.borrow() {
            Health::Serving => {}
            Health::Starting => return Err(Error::HostUnavailable("host is starting".into())),
            Health::Draining | Health::Stopped => return Err(Error::ShuttingDown),
            Health::Fenced(why) => {
                return Err(Error::HostUnavailable(format!(
                    "host fenced itself ({why}) and is re-registering"
                )));
            }
        }
        self.check_lease()
    }

    pub fn type_entry(&self, actor_type: &str) -> Result<Arc<TypeEntry>, Error> {
        self.types
            .read()
            .expect("types lock")
            .get(actor_type)
            .cloned()
            .ok_or_else(|| Error::ActorTypeUnsupported(actor_type.to_owned()))
    }

    pub fn active(&self, actor: &ActorRef) -> Option<Arc<Activation>> {
        self.table.get(actor).and_then(|cell| cell.get().cloned())
    }

    pub fn all_active(&self) -> Vec<Arc<Activation>> {
        self.table
            .iter()
            .filter_map(|e| e.value().get().cloned())
            .collect()
    }

    /// Runs one turn of `op` on the actor's activation here, activating it first if needed
    /// (with `claimed`, the placement routing claimed for this host, when it did).
    pub async fn call(
        self: &Arc<Self>,
        actor: &ActorRef,
        op: Op,
        request_id: String,
        claimed: Option<Placement>,
    ) -> Result<Option<Envelope>, Error> {
        self.turn(actor, op, request_id, None, claimed).await
    }

    /// [`HostInner::call`] for a turn another host sent, which it resends under the same
    /// request id when the answer may have been lost: a turn that ran (or runs) under this id
    /// is not run again, its outcome is answered ([`crate::requests`]).
    pub async fn call_resendable(
        self: &Arc<Self>,
        actor: &ActorRef,
        op: Op,
        request_id: String,
    ) -> Result<Option<Envelope>, Error> {
        if !remembers_request(&request_id, op.read_only()) {
            return self.call(actor, op, request_id, None).await;
        }
        loop {
            match self.recent.begin(actor, &request_id) {
                Begin::Run(ticket) => {
                    return self.turn(actor, op, request_id, Some(ticket), None).await;
                }
                Begin::Join(first) => {
                    if let Some(outcome) = outcome_of(first).await {
                        return outcome.replay();
                    }
                    // The first never started its turn: this one runs it.
                }
            }
        }
    }

    async fn turn(
        self: &Arc<Self>,
        actor: &ActorRef,
        op: Op,
        request_id: String,
        mut ticket: Option<Ticket>,
        mut claimed: Option<Placement>,
    ) -> Result<Option<Envelope>, Error> {
        let ty = self.type_entry(actor.actor_type())?;
        loop {
            let act = self.get_or_activate(actor, &ty, claimed.take()).await?;
            let pending = Pending::new(&act);
            let guard = if op.read_only() {
                TurnGuard::Shared(act.slot.clone().read_owned().await)
            } else {
                TurnGuard::Exclusive(act.slot.clone().write_owned().await)
            };
            // The lease is checked when the turn starts, not only when the call arrived: a
            // call queued before a freeze must not run after it.
            if let Err(e) = self.check_lease() {
                drop(guard);
                return Err(e);
            }
            let gone = match &guard {
                TurnGuard::Exclusive(g) => g.is_none(),
                TurnGuard::Shared(g) => g.is_none(),
            };
            if gone || act.halting.load(Ordering::Acquire) {
                // Deactivation won the race: wait until it is complete, then activate anew.
                drop(guard);
                drop(pending);
                act.deactivated.cancelled().await;
                continue;
            }
            let read_only = op.read_only();
            let result = self
                .run_turn(&act, guard, op, request_id, ticket.take())
                .await;
            drop(pending);
            // A read answers from this activation's cached state: only while the lease holds.
            if read_only {
                self.check_lease()?;
            }
            return result;
        }
    }

    async fn run_turn(
        self: &Arc<Self>,
        act: &Arc<Activation>,
        guard: TurnGuard,
        op: Op,
        request_id: String,
        ticket: Option<Ticket>,
    ) -> Result<Option<Envelope>, Error> {
        let cancel = act.cancel.child_token();
        // If the caller gives up (timeout, dropped request), the turn sees its ctx cancelled.
        let caller_gone = cancel.clone().drop_guard();
        let inner = self.clone();
        let act2 = act.clone();
        let handle = tokio::spawn(async move {
            let halt = Arc::new(AtomicBool::new(false));
            let service: Service = match op.caller_chain() {
                Some(chain) if !chain.is_empty() => Arc::new(ChainedService::new(
                    HostService::new(inner.clone()),
                    chain.clone(),
                    act2.actor.clone(),
                )),
                _ => act2.service.clone(),
            };
            let ctx = ActorContext::new(ContextParts {
                actor: act2.actor.clone(),
                request_id,
                cancel,
                read_only: op.read_only(),
                halt: halt.clone(),
                state: act2.store.clone(),
                service,
            });
            let turn = AssertUnwindSafe(run_op(guard, &ctx, &act2, op))
                .catch_unwind()
                .await;
            let (result, guard) = match turn {
                Ok(done) => done,
                Err(panic) => {
                    // The turn ran: a resend must not run it again. The panic goes on to
                    // the caller's side as before.
                    if let Some(ticket) = ticket {
                        let message = panic_text(panic.as_ref());
                        ticket.finish(&Err(Error::actor(format!("actor panicked: {message}"))));
                    }
                    std::panic::resume_unwind(panic);
                }
            };
            // Recorded here, in the turn's own task: kept even when the caller is gone.
            if let Some(ticket) = ticket {
                ticket.finish(&result);
            }
            let fenced = matches!(result, Err(Error::Fenced { .. }));
            if fenced {
                warn!(actor_type = act2.actor.actor_type(), actor_id = act2.actor.actor_id(),
                      host = %inner.address, epoch = act2.epoch,
                      "write fenced: placement moved on; deactivating this activation");
            }
            let halt_now = fenced || halt.load(Ordering::Acquire);
            if halt_now {
                // Before the lock is released, so no queued call starts a turn on it.
                act2.halting.store(true, Ordering::Release);
            }
            drop(guard);
            if halt_now {
                let reason = if fenced {
                    DeactivationReason::Fenced
                } else {
                    DeactivationReason::Halted
                };
                inner.spawn_deactivation(act2, reason);
            }
            result
        });
        let outcome = handle.await;
        caller_gone.disarm();
        match outcome {
            Ok(result) => result,
            Err(join) => {
                let message = panic_message(join);
                warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                      host = %self.address, "actor panicked during a turn: {message}; deactivating it");
                self.spawn_deactivation(act.clone(), DeactivationReason::Halted);
                Err(Error::actor(format!("actor panicked: {message}")))
            }
        }
    }

    /// The actor's activation here; creates it (claim + factory) exactly once under any
    /// number of concurrent first calls.
    async fn get_or_activate(
        self: &Arc<Self>,
        actor: &ActorRef,
        ty: &Arc<TypeEntry>,
        claimed: Option<Placement>,
    ) -> Result<Arc<Activation>, Error> {
        let cell = self.table.entry(actor.clone()).or_default().clone();
        let result = cell
            .get_or_try_init(|| self.activate(actor, ty, claimed))
            .await
            .cloned();
        if result.is_err() {
            self.table
                .remove_if(actor, |_, c| Arc::ptr_eq(c, &cell) && !c.initialized());
        }
        result
    }

    /// Activates the actor here after an authoritative claim: `claimed` when routing just
    /// claimed it for this host (one store round trip for a new actor), otherwise its own.
    async fn activate(
        self: &Arc<Self>,
        actor: &ActorRef,
        ty: &Arc<TypeEntry>,
        claimed: Option<Placement>,
    ) -> Result<Arc<Activation>, Error> {
        self.check_serving()?;
        let host_id = self.host_id();
        let placement = match claimed {
            Some(p) if p.host_id == host_id && &p.actor == actor => p,
            _ => {
                let now = self.store.clock.now();
                self.store
                    .call(self.store.provider.claim(
                        actor,
                        &host_id,
                        now,
                        self.timings.health_deadline,
                    ))
                    .await
                    .map_err(|e| claim_error(actor, e))?
            }
        };
        if placement.host_id != host_id {
            return Err(Error::ActorNotHosted(actor.clone()));
        }
        // Calls made outside a chain (from a turn called from outside any turn, an alarm, the
        // factory, deactivation) start one at this actor; a turn with a caller chain gets its own.
        let service: Service = Arc::new(ChainedService::new(
            HostService::new(self.clone()),
            CallChain::default(),
            actor.clone(),
        ));
        let instance = (ty.factory)(ActorInit {
            actor: actor.clone(),
            service: service.clone(),
        });
        let act = Arc::new(Activation {
            actor: actor.clone(),
            host_id,
            epoch: placement.epoch,
            ty: ty.clone(),
            slot: Arc::new(tokio::sync::RwLock::new(Some(instance))),
            store: Arc::new(ActivationStore {
                access: self.store.clone(),
                actor: actor.clone(),
                epoch: placement.epoch,
                generation: AtomicU64::new(0),
            }),
            service,
            pending: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
            halting: AtomicBool::new(false),
            cancel: self.cancel_root().child_token(),
            deactivated: CancellationToken::new(),
        });
        info!(actor_type = actor.actor_type(), actor_id = actor.actor_id(), host = %self.address,
              epoch = placement.epoch, "actor activated");
        self.emit(HostEvent::Activated {
            actor: actor.clone(),
            epoch: placement.epoch,
        });
        Ok(act)
    }

    /// Starts deactivating `act` after its current turn; returns at once.
    pub fn spawn_deactivation(
        self: &Arc<Self>,
        act: Arc<Activation>,
        reason: DeactivationReason,
    ) -> tokio::task::JoinHandle<()> {
        act.halting.store(true, Ordering::Release);
        let inner = self.clone();
        tokio::spawn(async move { inner.deactivate(act, reason).await })
    }

    /// Waits for the current turn, runs `deactivate` (bounded), releases the placement,
    /// removes the activation from the table. Idempotent.
    async fn deactivate(self: Arc<Self>, act: Arc<Activation>, reason: DeactivationReason) {
        let mut guard = act.slot.clone().write_owned().await;
        let Some(mut instance) = guard.take() else {
            return;
        };
        let ctx = ActorContext::new(ContextParts {
            actor: act.actor.clone(),
            request_id: format!("deactivate-{}", act.epoch),
            cancel: self.cancel_root().child_token(),
            read_only: false,
            halt: Arc::new(AtomicBool::new(false)),
            state: act.store.clone(),
            service: act.service.clone(),
        });
        let limit = act.ty.options.deactivation_timeout;
        match tokio::time::timeout(limit, instance.deactivate(&ctx)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                                host = %self.address, "actor's deactivate failed: {e}")
            }
            Err(_) => warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                            host = %self.address, "actor's deactivate did not finish within {limit:?}"),
        }
        drop(instance);
        act.cancel.cancel();
        let released = self
            .store
            .call(
                self.store
                    .provider
                    .release(&act.actor, &act.host_id, act.epoch),
            )
            .await;
        if let Err(e) = released {
            warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                  host = %self.address, "could not release placement (it will expire with the host's lease): {e}");
        }
        self.table.remove_if(&act.actor, |_, cell| {
            cell.get().is_some_and(|a| Arc::ptr_eq(a, &act))
        });
        info!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
              host = %self.address, reason = %reason, "actor deactivated");
        self.emit(HostEvent::Deactivated {
            actor: act.actor.clone(),
            epoch: act.epoch,
            reason,
        });
        drop(guard);
        act.deactivated.cancel();
    }

    /// Deactivates everything active here and waits for it, at most `limit`.
    pub async fn deactivate_all(
        self: &Arc<Self>,
        reason: DeactivationReason,
        limit: Duration,
    ) -> bool {
        let handles: Vec<_> = self
            .all_active()
            .into_iter()
            .map(|act| self.spawn_deactivation(act, reason))
            .collect();
        tokio::time::timeout(limit, futures::future::join_all(handles))
            .await
            .is_ok()
    }
}

async fn run_op(
    guard: TurnGuard,
    ctx: &ActorContext,
    act: &Activation,
    op: Op,
) -> (Result<Option<Envelope>, Error>, TurnGuard) {
    match guard {
        TurnGuard::Shared(g) => {
            let result = match (&*g, op) {
                (Some(actor), Op::Peek { method, data, .. }) => {
                    actor.peek(ctx, &method, data).await
                }
                _ => Err(Error::ActorNotActive(act.actor.clone())),
            };
            (result, TurnGuard::Shared(g))
        }
        TurnGuard::Exclusive(mut g) => {
            let result = match (&mut *g, op) {
                (None, _) => Err(Error::ActorNotActive(act.actor.clone())),
                (Some(actor), Op::Invoke { method, data, .. }) => {
                    actor.invoke(ctx, &method, data).await
                }
                (Some(actor), Op::Alarm { name, data }) => {
                    actor.alarm(ctx, &name, data).await.map(|()| None)
                }
                (Some(_), Op::SetState { value, options }) => {
                    use francis_core::ActivationState;
                    act.store.store(value, options).await.map(|()| None)
                }
                (Some(_), Op::DeleteState) => {
                    use francis_core::ActivationState;
                    act.store.clear().await.map(|()| None)
                }
                (Some(actor), Op::Peek { method, data, .. }) => {
                    actor.peek(ctx, &method, data).await
                }
            };
            (result, TurnGuard::Exclusive(g))
        }
    }
}

fn claim_error(actor: &ActorRef, e: Error) -> Error {
    let Error::Store(source) = &e else {
        return e;
    };
    match source.downcast_ref::<StoreError>() {
        Some(StoreError::ClaimRefused { reason, .. }) => Error::NoHost {
            actor: actor.clone(),
            reason: match reason {
                ClaimRefusal::AtCapacity => {
                    format!(
                        "every host serving {:?} is at its concurrency limit",
                        actor.actor_type()
                    )
                }
                ClaimRefusal::TypeNotServed => {
                    format!("no live host serves actor type {:?}", actor.actor_type())
                }
                _ => "this host's registration is not live".to_owned(),
            },
        },
        _ => e,
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return "turn was cancelled".into();
    }
    panic_text(join.into_panic().as_ref())
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
