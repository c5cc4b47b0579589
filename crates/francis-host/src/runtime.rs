//! The activation table and turns: activation exactly once, the FIFO turn lock, deactivation.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::Poll;
use std::time::Duration;

use dashmap::DashMap;
use francis_core::{
    Actor, ActorContext, ActorFactory, ActorInit, ActorRef, ContextParts, Envelope, Error,
    ErrorKind, Service, SetStateOptions,
};
use francis_store::{ClaimRefusal, StoreError};
use futures::FutureExt;
use tokio::sync::{OnceCell, broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::chain::CallChain;
use crate::config::{ActorOptions, HostTimings};
use crate::events::{DeactivationReason, HostEvent};
use crate::metrics::TurnMetrics;
use crate::policy::{
    RequestMemory, alarm_handler_error, fence_after, must_fence, remembers_request,
};
use crate::requests::{Begin, RecentRequests, Ticket, outcome_of};
use crate::state::{ActivationStore, Claim, Durability, StoreAccess};
use crate::trace::TraceContext;

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
    /// [`LocalHost::run`](crate::LocalHost::run) ended with this error (the peer port was in
    /// use, the store refused the registration...): the host does not serve.
    Failed(String),
}

/// A registered actor type.
pub(crate) struct TypeEntry {
    pub factory: ActorFactory,
    pub options: ActorOptions,
    /// The method names its metrics count under their own label (at most a few dozen).
    pub methods: crate::metrics::MethodNames,
}

/// One activation of one actor on this host.
///
/// Its instance belongs to one task, its mailbox's drain ([`Activations::drain`]), which runs
/// the queued turns one after another in the order they arrived; peeks that arrive together
/// share the instance. Nothing else touches the instance.
pub(crate) struct Activation {
    pub actor: ActorRef,
    pub host_id: String,
    pub epoch: u64,
    pub ty: Arc<TypeEntry>,
    /// Where turns queue for the drain. Closed once the activation is deactivated.
    mailbox: mpsc::UnboundedSender<Mail>,
    pub store: Arc<ActivationStore>,
    pub service: Service,
    /// Turns queued or running.
    pub pending: AtomicUsize,
    pub last_used: Mutex<Instant>,
    /// Set once deactivation is decided: the drain starts no further turn, and turns still
    /// queued go back to their callers, who activate the actor again.
    pub halting: AtomicBool,
    /// Why the activation is being deactivated (the first reason given wins).
    reason: Mutex<Option<DeactivationReason>>,
    /// Cancels running turns (halt, fencing, end of the shutdown grace period).
    pub cancel: CancellationToken,
    /// Fires once the activation is gone from the table and its placement released.
    pub deactivated: CancellationToken,
}

