//! Every store operation, defined once, as data.
//!
//! An [`Op`] is one operation with all its arguments (owned, so it can be queued, batched,
//! sent to another node or written to a replicated log); a [`Reply`] is what a successful run
//! of it returns. Everything else is derived from this one definition:
//!
//! - the typed methods callers use ([`crate::Provider::claim`] and the rest) build an `Op`,
//!   run it with [`crate::Provider::execute`] and unwrap the `Reply` they expect;
//! - a backend implements [`crate::Provider::execute_batch`]: one `match` over `Op`;
//! - the replicated store writes `Op`s to its log in their versioned wire form
//!   ([`crate::wire`]).
//!
//! Adding an operation means: a variant here (with its typed method in `provider.rs`), an arm
//! in each backend's executor, and its cases in the conformance suite.
//!
//! Every argument, `now` and caller-chosen ids included, is in the `Op`, so running it is a
//! deterministic function of the store's contents and the `Op`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use francis_core::{ActorRef, AlarmProperties};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::provider::{
    AlarmCompletion, AlarmLease, AlarmOutcome, Fence, HostRecord, HostRegistration, LeaseRequest,
    LeasedAlarm, Placement, StateListPage, StateRecord, StoreResult,
};

/// One store operation with all its arguments. Each variant documents its semantics at the
/// typed method of the same name on [`crate::Provider`].
///
/// Its serde form is the store's wire form (see [`crate::wire`]): variant and field names
/// are part of the replicated log's format and must not change.
///
/// Not `non_exhaustive` on purpose: a new operation fails to compile in every backend until
/// each implements it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// [`crate::Provider::register_host`].
    RegisterHost {
        /// The registration.
        registration: HostRegistration,
        /// The caller's time.
        now: DateTime<Utc>,
        /// The liveness window.
        ttl: Duration,
    },
    /// [`crate::Provider::heartbeat`].
    Heartbeat {
        /// The host.
        host_id: String,
        /// The caller's time.
        now: DateTime<Utc>,
    },
    /// [`crate::Provider::unregister_host`].
    UnregisterHost {
        /// The host.
        host_id: String,
    },
    /// [`crate::Provider::live_hosts`] (a read).
    LiveHosts {
        /// The caller's time.
        now: DateTime<Utc>,
        /// The liveness window.
        ttl: Duration,
    },
    /// [`crate::Provider::claim`].
    Claim {
        /// The actor.
        actor: ActorRef,
        /// The candidate host.
        candidate: String,
        /// The caller's time.
        now: DateTime<Utc>,
        /// The liveness window.
        ttl: Duration,
    },
    /// [`crate::Provider::lookup`] (a read).
    Lookup {
        /// The actor.
        actor: ActorRef,
        /// The caller's time.
        now: DateTime<Utc>,
        /// The liveness window.
        ttl: Duration,
    },
    /// [`crate::Provider::release`].
    Release {
        /// The actor.
        actor: ActorRef,
        /// The owner.
        host_id: String,
        /// The placement's epoch.
        epoch: u64,
    },
    /// [`crate::Provider::count_placements`] (a read).
    CountPlacements {
        /// The host.
        host_id: String,
        /// The type.
        actor_type: String,
    },
    /// [`crate::Provider::get_state`] (a read).
    GetState {
        /// The actor.
        actor: ActorRef,
        /// The caller's time.
        now: DateTime<Utc>,
    },
    /// [`crate::Provider::set_state`].
    SetState {
        /// The actor.
        actor: ActorRef,
        /// The document.
        #[serde(with = "crate::wire::bytes")]
        data: Vec<u8>,
        /// Its expiry.
        expires_at: Option<DateTime<Utc>>,
        /// The fence.
        fence: Fence,
    },
    /// [`crate::Provider::delete_state`].
    DeleteState {
        /// The actor.
        actor: ActorRef,
        /// The fence.
        fence: Fence,
    },
    /// [`crate::Provider::list_states`] (a read).
    ListStates {
        /// The type.
        actor_type: String,
        /// Ids strictly after this one.
        after: Option<String>,
        /// Page size.
        limit: u32,
        /// Whether to return the documents.
        include_data: bool,
        /// The caller's time.
        now: DateTime<Utc>,
    },
    /// [`crate::Provider::delete_expired_state`].
    DeleteExpiredState {
        /// The caller's time.
        now: DateTime<Utc>,
    },
    /// [`crate::Provider::set_alarm`].
    SetAlarm {
        /// The actor.
        actor: ActorRef,
        /// The alarm's name.
        name: String,
        /// Its properties.
        #[serde(with = "crate::wire::alarm")]
        properties: AlarmProperties,
        /// The fence.
        fence: Fence,
    },
    /// [`crate::Provider::get_alarm`] (a read).
    GetAlarm {
        /// The actor.
        actor: ActorRef,
        /// The alarm's name.
        name: String,
    },
    /// [`crate::Provider::delete_alarm`].
    DeleteAlarm {
        /// The actor.
        actor: ActorRef,
        /// The alarm's name.
        name: String,
        /// The fence.
        fence: Fence,
    },
    /// [`crate::Provider::lease_alarms`].
    LeaseAlarms {
        /// The request (its `lease_id` is chosen by the caller).
        request: LeaseRequest,
        /// The caller's time.
        now: DateTime<Utc>,
    },
    /// [`crate::Provider::renew_alarm_leases`].
    RenewAlarmLeases {
        /// The host.
        host_id: String,
        /// The leases.
        leases: Vec<AlarmLease>,
        /// The caller's time.
        now: DateTime<Utc>,
        /// The new lease duration.
        lease_duration: Duration,
    },
    /// [`crate::Provider::held_alarm_leases`].
    HeldAlarmLeases {
        /// The host.
        host_id: String,
        /// The leases.
        leases: Vec<AlarmLease>,
        /// The caller's time.
        now: DateTime<Utc>,
    },
    /// [`crate::Provider::complete_alarm`].
    CompleteAlarm {
        /// The lease.
        lease: AlarmLease,
        /// The outcome.
        outcome: AlarmOutcome,
    },
    /// [`crate::Provider::release_alarm`].
    ReleaseAlarm {
        /// The lease.
        lease: AlarmLease,
    },
    /// [`crate::Provider::complete_alarms`].
    CompleteAlarms {
        /// The leases and their outcomes, each lease at most once.
        completions: Vec<AlarmCompletion>,
    },
}

