//! The crate's error type.

/// Why no host can take an actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// No live candidate serves the actor's type.
    #[error("no live host serves actor type '{actor_type}'")]
    NoHostServesType {
        /// The actor type.
        actor_type: String,
    },
    /// Some live hosts serve the type, but every one of them is at capacity for it.
    #[error("all {hosts} live host(s) serving actor type '{actor_type}' are at capacity")]
    AllHostsFull {
        /// The actor type.
        actor_type: String,
        /// How many live hosts serve the type.
        hosts: usize,
    },
}