impl Activation {
    /// One queued or running turn fewer; stamps `last_used` for the idle reaper.
    fn finished(&self) {
        *self.last_used.lock().expect("last_used lock") = Instant::now();
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the mailbox of an activation carries.
// A letter travels inside the channel's own blocks; boxing it would cost an allocation a turn.
#[allow(clippy::large_enum_variant)]
enum Mail {
    Turn(Letter),
    /// Look at `halting` (deactivation was decided while the drain may be waiting).
    Wake,
}

/// One turn waiting in a mailbox.
struct Letter {
    op: Op,
    request_id: String,
    ticket: Option<Ticket>,
    /// When the caller's invoke timeout runs out.
    deadline: Instant,
    reply: oneshot::Sender<Reply>,
    /// The span the caller is in (its `francis.invoke`, `francis.serve` or `francis.alarm`):
    /// the turn runs inside it, so what the actor logs carries the call's fields and trace.
    caller_span: tracing::Span,
}

impl Letter {
    fn answer(self, result: Result<Option<Envelope>, Error>) {
        // A caller that gave up is fine.
        let _ = self.reply.send(Reply::Done(result));
    }

    /// Hands the turn back unrun: the activation went away before it began.
    fn bounce(self) {
        let Letter {
            op,
            request_id,
            ticket,
            reply,
            ..
        } = self;
        let _ = reply.send(Reply::Again(op, request_id, ticket));
    }
}

/// The drain's answer to one letter.
enum Reply {
    Done(Result<Option<Envelope>, Error>),
    /// Not run, because the activation was deactivated first: activate again and resend.
    Again(Op, String, Option<Ticket>),
}

/// A turn that is running: what answers it, and what it was given.
struct Running {
    /// `None` once answered early (the caller's deadline passed while the turn ran).
    reply: Option<oneshot::Sender<Reply>>,
    ticket: Option<Ticket>,
    deadline: Instant,
    cancel: CancellationToken,
    halt: Arc<AtomicBool>,
    /// The span the turn runs in: its `francis.turn` span, or the caller's when a subscriber
    /// does not want `francis.turn`.
    span: tracing::Span,
    /// Whether `span` is the turn's own (which records the turn's outcome).
    own_span: bool,
}

/// How a turn ended: its result, or the panic that ended it.
type TurnOutcome = std::thread::Result<Result<Option<Envelope>, Error>>;

/// What [`run_op`] gives back: for a call, its method and when it started; and the result.
type RanOp = (Option<(String, Instant)>, Result<Option<Envelope>, Error>);

/// What happened while a drain waited on a running turn.
#[allow(clippy::large_enum_variant)]
enum Event<T> {
    Done(T),
    Mail(Option<Mail>),
    CallerGone,
    Deadline,
    Committed(Result<(), Error>),
}

/// A drain's side of the mailbox: letters that arrived while a turn ran wait in `queue`, in
/// arrival order, ahead of the channel.
struct Mailbox {
    rx: mpsc::UnboundedReceiver<Mail>,
    queue: VecDeque<Letter>,
    open: bool,
    /// One timer for the drain's whole life, armed only while a turn is waiting on something.
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Mailbox {
    /// The next letter in arrival order; `None` once the drain should stop taking turns
    /// (deactivation was decided, or the channel is closed).
    async fn next(&mut self) -> Option<Letter> {
        if let Some(letter) = self.queue.pop_front() {
            return Some(letter);
        }
        match self.rx.recv().await? {
            Mail::Turn(letter) => Some(letter),
            // Sent only after `halting` is set.
            Mail::Wake => None,
        }
    }

    /// The next letter if it is a peek that is already here; anything else stays first.
    fn next_peek(&mut self) -> Option<Letter> {
        if let Some(front) = self.queue.front() {
            return if front.op.read_only() {
                self.queue.pop_front()
            } else {
                None
            };
        }
        match self.rx.try_recv().ok()? {
            Mail::Turn(letter) if letter.op.read_only() => Some(letter),
            Mail::Turn(letter) => {
                self.queue.push_back(letter);
                None
            }
            // `halting` is set: the drain stops after these peeks.
            Mail::Wake => None,
        }
    }

    /// Waits for `work` (the running turns) to end. Meanwhile new letters are queued, a
    /// caller that gives up sees its turn's context cancelled, and a caller whose deadline
    /// passes is answered with a timeout, whether its turn is running or still queued; a
    /// running turn always runs to its end. A turn that ends without waiting arms no timer.
    async fn supervise<F: Future>(
        &mut self,
        work: F,
        running: &mut [Running],
        gate: &mut Gate,
        host: &Activations,
        act: &Activation,
    ) -> F::Output {
        let mut work = std::pin::pin!(work);
        if let Poll::Ready(out) = futures::poll!(work.as_mut()) {
            return out;
        }
        loop {
            let earliest = running
                .iter()
                .filter(|r| r.reply.is_some())
                .map(|r| r.deadline)
                .chain(self.queue.iter().map(|l| l.deadline))
                .min();
            if let Some(at) = earliest
                && self.timer.deadline() != at
            {
                self.timer.as_mut().reset(at);
            }
            let event = tokio::select! {
                biased;
                out = work.as_mut() => Event::Done(out),
                mail = self.rx.recv(), if self.open => Event::Mail(mail),
                () = callers_gone(running) => Event::CallerGone,
                () = self.timer.as_mut(), if earliest.is_some() => Event::Deadline,
                committed = gate.committed(), if gate.commit.is_some() => Event::Committed(committed),
            };
            match event {
                Event::Done(out) => return out,
                Event::Mail(Some(Mail::Turn(letter))) => self.queue.push_back(letter),
                // `halting` is looked at once the running turns end.
                Event::Mail(Some(Mail::Wake)) => {}
                Event::Mail(None) => self.open = false,
                Event::CallerGone => {}
                Event::Committed(result) => gate.on_commit(host, act, result),
                Event::Deadline => {
                    let now = Instant::now();
                    for turn in running.iter_mut().filter(|r| r.deadline <= now) {
                        if let Some(reply) = turn.reply.take() {
                            turn.cancel.cancel();
                            let _ = reply.send(Reply::Done(Err(host.timed_out(&act.actor))));
                        }
                    }
                    let (late, waiting): (VecDeque<_>, VecDeque<_>) =
                        self.queue.drain(..).partition(|l| l.deadline <= now);
                    self.queue = waiting;
                    for letter in late {
                        letter.answer(Err(host.timed_out(&act.actor)));
                        act.finished();
                    }
                }
            }
        }
    }

    /// Hands the letters still here back to their callers, who activate the actor again;
    /// while this host's lease has lapsed they fail instead, as a turn would.
    async fn return_all(mut self, host: &Activations, act: &Activation) {
        self.rx.close();
        loop {
            let letter = match self.queue.pop_front() {
                Some(letter) => letter,
                None => match self.rx.recv().await {
                    Some(Mail::Turn(letter)) => letter,
                    Some(Mail::Wake) => continue,
                    None => return,
                },
            };
            match host.check_lease() {
                Ok(()) => letter.bounce(),
                Err(e) => letter.answer(Err(e)),
            }
            act.finished();
        }
    }
}

/// Ready when a running turn's caller has gone (dropped its answer), after cancelling that
/// turn's context; the turn itself goes on.
fn callers_gone(running: &mut [Running]) -> impl Future<Output = ()> + '_ {
    futures::future::poll_fn(move |cx| {
        let mut gone = false;
        for turn in running.iter_mut() {
            if turn.cancel.is_cancelled() {
                continue;
            }
            if let Some(reply) = turn.reply.as_mut()
                && reply.poll_closed(cx).is_ready()
            {
                turn.cancel.cancel();
                gone = true;
            }
        }
        if gone { Poll::Ready(()) } else { Poll::Pending }
    })
}

/// The output gate of one activation: answers of turns that could have observed a write that
/// is not durable yet wait here, in order, until it is. One commit is in flight at a time;
/// the writes of every turn that ran meanwhile share the next one.
struct Gate {
    commit: Option<futures::future::BoxFuture<'static, Result<(), Error>>>,
    held: VecDeque<Held>,
}

/// An answer the gate holds back.
struct Held {
    /// Released once every write up to this number is durable.
    seq: u64,
    reply: Option<oneshot::Sender<Reply>>,
    ticket: Option<Ticket>,
    result: Result<Option<Envelope>, Error>,
}

impl Held {
    fn deliver(self) {
        // Recorded by the drain: kept even when the caller is gone.
        if let Some(ticket) = self.ticket {
            ticket.finish(&self.result);
        }
        if let Some(reply) = self.reply {
            let _ = reply.send(Reply::Done(self.result));
        }
    }
}

impl Gate {
    fn new() -> Self {
        Gate {
            commit: None,
            held: VecDeque::new(),
        }
    }

    /// Answers a finished turn at once when everything it could have observed is durable,
    /// otherwise holds the answer for the commit.
    fn answer(&mut self, act: &Activation, held: Held) {
        self.held.push_back(held);
        self.release(act);
    }

    /// Delivers the answers whose writes are durable, fails them all if a commit failed, and
    /// starts the next commit if writes wait for one.
    fn release(&mut self, act: &Activation) {
        while let Some(front) = self.held.front()
            && act.store.is_durable(front.seq)
        {
            self.held.pop_front().expect("a held answer").deliver();
        }
        match act.store.durability() {
            Durability::Failed(e) => {
                for mut held in self.held.drain(..) {
                    held.result = Err(Error::from_wire(
                        e.kind().code(),
                        e.to_string(),
                        e.retry_after(),
                    ));
                    held.deliver();
                }
            }
            Durability::Pending(_) if self.commit.is_none() => {
                let store = act.store.clone();
                self.commit = Some(Box::pin(async move { store.flush().await }));
            }
            Durability::Pending(_) | Durability::Durable => {}
        }
    }

    /// Waits for the commit in flight (forever if there is none).
    async fn committed(&mut self) -> Result<(), Error> {
        match self.commit.as_mut() {
            Some(commit) => {
                let result = commit.await;
                self.commit = None;
                result
            }
            None => std::future::pending().await,
        }
    }

    /// After a commit: releases what it made durable; a failed commit fails the held answers
    /// and discards the activation, whose next call reads the stored state.
    fn on_commit(&mut self, host: &Activations, act: &Activation, result: Result<(), Error>) {
        if let Err(e) = &result {
            let fenced = e.kind() == ErrorKind::Fenced;
            warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                  host = %host.address, epoch = act.epoch,
                  "state write failed: {e}; failing the answers that waited for it and deactivating this activation");
            host.begin_deactivation(
                act,
                if fenced {
                    DeactivationReason::Fenced
                } else {
                    DeactivationReason::Halted
                },
            );
        }
        self.release(act);
    }

    /// Commits until nothing waits (or a commit fails), releasing every held answer.
    async fn settle_all(&mut self, host: &Activations, act: &Activation) {
        self.release(act);
        while self.commit.is_some() {
            let result = self.committed().await;
            self.on_commit(host, act, result);
        }
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

/// How turns reach other actors: the service a turn of `actor` uses, given the call chain
/// of the call it serves and the activation's writes (flushed before any call leaves). Given
/// by the layer above (routing and the public service), so this layer depends on none of it.
pub(crate) type Outbound =
    Box<dyn Fn(CallChain, &ActorRef, Arc<ActivationStore>) -> Service + Send + Sync>;

/// The activation layer: the table of activations and their turns, the actor types, the
/// host's lease and health. Everything above (routing, the peer server, the public service,
/// the lifecycle loops) reaches activations through it; it reaches nothing above it except
/// through [`Outbound`].
pub(crate) struct Activations {
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
    /// How turns call other actors; set once, right after the host is built.
    outbound: OnceLock<Outbound>,
    /// When the last successful heartbeat (or registration) was *sent*, on the monotonic
    /// clock; `None` until the host registered. The lease every call checks.
    lease: Mutex<Option<Instant>>,
    /// Wakes the heartbeat task when a call found the lease lapsed, so it fences the host.
    pub lease_lapsed: tokio::sync::Notify,
    /// Outcomes of turns other hosts may resend, by request id.
    pub recent: Arc<RecentRequests>,
}

impl Activations {
    pub fn new(address: String, host_id: String, timings: HostTimings, store: StoreAccess) -> Self {
        Activations {
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
            outbound: OnceLock::new(),
            lease: Mutex::new(None),
            lease_lapsed: tokio::sync::Notify::new(),
            recent: RecentRequests::new(RequestMemory::default()),
        }
    }

    /// Sets how turns call other actors (once).
    pub fn set_outbound(&self, outbound: Outbound) {
        let _ = self.outbound.set(outbound);
    }

    /// The service a turn of `actor` serving a call with chain `incoming` uses.
    fn outbound(
        &self,
        incoming: CallChain,
        actor: &ActorRef,
        writes: Arc<ActivationStore>,
    ) -> Service {
        let outbound = self
            .outbound
            .get()
            .expect("the host sets outbound when it is built");
        outbound(incoming, actor, writes)
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
        self.check_lease_at(Instant::now())
    }

    /// [`Activations::check_lease`] as of `now`, on the host's monotonic clock.
    fn check_lease_at(&self, now: Instant) -> Result<(), Error> {
        let Some(sent) = self.lease_sent() else {
            return Ok(());
        };
        let since = now.saturating_duration_since(sent);
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
        crate::metrics::lifecycle(&event);
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
            Health::Failed(why) => {
                return Err(Error::HostUnavailable(format!(
                    "host is not running: it failed ({why})"
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
    /// (with `claimed`, the placement routing claimed for this host, when it did). The call
    /// fails with [`Error::Timeout`] past the invoke timeout; a turn that began by then still
    /// runs to its end.
    pub async fn call(
        self: &Arc<Self>,
        actor: &ActorRef,
        op: Op,
        request_id: String,
        claimed: Option<Claim>,
    ) -> Result<Option<Envelope>, Error> {
        let deadline = Instant::now() + self.timings.invoke_timeout;
        self.turn(actor, op, request_id, None, claimed, deadline)
            .await
    }

    /// [`Activations::call`] for a turn another host sent, which it resends under the same
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
        let deadline = Instant::now() + self.timings.invoke_timeout;
        loop {
            match self.recent.begin(actor, &request_id) {
                Begin::Run(ticket) => {
                    return self
                        .turn(actor, op, request_id, Some(ticket), None, deadline)
                        .await;
                }
                Begin::Join(first) => {
                    let first = tokio::time::timeout_at(deadline, outcome_of(first));
                    match first.await {
                        Ok(Some(outcome)) => return outcome.replay(),
                        // The first never started its turn: this one runs it.
                        Ok(None) => {}
                        Err(_) => return Err(self.timed_out(actor)),
                    }
                }
            }
        }
    }

    fn timed_out(&self, actor: &ActorRef) -> Error {
        Error::Timeout {
            what: format!("call to actor {actor}"),
            after: self.timings.invoke_timeout,
        }
    }

    /// Sends the turn to the actor's mailbox (activating it first if needed) and waits for
    /// its answer. The drain answers a turn that is still queued at `deadline` with a
    /// timeout, so the common path arms no timer here.
    async fn turn(
        self: &Arc<Self>,
        actor: &ActorRef,
        op: Op,
        request_id: String,
        ticket: Option<Ticket>,
        mut claimed: Option<Claim>,
        deadline: Instant,
    ) -> Result<Option<Envelope>, Error> {
        let read_only = op.read_only();
        let mut letter = (op, request_id, ticket);
        loop {
            let act = match self.active(actor) {
                Some(act) => act,
                None => {
                    let ty = self.type_entry(actor.actor_type())?;
                    // Boxed: activating is the rare path, and its future is large; the
                    // common path's future (every call's) stays small.
                    let activating = self.get_or_activate(actor, &ty, claimed.take());
                    Box::pin(tokio::time::timeout_at(deadline, activating))
                        .await
                        .map_err(|_| self.timed_out(actor))??
                }
            };
            let (op, request_id, ticket) = letter;
            let (reply, answer) = oneshot::channel();
            act.pending.fetch_add(1, Ordering::AcqRel);
            let sent = act.mailbox.send(Mail::Turn(Letter {
                op,
                request_id,
                ticket,
                deadline,
                reply,
                caller_span: tracing::Span::current(),
            }));
            let again = match sent {
                Ok(()) => match answer.await {
                    Ok(Reply::Done(result)) => {
                        // A read answers from this activation's cached state: only while the
                        // lease holds.
                        if read_only {
                            self.check_lease()?;
                        }
                        return result;
                    }
                    Ok(Reply::Again(op, request_id, ticket)) => (op, request_id, ticket),
                    Err(_) => {
                        return Err(Error::HostUnavailable(format!(
                            "the activation of {actor} on host {} stopped before answering",
                            self.address
                        )));
                    }
                },
                Err(mpsc::error::SendError(mail)) => {
                    act.pending.fetch_sub(1, Ordering::AcqRel);
                    let Mail::Turn(l) = mail else {
                        unreachable!("a turn was sent")
                    };
                    (l.op, l.request_id, l.ticket)
                }
            };
            // Deactivation won the race: wait until it is complete, then activate anew.
            Box::pin(tokio::time::timeout_at(
                deadline,
                act.deactivated.cancelled(),
            ))
            .await
            .map_err(|_| self.timed_out(actor))?;
            letter = again;
        }
    }

    /// The context of one turn of `act`.
    fn context(
        self: &Arc<Self>,
        act: &Activation,
        op: &Op,
        trace: Option<TraceContext>,
        request_id: String,
        cancel: CancellationToken,
        halt: Arc<AtomicBool>,
    ) -> ActorContext {
        // The turn's calls carry the chain of the call it serves, in the turn's own trace.
        let service: Service = match op.caller_chain() {
            Some(chain) if !chain.is_empty() || trace.is_some() => {
                self.outbound(chain.clone().traced(trace), &act.actor, act.store.clone())
            }
            _ => act.service.clone(),
        };
        ActorContext::new(ContextParts {
            actor: act.actor.clone(),
            request_id,
            cancel,
            read_only: op.read_only(),
            halt,
            state: act.store.clone(),
            service,
        })
    }

    /// The mailbox's drain: the one task that owns `instance`. It runs queued turns one at a
    /// time in arrival order (peeks queued together run together), and once deactivation is
    /// decided it deactivates the actor and hands back the turns still queued.
    async fn drain(
        self: Arc<Self>,
        act: Arc<Activation>,
        mut instance: Box<dyn Actor>,
        mailbox: mpsc::UnboundedReceiver<Mail>,
    ) {
        let mut mail = Mailbox {
            rx: mailbox,
            queue: VecDeque::new(),
            open: true,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        };
        let mut gate = Gate::new();
        let mut metrics = TurnMetrics::new(act.actor.actor_type(), act.ty.methods.clone());
        loop {
            if act.halting.load(Ordering::Acquire) {
                break;
            }
            let next = tokio::select! {
                biased;
                committed = gate.committed(), if gate.commit.is_some() => Err(committed),
                letter = mail.next() => Ok(letter),
            };
            let letter = match next {
                Err(committed) => {
                    gate.on_commit(&self, &act, committed);
                    continue;
                }
                Ok(None) => break,
                Ok(Some(letter)) => letter,
            };
            if act.halting.load(Ordering::Acquire) {
                mail.queue.push_front(letter);
                break;
            }
            let now = Instant::now();
            let Some(letter) = self.admit(&act, letter, now) else {
                continue;
            };
            if letter.op.read_only() {
                let mut peeks = vec![letter];
                while let Some(next) = mail.next_peek() {
                    if let Some(next) = self.admit(&act, next, now) {
                        peeks.push(next);
                    }
                }
                let (mut running, turns): (Vec<_>, Vec<_>) = peeks
                    .into_iter()
                    .map(|letter| self.begin_turn(&act, letter))
                    .unzip();
                let (contexts, ops): (Vec<_>, Vec<_>) = turns.into_iter().unzip();
                let shared: &dyn Actor = &*instance;
                let spans: Vec<tracing::Span> = running.iter().map(|r| r.span.clone()).collect();
                let work = futures::future::join_all(contexts.iter().zip(ops).zip(spans).map(
                    |((ctx, op), span)| {
                        AssertUnwindSafe(
                            run_op(Instance::Shared(shared), ctx, &act, op).instrument(span),
                        )
                        .catch_unwind()
                    },
                ));
                let outcomes = mail
                    .supervise(work, &mut running, &mut gate, &self, &act)
                    .await;
                drop(contexts);
                for (turn, outcome) in running.into_iter().zip(outcomes) {
                    let outcome = measured(&mut metrics, outcome);
                    self.settle(&act, &mut gate, turn, outcome);
                }
            } else {
                let (mut turn, (ctx, op)) = self.begin_turn(&act, letter);
                let work = AssertUnwindSafe(
                    run_op(Instance::Exclusive(&mut *instance), &ctx, &act, op)
                        .instrument(turn.span.clone()),
                )
                .catch_unwind();
                let outcome = mail
                    .supervise(
                        work,
                        std::slice::from_mut(&mut turn),
                        &mut gate,
                        &self,
                        &act,
                    )
                    .await;
                drop(ctx);
                let outcome = measured(&mut metrics, outcome);
                self.settle(&act, &mut gate, turn, outcome);
            }
        }
        self.deactivate(&act, instance, mail, gate).await;
    }

    /// Whether a letter's turn may begin now: not if its caller gave up, its deadline passed,
    /// or this host's lease lapsed (a call queued before a freeze must not run after it).
    fn admit(&self, act: &Activation, letter: Letter, now: Instant) -> Option<Letter> {
        let refused = if letter.reply.is_closed() {
            None
        } else if letter.deadline <= now {
            Some(self.timed_out(&act.actor))
        } else {
            match self.check_lease_at(now) {
                Ok(()) => return Some(letter),
                Err(e) => Some(e),
            }
        };
        if let Some(e) = refused {
            letter.answer(Err(e));
        }
        act.finished();
        None
    }

    /// What a turn needs while it runs, and its context and op.
    fn begin_turn(
        self: &Arc<Self>,
        act: &Activation,
        letter: Letter,
    ) -> (Running, (ActorContext, Op)) {
        let Letter {
            op,
            request_id,
            ticket,
            deadline,
            reply,
            caller_span,
        } = letter;
        let cancel = act.cancel.child_token();
        let halt = Arc::new(AtomicBool::new(false));
        let parent = op.caller_chain().and_then(CallChain::trace);
        let trace = parent.map(|p| p.child());
        let span = turn_span(&caller_span, &act.actor, &op, &self.address, trace, parent);
        // With `francis.turn` filtered out (it is at debug), the turn runs in the caller's span
        // (which records its own outcome), and the calls it makes are children of the caller's
        // span rather than of a turn span nobody sees. Either way the caller's span stays open
        // until the turn ends, even when the caller stopped waiting: it covers the work it asked
        // for.
        let own_span = !span.is_disabled();
        let (span, trace) = if own_span {
            (span, trace)
        } else {
            (caller_span, parent)
        };
        let ctx = self.context(act, &op, trace, request_id, cancel.clone(), halt.clone());
        let running = Running {
            reply: Some(reply),
            ticket,
            deadline,
            cancel,
            halt,
            span,
            own_span,
        };
        (running, (ctx, op))
    }

    /// Records a finished turn's outcome and answers it through the output gate (once every
    /// write it could have observed is durable), and starts deactivating the activation if
    /// the turn halted it, was fenced or panicked.
    fn settle(&self, act: &Activation, gate: &mut Gate, turn: Running, outcome: TurnOutcome) {
        let result = match outcome {
            Ok(result) => result,
            Err(panic) => {
                let message = panic_text(panic.as_ref());
                warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                      host = %self.address, "actor panicked during a turn: {message}; deactivating it");
                turn.halt.store(true, Ordering::Release);
                Err(Error::actor(format!("actor panicked: {message}")))
            }
        };
        if turn.own_span {
            turn.span.record("outcome", outcome_code(&result));
        }
        // Where this activation's writes stand, read once: a turn of an activation whose
        // commit failed fails with it, and the activation goes (fenced when that failure was).
        let (seq, commit_failed) = match act.store.durability() {
            Durability::Durable => (0, None),
            Durability::Pending(seq) => (seq, None),
            Durability::Failed(e) => (u64::MAX, Some(e.kind())),
        };
        // This activation's own write was fenced (another actor's fencing is that actor's).
        let fenced = match &result {
            Err(Error::Fenced { actor, .. }) => actor == &act.actor,
            _ => false,
        } || commit_failed == Some(ErrorKind::Fenced);
        if fenced {
            warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                  host = %self.address, epoch = act.epoch,
                  "write fenced: placement moved on; deactivating this activation");
        }
        if fenced || commit_failed.is_some() || turn.halt.load(Ordering::Acquire) {
            // Before the answer, so no turn queued behind this one starts on this activation.
            let reason = if fenced {
                DeactivationReason::Fenced
            } else {
                DeactivationReason::Halted
            };
            self.begin_deactivation(act, reason);
        }
        gate.answer(
            act,
            Held {
                seq,
                reply: turn.reply,
                ticket: turn.ticket,
                result,
            },
        );
        act.finished();
    }

    /// The actor's activation here; creates it (claim + factory) exactly once under any
    /// number of concurrent first calls.
    async fn get_or_activate(
        self: &Arc<Self>,
        actor: &ActorRef,
        ty: &Arc<TypeEntry>,
        claimed: Option<Claim>,
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
        claimed: Option<Claim>,
    ) -> Result<Arc<Activation>, Error> {
        self.check_serving()?;
        let host_id = self.host_id();
        let claim = match claimed {
            Some(c) if c.places(actor, &host_id) => c,
            _ => self
                .store
                .claim(actor, &host_id, self.timings.health_deadline)
                .await
                .map_err(|e| claim_error(actor, e))?,
        };
        if !claim.places(actor, &host_id) {
            return Err(Error::ActorNotHosted(actor.clone()));
        }
        let placement = claim.placement();
        let store = Arc::new(ActivationStore::new(self.store.clone(), &claim));
        // Calls made outside a chain (from a turn called from outside any turn, an alarm, the
        // factory, deactivation) start one at this actor; a turn with a caller chain gets its own.
        let service = self.outbound(CallChain::default(), actor, store.clone());
        let instance = (ty.factory)(ActorInit {
            actor: actor.clone(),
            service: service.clone(),
        });
        let (mailbox, letters) = mpsc::unbounded_channel();
        let act = Arc::new(Activation {
            actor: actor.clone(),
            host_id,
            epoch: placement.epoch,
            ty: ty.clone(),
            mailbox,
            store,
            service,
            pending: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
            halting: AtomicBool::new(false),
            reason: Mutex::new(None),
            cancel: self.cancel_root().child_token(),
            deactivated: CancellationToken::new(),
        });
        tokio::spawn(self.clone().drain(act.clone(), instance, letters));
        info!(actor_type = actor.actor_type(), actor_id = actor.actor_id(), host = %self.address,
              epoch = placement.epoch, "actor activated");
        self.emit(HostEvent::Activated {
            actor: actor.clone(),
            epoch: placement.epoch,
        });
        Ok(act)
    }

    /// Decides to deactivate `act` once its current turn ends; returns at once. Turns still
    /// queued go back to their callers, who activate the actor again. The first reason wins.
    pub fn begin_deactivation(&self, act: &Activation, reason: DeactivationReason) {
        act.reason
            .lock()
            .expect("deactivation reason lock")
            .get_or_insert(reason);
        act.halting.store(true, Ordering::Release);
        // The drain may be waiting for mail; it is gone already if the mailbox is closed.
        let _ = act.mailbox.send(Mail::Wake);
    }

    /// Runs the actor's `deactivate` (bounded), releases the placement, removes the activation
    /// from the table and hands back the turns still queued. Called by the drain, once, after
    /// its last turn.
    async fn deactivate(
        self: &Arc<Self>,
        act: &Arc<Activation>,
        mut instance: Box<dyn Actor>,
        mailbox: Mailbox,
        mut gate: Gate,
    ) {
        // The answers still held leave (or fail) before anything else.
        gate.settle_all(self, act).await;
        let reason = act
            .reason
            .lock()
            .expect("deactivation reason lock")
            .unwrap_or(DeactivationReason::Halted);
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
        let hook = AssertUnwindSafe(tokio::time::timeout(limit, instance.deactivate(&ctx)));
        match hook.catch_unwind().await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                      host = %self.address, "actor's deactivate failed: {e}")
            }
            Ok(Err(_)) => {
                warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                                host = %self.address, "actor's deactivate did not finish within {limit:?}")
            }
            Err(panic) => {
                warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                                host = %self.address, "actor's deactivate panicked: {}", panic_text(panic.as_ref()))
            }
        }
        drop(instance);
        // What the hook wrote is committed before the placement is let go.
        if let Durability::Pending(_) = act.store.durability()
            && let Err(e) = act.store.flush().await
        {
            warn!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
                  host = %self.address, "state written by the actor's deactivate was not committed: {e}");
        }
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
            cell.get().is_some_and(|a| Arc::ptr_eq(a, act))
        });
        info!(actor_type = act.actor.actor_type(), actor_id = act.actor.actor_id(),
              host = %self.address, reason = %reason, "actor deactivated");
        self.emit(HostEvent::Deactivated {
            actor: act.actor.clone(),
            epoch: act.epoch,
            reason,
        });
        // Before `deactivated` fires: whoever waits for it (fencing) may renew the lease next.
        mailbox.return_all(self, act).await;
        act.deactivated.cancel();
    }

    /// Deactivates everything active here and waits for it, at most `limit`.
    pub async fn deactivate_all(
        self: &Arc<Self>,
        reason: DeactivationReason,
        limit: Duration,
    ) -> bool {
        let done: Vec<_> = self
            .all_active()
            .into_iter()
            .map(|act| {
                self.begin_deactivation(&act, reason);
                act.deactivated.clone().cancelled_owned()
            })
            .collect();
        tokio::time::timeout(limit, futures::future::join_all(done))
            .await
            .is_ok()
    }
}

