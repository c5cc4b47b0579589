//! The store's contract: the single authority on hosts, placement, state and alarms.
//!
//! - [`Op`] and [`Reply`]: every operation, defined once, as data.
//! - [`Provider`]: the contract every backend implements (its doc lists the guarantees:
//!   batches, atomicity, durability, fencing, single placement, exclusive alarm leases).
//!   A backend implements [`Provider::execute_batch`]; the typed methods come with it.
//! - [`policy`]: the decisions every backend makes the same way, as plain functions;
//!   [`codec`]: the row codec the SQL backends share; [`wire`]: the versioned wire form.
//! - With the `testing` feature: [`MemoryProvider`] and the conformance suite ([`testing`])
//!   every backend runs.
//!
//! The backends are crates of their own: `francis-store-sqlite` (one SQLite file, group
//! commit), `francis-store-postgres` (one PostgreSQL database shared by any number of hosts)
//! and `francis-replication` (SQLite files replicated with Raft). This crate compiles no
//! database driver.
//!
//! ```
//! # async fn demo(store: &impl francis_store::Provider) -> Result<(), francis_store::StoreError> {
//! use std::time::Duration;
//! use francis_store::{ActorTypeSpec, HostRegistration, Provider};
//!
//! let now = chrono::Utc::now(); // the caller's clock: the store never reads one
//! store
//!     .register_host(
//!         &HostRegistration {
//!             host_id: "host-1".into(),
//!             address: "127.0.0.1:7000".into(),
//!             actor_types: vec![ActorTypeSpec { actor_type: "counter".into(), max_active: None }],
//!         },
//!         now,
//!         Duration::from_secs(20),
//!     )
//!     .await?;
//! let actor = francis_core::ActorRef::new("counter", "c1").expect("valid reference");
//! let placement = store.claim(&actor, "host-1", now, Duration::from_secs(20)).await?;
//! assert_eq!(placement.host_id, "host-1");
//! # Ok(()) }
//! ```

pub mod codec;
mod error;
#[cfg(feature = "testing")]
mod memory;
mod op;
pub mod policy;
mod provider;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use error::StoreError;
#[cfg(feature = "testing")]
pub use memory::MemoryProvider;
pub use op::{Op, Reply};
pub use provider::{
    ActorTypeSpec, AlarmCompletion, AlarmLease, AlarmOutcome, ClaimRefusal, Fence, HostRecord,
    HostRegistration, LeaseRequest, LeasedAlarm, Placement, Provider, StateListItem, StateListPage,
    StateRecord, StoreResult,
};