impl Op {
    /// Whether the operation may change the store. Reads never do, so a backend may run them
    /// outside its write path (and a replicated store without a log entry).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Op::LiveHosts { .. }
                | Op::Lookup { .. }
                | Op::CountPlacements { .. }
                | Op::GetState { .. }
                | Op::ListStates { .. }
                | Op::GetAlarm { .. }
                | Op::HeldAlarmLeases { .. }
        )
    }

    /// The operation's name, as the typed method that runs it is called (`"claim"`,
    /// `"set_state"`...), for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::RegisterHost { .. } => "register_host",
            Op::Heartbeat { .. } => "heartbeat",
            Op::UnregisterHost { .. } => "unregister_host",
            Op::LiveHosts { .. } => "live_hosts",
            Op::Claim { .. } => "claim",
            Op::Lookup { .. } => "lookup",
            Op::Release { .. } => "release",
            Op::CountPlacements { .. } => "count_placements",
            Op::GetState { .. } => "get_state",
            Op::SetState { .. } => "set_state",
            Op::DeleteState { .. } => "delete_state",
            Op::ListStates { .. } => "list_states",
            Op::DeleteExpiredState { .. } => "delete_expired_state",
            Op::SetAlarm { .. } => "set_alarm",
            Op::GetAlarm { .. } => "get_alarm",
            Op::DeleteAlarm { .. } => "delete_alarm",
            Op::LeaseAlarms { .. } => "lease_alarms",
            Op::RenewAlarmLeases { .. } => "renew_alarm_leases",
            Op::HeldAlarmLeases { .. } => "held_alarm_leases",
            Op::CompleteAlarm { .. } => "complete_alarm",
            Op::ReleaseAlarm { .. } => "release_alarm",
            Op::CompleteAlarms { .. } => "complete_alarms",
        }
    }
}