/// How a turn holds the instance: alone, or shared with the peeks queued beside it.
enum Instance<'a> {
    Exclusive(&'a mut dyn Actor),
    Shared(&'a dyn Actor),
}

/// Counts a finished call in the activation's metrics; the turn's outcome, as settled.
fn measured(metrics: &mut TurnMetrics, outcome: std::thread::Result<RanOp>) -> TurnOutcome {
    outcome.map(|(call, result)| {
        if let Some((method, started)) = call {
            let label = match &result {
                Ok(_) => "ok",
                Err(e) => e.code(),
            };
            metrics.turn(&method, label, started.elapsed());
        }
        result
    })
}

/// Runs one op on the instance; for an invocation or a peek, also gives back its method and
/// when it started (for the turn's metrics).
async fn run_op(instance: Instance<'_>, ctx: &ActorContext, act: &Activation, op: Op) -> RanOp {
    use francis_core::ActivationState;
    let started = Instant::now();
    match (instance, op) {
        (Instance::Shared(actor), Op::Peek { method, data, .. }) => {
            let result = actor.peek(ctx, &method, data).await;
            (Some((method, started)), result)
        }
        (Instance::Exclusive(actor), Op::Peek { method, data, .. }) => {
            let result = actor.peek(ctx, &method, data).await;
            (Some((method, started)), result)
        }
        (Instance::Exclusive(actor), Op::Invoke { method, data, .. }) => {
            let result = actor.invoke(ctx, &method, data).await;
            (Some((method, started)), result)
        }
        (Instance::Shared(_), _) => (None, Err(Error::ActorNotActive(act.actor.clone()))),
        (Instance::Exclusive(actor), Op::Alarm { name, data }) => {
            let ran = actor.alarm(ctx, &name, data).await;
            (None, ran.map(|()| None).map_err(alarm_handler_error))
        }
        (Instance::Exclusive(_), Op::SetState { value, options }) => {
            (None, act.store.store(value, options).await.map(|()| None))
        }
        (Instance::Exclusive(_), Op::DeleteState) => (None, act.store.clear().await.map(|()| None)),
    }
}

/// The `francis.turn` span of a turn of `actor` on the host at `host`, in `trace` (made by the
/// call's `parent` span). Its `outcome` is recorded when the turn ends.
fn turn_span(
    caller: &tracing::Span,
    actor: &ActorRef,
    op: &Op,
    host: &str,
    trace: Option<TraceContext>,
    parent: Option<TraceContext>,
) -> tracing::Span {
    let (turn, method) = match op {
        Op::Invoke { method, .. } => ("invoke", method.as_str()),
        Op::Peek { method, .. } => ("peek", method.as_str()),
        Op::Alarm { name, .. } => ("alarm", name.as_str()),
        Op::SetState { .. } => ("set_state", ""),
        Op::DeleteState => ("delete_state", ""),
    };
    // At debug: a local call's own `francis.invoke` span already names the actor, method,
    // host, trace and outcome at info, and each span costs a subscriber that formats fields.
    tracing::debug_span!(
        parent: caller,
        "francis.turn",
        actor_type = actor.actor_type(),
        actor_id = actor.actor_id(),
        turn,
        method,
        host,
        trace_id = trace.map(|t| t.trace_id()).map(tracing::field::display),
        span_id = trace.map(|t| t.span_id()).map(tracing::field::display),
        parent_span_id = parent.map(|t| t.span_id()).map(tracing::field::display),
        outcome = tracing::field::Empty,
    )
}

/// A span's `outcome`: `ok`, or the error's stable code.
pub(crate) fn outcome_code<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
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

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
