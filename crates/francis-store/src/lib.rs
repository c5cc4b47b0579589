//! The store: the single authority on hosts, placement, state and alarms.
//!
//! [`Provider`] is the contract; [`SqliteProvider`] implements it over one SQLite file; the
//! `testing` feature exposes [`testing`], the conformance suite every implementation runs.

mod error;
mod provider;

pub use error::StoreError;
pub use provider::{
    ActorTypeSpec, AlarmLease, AlarmOutcome, ClaimRefusal, Fence, HostRecord, HostRegistration,
    LeaseRequest, LeasedAlarm, Placement, Provider, StateListItem, StateListPage, StateRecord,
    StoreResult,
};
