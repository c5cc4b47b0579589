//! Lifecycle events a host publishes (also logged, one line each).

use francis_core::ActorRef;

/// Why an activation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeactivationReason {
    /// Idle for its type's idle timeout.
    Idle,
    /// Halted from outside, or by itself with `ctx.halt()`.
    Halted,
    /// Its writes were fenced or its host fenced itself.
    Fenced,
    /// The host shut down.
    Shutdown,
}

impl std::fmt::Display for DeactivationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeactivationReason::Idle => "idle",
            DeactivationReason::Halted => "halted",
            DeactivationReason::Fenced => "fenced",
            DeactivationReason::Shutdown => "shutdown",
        })
    }
}

/// A lifecycle event of a host, in the order it happened on that host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostEvent {
    /// The host registered in the store and serves.
    Registered {
        /// Its (new) host id.
        host_id: String,
    },
    /// An actor was activated here (its factory ran).
    Activated {
        /// The actor.
        actor: ActorRef,
        /// Its placement epoch.
        epoch: u64,
    },
    /// An activation ended (its `deactivate` ran and its placement was released).
    Deactivated {
        /// The actor.
        actor: ActorRef,
        /// The epoch of the activation that ended.
        epoch: u64,
        /// Why.
        reason: DeactivationReason,
    },
    /// An alarm ran on this host.
    AlarmFired {
        /// The actor.
        actor: ActorRef,
        /// The alarm's name.
        name: String,
        /// Whether the actor's `alarm` succeeded.
        succeeded: bool,
    },
    /// The host stopped serving because it could not renew its lease in time.
    Fenced {
        /// The host id it had.
        host_id: String,
        /// Why.
        reason: String,
    },
}
