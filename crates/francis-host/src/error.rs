//! The host's own error type (set-up and lifecycle); calls return `francis_core::Error`.

use francis_store::StoreError;

impl HostError {
    /// Whether trying again later may succeed (the store has no quorum or is unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            HostError::Store(StoreError::NoQuorum { .. } | StoreError::Unavailable(_))
                | HostError::StoreTimeout(_)
        )
    }
}

/// What setting up or running a host can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The builder was given an invalid setting.
    #[error("invalid host configuration: {0}")]
    InvalidConfig(String),
    /// An actor type was registered twice.
    #[error("actor type {0:?} is already registered")]
    DuplicateActorType(String),
    /// An actor type name breaks the rules or is reserved.
    #[error("cannot register actor type: {0}")]
    InvalidActorType(#[source] francis_core::Error),
    /// Actors must be registered before `run`.
    #[error("actor types must be registered before the host runs")]
    AlreadyRunning,
    /// The store failed during start-up or shutdown.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// The peer transport could not start (address in use, bad key...).
    #[error("peer transport: {0}")]
    Transport(#[from] francis_transport::TransportError),
    /// The replicated store could not start (its database belongs to another node...).
    #[error("replicated store: {0}")]
    #[cfg(feature = "replication")]
    Replication(#[from] francis_replication::ReplicationError),
    /// The host does not serve: its `run` failed (the message says why) or it stopped first.
    #[error("the host is not serving: {0}")]
    NotServing(String),
    /// The store did not answer in time during start-up or shutdown.
    #[error("store did not answer within {0:?}")]
    StoreTimeout(std::time::Duration),
}
