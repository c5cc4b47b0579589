//! The actor trait, the context of a turn, and how actors are built.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::alarm::AlarmProperties;
use crate::envelope::Envelope;
use crate::error::Error;
use crate::reference::ActorRef;
use crate::service::{Service, SetStateOptions};

/// A virtual actor's behaviour.
///
/// The runtime guarantees:
/// - `invoke`, `alarm` and `deactivate` run as *exclusive* turns: never two at once for the same
///   activation, and never while a `peek` runs.
/// - `peek` runs as a *shared* turn: several peeks may overlap each other, never an exclusive turn.
/// - Waiting turns are served first-come first-served, so a stream of peeks cannot starve an invoke.
/// - `deactivate` is the last turn of an activation; it is bounded by the type's deactivation timeout.
///
/// Every method has a default that answers [`Error::MethodNotImplemented`] (or does nothing, for
/// `deactivate`), so an actor implements only what it serves.
#[async_trait]
pub trait Actor: Send + Sync + 'static {
    /// Handles a call that may change the actor's state.
    async fn invoke(
        &mut self,
        ctx: &ActorContext,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        let _ = data;
        Err(Error::MethodNotImplemented {
            actor: ctx.actor().clone(),
            entry: "invoke",
            method: method.to_owned(),
        })
    }

    /// Handles a read-only call; state mutations inside it fail with [`Error::ReadOnly`].
    async fn peek(
        &self,
        ctx: &ActorContext,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        let _ = data;
        Err(Error::MethodNotImplemented {
            actor: ctx.actor().clone(),
            entry: "peek",
            method: method.to_owned(),
        })
    }

    /// Handles a due alarm. An error makes the runtime retry it with backoff.
    async fn alarm(
        &mut self,
        ctx: &ActorContext,
        name: &str,
        data: Option<Envelope>,
    ) -> Result<(), Error> {
        let _ = data;
        Err(Error::MethodNotImplemented {
            actor: ctx.actor().clone(),
            entry: "alarm",
            method: name.to_owned(),
        })
    }

    /// Runs once before the activation ends (idle, halt or shutdown).
    async fn deactivate(&mut self, ctx: &ActorContext) -> Result<(), Error> {
        let _ = ctx;
        Ok(())
    }
}

/// What a factory receives to build one activation of an actor.
#[derive(Clone)]
pub struct ActorInit {
    /// The actor being activated.
    pub actor: ActorRef,
    /// The service, to call other actors and manage state and alarms.
    pub service: Service,
}

impl std::fmt::Debug for ActorInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorInit")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// Builds a fresh activation; called exactly once per activation.
pub type ActorFactory = Arc<dyn Fn(ActorInit) -> Box<dyn Actor> + Send + Sync>;

/// The durable state and alarms of one activation, as the runtime exposes them to its turns.
///
/// Implemented by the host. Every write carries the activation's placement epoch, so a write
/// from an activation that lost its placement is refused with [`Error::Fenced`]. Applications
/// use [`crate::Client`] instead; this is the runtime's side of it.
#[doc(hidden)]
#[async_trait]
pub trait ActivationState: Send + Sync + 'static {
    /// Reads the actor's state from the store (`None` when there is none or it expired). The
    /// second value is whether the state has a TTL (and so must not be cached).
    async fn load(&self) -> Result<Option<(Envelope, bool)>, Error>;
    /// Writes the actor's state (fenced by the activation's epoch).
    async fn store(&self, value: Envelope, options: SetStateOptions) -> Result<(), Error>;
    /// Deletes the actor's state (fenced by the activation's epoch).
    async fn clear(&self) -> Result<(), Error>;
    /// Creates or replaces one of the actor's alarms (fenced by the activation's epoch).
    async fn set_alarm(&self, name: &str, properties: AlarmProperties) -> Result<(), Error>;
    /// Deletes one of the actor's alarms (fenced by the activation's epoch).
    async fn delete_alarm(&self, name: &str) -> Result<(), Error>;
    /// A counter that changes whenever the state is written, by this activation or routed
    /// through it from outside; caches compare it to know they are current.
    fn generation(&self) -> u64;
}

/// The parts the runtime assembles into an [`ActorContext`] (the runtime's, not for
/// applications).
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub struct ContextParts {
    /// The actor running the turn.
    pub actor: ActorRef,
    /// Identifies the call (stable across a retry of the same call).
    pub request_id: String,
    /// Fires on timeout, halt or shutdown.
    pub cancel: CancellationToken,
    /// True inside a `peek` turn.
    pub read_only: bool,
    /// Set by [`ActorContext::halt`]; read by the runtime when the turn ends.
    pub halt: Arc<AtomicBool>,
    /// The activation's state and alarms.
    pub state: Arc<dyn ActivationState>,
    /// The service handle.
    pub service: Service,
}

/// What one turn knows about itself.
pub struct ActorContext {
    parts: ContextParts,
}

impl std::fmt::Debug for ActorContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorContext")
            .field("actor", &self.parts.actor)
            .field("request_id", &self.parts.request_id)
            .field("read_only", &self.parts.read_only)
            .finish_non_exhaustive()
    }
}

impl ActorContext {
    /// Assembles a context (the runtime does this for every turn; not for applications).
    #[doc(hidden)]
    pub fn new(parts: ContextParts) -> Self {
        ActorContext { parts }
    }

    /// The actor running this turn.
    pub fn actor(&self) -> &ActorRef {
        &self.parts.actor
    }

    /// The call's request id.
    pub fn request_id(&self) -> &str {
        &self.parts.request_id
    }

    /// The token that fires when the call times out, the actor is halted or the host shuts down.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.parts.cancel
    }

    /// Completes when the turn is cancelled; use it in `select!` around long work.
    pub async fn cancelled(&self) {
        self.parts.cancel.cancelled().await
    }

    /// Whether the turn has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.parts.cancel.is_cancelled()
    }

    /// Whether this is a read-only (`peek`) turn.
    pub fn is_read_only(&self) -> bool {
        self.parts.read_only
    }

    /// Asks the runtime to deactivate this actor once the current turn ends.
    pub fn halt(&self) {
        self.parts.halt.store(true, Ordering::Release);
    }

    /// Whether [`ActorContext::halt`] was called.
    pub fn halt_requested(&self) -> bool {
        self.parts.halt.load(Ordering::Acquire)
    }

    /// The service handle.
    pub fn service(&self) -> &Service {
        &self.parts.service
    }

    /// The activation's state and alarms (used by [`crate::Client`]; not for applications).
    #[doc(hidden)]
    pub fn activation(&self) -> &Arc<dyn ActivationState> {
        &self.parts.state
    }

    /// Sets or replaces an alarm of this actor; refused inside `peek`.
    pub async fn set_alarm(&self, name: &str, properties: AlarmProperties) -> Result<(), Error> {
        self.check_writable()?;
        crate::validate_alarm_name(name)?;
        properties.validate()?;
        self.parts.state.set_alarm(name, properties).await
    }

    /// Deletes an alarm of this actor; refused inside `peek`.
    pub async fn delete_alarm(&self, name: &str) -> Result<(), Error> {
        self.check_writable()?;
        crate::validate_alarm_name(name)?;
        self.parts.state.delete_alarm(name).await
    }

    /// [`Error::ReadOnly`] inside a `peek` turn.
    pub fn check_writable(&self) -> Result<(), Error> {
        if self.parts.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }
}
