//! Francis: distributed virtual actors for Rust, in one dependency.
//!
//! This crate re-exports [`francis_core`] (actors, references, envelopes, alarms, errors) and
//! [`francis_host`] (the host that runs them), so an application can depend on `francis` alone
//! and `use francis::prelude::*`. Depending on `francis-core` and `francis-host` directly works
//! the same: these are the same types.
//!
//! Cargo features pick the stores a host can use besides its own SQLite file: `postgres` (one
//! PostgreSQL database shared by every host) and `replication` (each host with its own SQLite
//! file, replicated with Raft: the two-worker local cluster); `otlp` adds [`otlp`], the
//! OpenTelemetry export of the host's spans, configured by the standard `OTEL_*` variables.
//!
//! ```no_run
//! use francis::prelude::*;
//!
//! struct Greeter;
//!
//! #[async_trait]
//! impl Actor for Greeter {
//!     async fn invoke(&mut self, _ctx: &ActorContext, _method: &str, data: Envelope)
//!         -> Result<Option<Envelope>, Error>
//!     {
//!         let name: String = data.decode()?;
//!         Ok(Some(Envelope::encode(&format!("hello, {name}"))?))
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let host = LocalHost::builder().address("127.0.0.1:7571").sqlite("data.db").build().await?;
//! host.register_actor("greeter", |_init: ActorInit| Greeter, ActorOptions::default())?;
//! # Ok(()) }
//! ```

pub use francis_core::*;
pub use francis_host::*;

/// The crates themselves, for paths such as `francis::core::Interval`.
pub use francis_core as core;
/// See [`core`].
pub use francis_host as host;
/// OpenTelemetry export of the host's spans (the `otlp` feature).
#[cfg(feature = "otlp")]
pub use francis_otlp as otlp;

/// What an application with actors usually needs, in one `use`.
pub mod prelude {
    pub use francis_core::{
        Actor, ActorContext, ActorInit, ActorRef, ActorService, AlarmProperties, CallError,
        CancellationToken, Client, Envelope, Error, ErrorKind, SetStateOptions, TypedActor, actor,
        async_trait,
    };
    pub use francis_host::{ActorOptions, Health, HostError, HostService, LocalHost};
}
