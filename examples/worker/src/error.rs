//! The worker's one error type.

use francis_host::HostError;

/// What starting or running a worker can fail with.
///
/// [`WorkerError::exit_code`] tells the binary how to exit: `2` for a command-line mistake
/// (the usage is printed), `1` for anything that went wrong while starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A flag the worker does not know.
    #[error("unknown flag {0}")]
    UnknownFlag(String),
    /// A flag that needs a value was last on the command line.
    #[error("flag -{0} needs a value")]
    MissingValue(&'static str),
    /// A flag's value is malformed; `reason` says what is expected.
    #[error("invalid value for -{flag}: {reason}")]
    InvalidValue {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong (never repeats a secret).
        reason: String,
    },
    /// A positional argument; the worker takes flags only.
    #[error("unexpected argument {0:?}: the worker takes flags only")]
    UnexpectedArgument(String),
    /// The control server's address could not be bound (in use, not local, ...).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The `-worker-address` value.
        address: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The control server stopped with an I/O error.
    #[error("HTTP control server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The actor host could not be built, started or stopped.
    #[error(transparent)]
    Host(#[from] HostError),
}

impl WorkerError {
    /// `2` for a command-line mistake, `1` otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.is_usage() { 2 } else { 1 }
    }

    /// Whether this is a command-line mistake (the usage should be shown).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            WorkerError::UnknownFlag(_)
                | WorkerError::MissingValue(_)
                | WorkerError::InvalidValue { .. }
                | WorkerError::UnexpectedArgument(_)
        )
    }
}
