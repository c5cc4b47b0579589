//! The store's error type.

use francis_core::ActorRef;

use crate::provider::ClaimRefusal;

/// Everything a [`crate::Provider`] operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another live host is registered with this address.
    #[error("address {address} is already used by live host {host_id}")]
    AddressInUse {
        /// The contested address.
        address: String,
        /// The live host holding it.
        host_id: String,
    },
    /// The host is not registered (it was removed, e.g. after its lease expired).
    #[error("host {0} is not registered")]
    HostNotFound(String),
    /// A claim for a candidate host was refused.
    #[error("cannot place {actor} on host {candidate}: {reason}")]
    ClaimRefused {
        /// The actor.
        actor: ActorRef,
        /// The candidate host.
        candidate: String,
        /// Why.
        reason: ClaimRefusal,
    },
    /// A fenced write presented a stale epoch.
    #[error("write for {actor} fenced: epoch {epoch} is not the current placement")]
    Fenced {
        /// The actor.
        actor: ActorRef,
        /// The epoch presented.
        epoch: u64,
    },
    /// The database was written by a newer version of Francis.
    #[error(
        "database schema version {found} is newer than this build supports ({supported}); upgrade Francis"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The store cannot reach a quorum of its replicas.
    #[error("no quorum: cannot reach {}", .unreachable.join(", "))]
    NoQuorum {
        /// The unreachable peers.
        unreachable: Vec<String>,
    },
    /// An argument cannot be stored as given (an empty host id, an actor type listed twice, a
    /// zero page size, a value outside what the store can represent); nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The store is temporarily unavailable (connection lost, overloaded...); retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back (corruption or a foreign database).
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The backend's database failed (an SQL or I/O error, a failed migration); the message
    /// says how. Nothing of the failed operation was applied.
    #[error("database error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether this is the store's answer to the operation rather than a failure: the same
    /// operation on the same contents gets the same refusal on every backend and every
    /// replica (an address in use, an unknown host, a refused claim, a fenced write, bad
    /// input). A refused operation changed nothing; retrying it unchanged does not help.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::AddressInUse { .. }
                | StoreError::HostNotFound(_)
                | StoreError::ClaimRefused { .. }
                | StoreError::Fenced { .. }
                | StoreError::InvalidArgument(_)
        )
    }
}

impl From<StoreError> for francis_core::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fenced { actor, epoch } => francis_core::Error::Fenced { actor, epoch },
            StoreError::NoQuorum { unreachable } => francis_core::Error::NoQuorum { unreachable },
            StoreError::Unavailable(m) => francis_core::Error::HostUnavailable(m),
            // The caller's input (a write too large to replicate, an unstorable value): bad
            // input, which no retry fixes, not a failure of the store.
            StoreError::InvalidArgument(m) => francis_core::Error::invalid_argument("store", m),
            other => francis_core::Error::store(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_input_stays_bad_input_for_callers() {
        let e: francis_core::Error = StoreError::InvalidArgument("too large".into()).into();
        assert_eq!(e.kind(), francis_core::ErrorKind::InvalidArgument);
        assert!(!e.is_retryable());
        let e: francis_core::Error = StoreError::Unavailable("down".into()).into();
        assert!(e.is_retryable());
    }
}
