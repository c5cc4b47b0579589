//! The Francis actor host.
//!
//! [`LocalHost`] activates registered actor types on demand, runs their turns (exclusive for
//! `invoke` and `alarm`, shared for `peek`, FIFO between them), deactivates idle actors, fires
//! durable alarms, and keeps its registration alive in the store. Every placement decision goes
//! through the store's `Provider`, so the same host code serves one process or a cluster.
//!
//! ```no_run
//! use std::time::Duration;
//! use francis_core::{async_trait, Actor, ActorInit};
//! use francis_host::{ActorOptions, LocalHost};
//! use francis_core::CancellationToken;
//!
//! struct Greeter;
//! #[async_trait]
//! impl Actor for Greeter {}
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let host = LocalHost::builder()
//!     .address("127.0.0.1:7571")
//!     .sqlite("data.db")
//!     .shutdown_grace_period(Duration::from_secs(10))
//!     .build()
//!     .await?;
//! host.register_actor("greeter", |_init: ActorInit| Greeter, ActorOptions::default())?;
//! let service = host.service();
//! let shutdown = CancellationToken::new();
//! host.run(shutdown).await?;
//! # Ok(()) }
//! ```

mod alarms;
mod chain;
mod clock;
mod config;
mod error;
mod events;
mod host;
mod metrics;
mod outbound;
mod peer;
mod policy;
mod replica;
mod requests;
mod routing;
mod runtime;
mod service;
mod state;
mod trace;

pub use clock::{Clock, SystemClock, TokioClock};
pub use config::{ActorOptions, HostTimings};
pub use error::HostError;
pub use events::{DeactivationReason, HostEvent};
#[cfg(feature = "replication")]
pub use francis_replication::ReplicationStatus;
pub use host::{LocalHost, LocalHostBuilder};
pub use metrics::SECONDS_BUCKETS;
pub use runtime::Health;
pub use service::{HostService, Invoked};
pub use trace::{SpanId, TraceContext, TraceId};
