//! The store: the single authority on hosts, placement, state and alarms.
//!
//! [`Provider`] is the contract every backend implements (its doc lists the guarantees:
//! atomicity, durability, fencing, single placement, exclusive alarm leases).
//! [`SqliteProvider`] implements it over one SQLite file with group commit;
//! `PostgresProvider` (feature `postgres`) over one PostgreSQL database shared by any number of
//! hosts. The `testing` feature exposes [`testing`], the conformance suite every implementation
//! runs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), francis_store::StoreError> {
//! use std::time::Duration;
//! use francis_store::{Provider, SqliteOptions, SqliteProvider, HostRegistration, ActorTypeSpec};
//!
//! let store = SqliteProvider::open("data.db", SqliteOptions::default()).await?;
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
//! store.close().await;
//! # Ok(()) }
//! ```

mod error;
#[cfg(feature = "testing")]
mod memory;
mod op;
pub mod policy;
#[cfg(feature = "postgres")]
mod postgres;
mod provider;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use error::StoreError;
#[cfg(feature = "testing")]
pub use memory::MemoryProvider;
pub use op::{Op, Reply};
#[cfg(all(feature = "postgres", feature = "testing"))]
pub use postgres::testing::{PostgresTestTables, TEST_POSTGRES_URL_ENV};
#[cfg(feature = "postgres")]
pub use postgres::{
    DEFAULT_TABLE_PREFIX, POSTGRES_SCHEMA_VERSION, PostgresOptions, PostgresProvider,
};
pub use provider::{
    ActorTypeSpec, AlarmLease, AlarmOutcome, ClaimRefusal, Fence, HostRecord, HostRegistration,
    LeaseRequest, LeasedAlarm, Placement, Provider, StateListItem, StateListPage, StateRecord,
    StoreResult,
};
pub use sqlite::{
    ApplyMarker, Durability, LOCAL_META_PREFIX, SCHEMA_VERSION, SqliteOptions, SqliteProvider,
    WriterStats,
};
