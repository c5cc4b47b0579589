//! The conformance suite every [`Provider`] implementation runs.
//!
//! Each case is a public async function taking a [`ProviderHarness`] (which makes fresh stores
//! and, optionally, reopens one). [`provider_conformance_tests!`](crate::provider_conformance_tests)
//! expands to one `#[tokio::test]` per case, so a failure names its case:
//!
//! ```ignore
//! // tests/conformance.rs of a provider crate (needs `tokio` as a dev-dependency)
//! mod memory {
//!     francis_store::provider_conformance_tests!(
//!         francis_store::testing::harness_fn(|| async { MyProvider::new() })
//!     );
//! }
//! mod file {
//!     // a harness implementing `reopen` also runs the durability cases
//!     francis_store::provider_conformance_tests!(MyFileHarness::new(), reopen);
//! }
//! ```
//!
//! Cases use fixed times around [`T0_MS`] (the store never reads a clock) and fail by panicking
//! with a message that says what was expected.

mod alarms;
mod hosts;
mod load;
mod placement;
mod state;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use francis_core::ActorRef;

use crate::provider::{ActorTypeSpec, HostRegistration, Provider};

pub use alarms::*;
pub use hosts::*;
pub use load::*;
pub use placement::*;
pub use state::*;

/// Makes the stores a conformance case runs against.
#[async_trait]
pub trait ProviderHarness: Send + 'static {
    /// The provider under test.
    type Provider: Provider;

    /// A new, empty store.
    async fn fresh(&mut self) -> Self::Provider;

    /// Closes `provider` (letting it finish its writes) and opens the same store again.
    /// Only the cases generated with `reopen` call it; the default panics.
    async fn reopen(&mut self, provider: Self::Provider) -> Self::Provider {
        drop(provider);
        panic!("this harness cannot reopen a store; do not generate the `reopen` cases for it")
    }
}

/// A harness from a function that makes a fresh provider (no reopening).
#[derive(Debug, Clone)]
pub struct FnHarness<F>(F);

/// Wraps `make` as a [`ProviderHarness`] whose `fresh` calls it.
pub fn harness_fn<F, Fut, P>(make: F) -> FnHarness<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = P> + Send,
    P: Provider,
{
    FnHarness(make)
}

#[async_trait]
impl<F, Fut, P> ProviderHarness for FnHarness<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = P> + Send,
    P: Provider,
{
    type Provider = P;

    async fn fresh(&mut self) -> P {
        (self.0)().await
    }
}

/// Expands to one `#[tokio::test]` (multi-threaded runtime) per conformance case, each calling
/// the case with a harness made by evaluating `$harness` afresh. With `, reopen` it also
/// generates the cases that reopen a store (durability). The calling crate needs `tokio`
/// (features `macros`, `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! provider_conformance_tests {
    ($harness:expr) => {
        $crate::__provider_conformance_cases!($harness;
            host_register_and_list_live,
            host_live_window,
            host_heartbeat_unknown_host,
            host_reregister_updates_record,
            host_address_conflict,
            host_unregister_removes_placements_and_leases,
            bad_input_is_refused_alike,
            claim_new_then_existing,
            claim_epochs_never_reused,
            claim_replaces_dead_owner,
            claim_refusals,
            claim_concurrent_single_winner,
            lookup_only_live,
            release_requires_owner_and_epoch,
            count_placements_per_host_and_type,
            state_set_get_delete,
            state_fencing,
            state_ttl_expiry,
            state_list_pagination,
            alarm_set_get_replace_delete,
            alarm_fencing,
            alarm_lease_due_types_and_order,
            alarm_lease_is_exclusive,
            alarm_lease_concurrent_exclusive,
            alarm_lease_expiry_then_relase,
            alarm_renew,
            alarm_held_leases_are_read_without_change,
            alarm_complete_delete_and_reschedule,
            alarm_complete_after_replace_or_delete,
            alarm_complete_many,
            alarm_release,
            alarm_lease_prefers_local_actors,
            alarm_lease_prefers_local_actors_among_the_earliest_only,
            alarm_lease_limit_and_horizon,
            concurrent_writers_all_land,
        );
    };
    ($harness:expr, reopen) => {
        $crate::provider_conformance_tests!($harness);
        $crate::__provider_conformance_cases!($harness;
            durability_reopen,
            durability_concurrent_writes_survive_reopen,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __provider_conformance_cases {
    ($harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testing::$case($harness).await;
            }
        )*
    };
}

/// The suite's reference time (2023-11-14T22:13:20Z); cases use offsets from it.
pub const T0_MS: i64 = 1_700_000_000_000;

/// The liveness window the cases use.
pub const TTL: Duration = Duration::from_secs(10);

/// The time `ms` milliseconds after [`T0_MS`].
pub fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(T0_MS + ms).expect("time in range")
}

/// An actor reference (panics on an invalid one).
pub fn actor(actor_type: &str, actor_id: &str) -> ActorRef {
    ActorRef::new(actor_type, actor_id).expect("valid actor reference")
}

/// A registration serving `types` (`(type, max_active)`).
pub fn registration(
    host_id: &str,
    address: &str,
    types: &[(&str, Option<u32>)],
) -> HostRegistration {
    HostRegistration {
        host_id: host_id.into(),
        address: address.into(),
        actor_types: types
            .iter()
            .map(|(t, max)| ActorTypeSpec {
                actor_type: (*t).into(),
                max_active: *max,
            })
            .collect(),
    }
}

/// Registers `host_id` at `addr-<host_id>` serving `types` without limit, at `now`.
pub async fn register<P: Provider + ?Sized>(
    p: &P,
    host_id: &str,
    types: &[&str],
    now: DateTime<Utc>,
) {
    let types: Vec<(&str, Option<u32>)> = types.iter().map(|t| (*t, None)).collect();
    p.register_host(
        &registration(host_id, &format!("addr-{host_id}"), &types),
        now,
        TTL,
    )
    .await
    .unwrap_or_else(|e| panic!("register {host_id}: {e}"));
}