/// What a successful [`Op`] returns. Which variant each operation returns is said at its
/// typed method; a backend returning another one is a bug the typed methods report as
/// [`StoreError::Corrupt`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reply {
    /// No value (`register_host`, `heartbeat`, `unregister_host`, `set_state`, `set_alarm`).
    Unit,
    /// A yes/no answer (`release`, `delete_state`, `delete_alarm`, `complete_alarm`,
    /// `release_alarm`).
    Bool(bool),
    /// A count (`count_placements`, `delete_expired_state`).
    Count(u64),
    /// Hosts (`live_hosts`).
    Hosts(Vec<HostRecord>),
    /// A placement (`claim`).
    Placement(Placement),
    /// Maybe a placement (`lookup`).
    MaybePlacement(Option<Placement>),
    /// Maybe a state document (`get_state`).
    State(#[serde(with = "crate::wire::state")] Option<StateRecord>),
    /// A page of states (`list_states`).
    Page(#[serde(with = "crate::wire::page")] StateListPage),
    /// Maybe an alarm (`get_alarm`).
    Alarm(#[serde(with = "crate::wire::alarm_option")] Option<AlarmProperties>),
    /// Leased alarms (`lease_alarms`).
    Leased(#[serde(with = "crate::wire::leased")] Vec<LeasedAlarm>),
    /// Leases (`renew_alarm_leases`, `complete_alarms`).
    Leases(Vec<AlarmLease>),
}

fn unexpected(expected: &str, got: &Reply) -> StoreError {
    StoreError::Corrupt(format!(
        "the store answered {got:?} where {expected} was expected"
    ))
}

macro_rules! reply_accessors {
    ($($(#[$doc:meta])* $name:ident -> $ty:ty { $pat:pat => $value:expr }),* $(,)?) => {
        impl Reply {
            $(
                $(#[$doc])*
                pub fn $name(self) -> StoreResult<$ty> {
                    match self {
                        $pat => Ok($value),
                        other => Err(unexpected(stringify!($ty), &other)),
                    }
                }
            )*
        }
    };
}

reply_accessors! {
    /// [`Reply::Unit`].
    into_unit -> () { Reply::Unit => () },
    /// [`Reply::Bool`].
    into_bool -> bool { Reply::Bool(b) => b },
    /// [`Reply::Count`].
    into_count -> u64 { Reply::Count(n) => n },
    /// [`Reply::Hosts`].
    into_hosts -> Vec<HostRecord> { Reply::Hosts(h) => h },
    /// [`Reply::Placement`].
    into_placement -> Placement { Reply::Placement(p) => p },
    /// [`Reply::MaybePlacement`].
    into_maybe_placement -> Option<Placement> { Reply::MaybePlacement(p) => p },
    /// [`Reply::State`].
    into_state -> Option<StateRecord> { Reply::State(s) => s },
    /// [`Reply::Page`].
    into_page -> StateListPage { Reply::Page(p) => p },
    /// [`Reply::Alarm`].
    into_alarm -> Option<AlarmProperties> { Reply::Alarm(a) => a },
    /// [`Reply::Leased`].
    into_leased -> Vec<LeasedAlarm> { Reply::Leased(l) => l },
    /// [`Reply::Leases`].
    into_leases -> Vec<AlarmLease> { Reply::Leases(l) => l },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_told_apart() {
        let actor = ActorRef::new("t", "a").unwrap();
        let now = DateTime::from_timestamp_millis(0).unwrap();
        assert!(
            !Op::GetAlarm {
                actor: actor.clone(),
                name: "n".into()
            }
            .is_write()
        );
        assert!(Op::DeleteExpiredState { now }.is_write());
        assert_eq!(
            Op::DeleteState {
                actor,
                fence: Fence::Unfenced
            }
            .name(),
            "delete_state"
        );
    }

    #[test]
    fn a_reply_of_the_wrong_kind_is_an_error_not_a_panic() {
        assert!(Reply::Bool(true).into_bool().unwrap());
        let err = Reply::Unit.into_placement().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }
}
