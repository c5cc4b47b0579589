//! Provider operations as serializable commands, their results, and running them on a
//! node's own [`SqliteProvider`].
//!
//! Writes travel in the Raft log and are applied by every node; reads are run by the leader
//! after it confirmed its leadership. Every argument, `now` and caller-chosen ids included, is
//! in the command, so applying it is a deterministic function of the store and the command.

use std::time::Duration;

use chrono::{DateTime, Utc};
use francis_core::{ActorRef, AlarmProperties, Envelope, Interval};
use francis_store::{
    AlarmLease, AlarmOutcome, ClaimRefusal, Fence, HostRecord, HostRegistration, LeaseRequest,
    LeasedAlarm, Placement, Provider, SqliteProvider, StateListItem, StateListPage, StateRecord,
    StoreError,
};
use serde::{Deserialize, Serialize};

/// An alarm's properties in the log (exact: the interval in nanoseconds, the data as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireAlarm {
    due_time: DateTime<Utc>,
    interval: Option<Duration>,
    ttl: Option<DateTime<Utc>>,
    #[serde(with = "crate::json_bytes::option")]
    data: Option<Vec<u8>>,
}

impl From<&AlarmProperties> for WireAlarm {
    fn from(p: &AlarmProperties) -> Self {
        WireAlarm {
            due_time: p.due_time,
            interval: p.interval.map(Interval::as_duration),
            ttl: p.ttl,
            data: p.data.as_ref().map(|d| d.as_bytes().to_vec()),
        }
    }
}

impl WireAlarm {
    fn into_properties(self) -> Result<AlarmProperties, StoreError> {
        let interval = self
            .interval
            .map(Interval::new)
            .transpose()
            .map_err(|e| StoreError::InvalidArgument(format!("alarm interval: {e}")))?;
        let data = self
            .data
            .map(Envelope::from_json)
            .transpose()
            .map_err(|e| StoreError::InvalidArgument(format!("alarm data: {e}")))?;
        Ok(AlarmProperties {
            due_time: self.due_time,
            interval,
            ttl: self.ttl,
            data,
        })
    }
}

/// A leased alarm as a reply carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireLeased {
    lease: AlarmLease,
    properties: WireAlarm,
    attempts: u32,
    lease_expires_at: DateTime<Utc>,
}

/// One provider operation with all its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Op {
    /// [`Provider::register_host`].
    RegisterHost {
        /// The registration.
        registration: HostRegistration,
        /// The caller's time.
        now: DateTime<Utc>,
        /// The liveness window.
        ttl: Duration,
    },
    /// [`Provider::heartbeat`].
    Heartbeat {
        /// The host.
        host_id: String,
        /// The caller's time.
        now: DateTime<Utc>,
    },
    /// [`Provider::unregister_host`].
    UnregisterHost {
        /// The host.
        host_id: String,
    },
    /// [`Provider::claim`].
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
    /// [`Provider::release`].
    Release {
        /// The actor.
        actor: ActorRef,
        /// The owner.
        host_id: String,
        /// The placement's epoch.
        epoch: u64,
    },
    /// [`Provider::set_state`].
    SetState {
        /// The actor.
        actor: ActorRef,
        /// The document.
        #[serde(with = "crate::json_bytes")]
        data: Vec<u8>,
        /// Its expiry.
        expires_at: Option<DateTime<Utc>>,
        /// The fence.
        fence: Fence,
    },
    /// [`Provider::delete_state`].
    DeleteState {
        /// The actor.
        actor: ActorRef,
        /// The fence.
        fence: Fence,
    },
    /// [`Provider::delete_expired_state`].
    DeleteExpiredState {
        /// The caller's time.
        now: DateTime<Utc>,
    },
    /// [`Provider::set_alarm`].
    SetAlarm {
        /// The actor.
        actor: ActorRef,
        /// The alarm's name.
        name: String,
        /// Its properties.
        properties: WireAlarm,
        /// The fence.
        fence: Fence,
    },
    /// [`Provider::delete_alarm`].
    DeleteAlarm {
        /// The actor.
        actor: ActorRef,
        /// The alarm's name.
        name: String,
        /// The fence.
        fence: Fence,
    },
    /// [`Provider::lease_alarms`].
    LeaseAlarms {
        /// The request (its `lease_id` is chosen by the caller).
        request: LeaseRequest,
        /// The caller's time.
        now: DateTime<Utc>,
    },
    /// [`Provider::renew_alarm_leases`].
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
    /// [`Provider::complete_alarm`].
    CompleteAlarm {
        /// The lease.
        lease: AlarmLease,
        /// The outcome.
        outcome: AlarmOutcome,
    },
    /// [`Provider::release_alarm`].
    ReleaseAlarm {
        /// The lease.
        lease: AlarmLease,
    },
    /// [`Provider::live_hosts`] (a read).
    LiveHosts {
        /// The caller's time.
        now: DateTime<Utc>,
        /// The liveness window.
        ttl: Duration,
    },
    /// [`Provider::lookup`] (a read).
    Lookup {
        /// The actor.
        actor: ActorRef,
        /// The caller's time.
        now: DateTime<Utc>,
        /// The liveness window.
        ttl: Duration,
    },
    /// [`Provider::count_placements`] (a read).
    CountPlacements {
        /// The host.
        host_id: String,
        /// The type.
        actor_type: String,
    },
    /// [`Provider::get_state`] (a read).
    GetState {
        /// The actor.
        actor: ActorRef,
        /// The caller's time.
        now: DateTime<Utc>,
    },
    /// [`Provider::list_states`] (a read).
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
    /// [`Provider::get_alarm`] (a read).
    GetAlarm {
        /// The actor.
        actor: ActorRef,
        /// The alarm's name.
        name: String,
    },
}

impl Op {
    /// The length of the command's encoding in the log, without building it.
    pub(crate) fn encoded_len(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        // Writing to a counter cannot fail, and every command encodes.
        let _ = serde_json::to_writer(&mut count, self);
        count.0
    }

    /// Whether the operation changes the store (and so goes through the Raft log).
    pub(crate) fn is_write(&self) -> bool {
        !matches!(
            self,
            Op::LiveHosts { .. }
                | Op::Lookup { .. }
                | Op::CountPlacements { .. }
                | Op::GetState { .. }
                | Op::ListStates { .. }
                | Op::GetAlarm { .. }
        )
    }

    /// The set-alarm command.
    pub(crate) fn set_alarm(
        actor: &ActorRef,
        name: &str,
        properties: &AlarmProperties,
        fence: Fence,
    ) -> Op {
        Op::SetAlarm {
            actor: actor.clone(),
            name: name.to_string(),
            properties: properties.into(),
            fence,
        }
    }
}

/// A [`StateRecord`] as a reply carries it (the document embedded, see [`crate::json_bytes`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireState {
    #[serde(with = "crate::json_bytes")]
    data: Vec<u8>,
    expires_at: Option<DateTime<Utc>>,
}

impl From<StateRecord> for WireState {
    fn from(r: StateRecord) -> Self {
        WireState {
            data: r.data,
            expires_at: r.expires_at,
        }
    }
}

impl From<WireState> for StateRecord {
    fn from(w: WireState) -> Self {
        StateRecord {
            data: w.data,
            expires_at: w.expires_at,
        }
    }
}

/// A [`StateListPage`] as a reply carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WirePage {
    items: Vec<WireListItem>,
    next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireListItem {
    actor_id: String,
    #[serde(with = "crate::json_bytes::option")]
    data: Option<Vec<u8>>,
}

impl From<StateListPage> for WirePage {
    fn from(p: StateListPage) -> Self {
        WirePage {
            items: p
                .items
                .into_iter()
                .map(|i| WireListItem {
                    actor_id: i.actor_id,
                    data: i.data,
                })
                .collect(),
            next: p.next,
        }
    }
}

impl From<WirePage> for StateListPage {
    fn from(p: WirePage) -> Self {
        StateListPage {
            items: p
                .items
                .into_iter()
                .map(|i| StateListItem {
                    actor_id: i.actor_id,
                    data: i.data,
                })
                .collect(),
            next: p.next,
        }
    }
}

/// A successful result of an [`Op`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// No value.
    Unit,
    /// A yes/no answer.
    Bool(bool),
    /// A count.
    Count(u64),
    /// Hosts.
    Hosts(Vec<HostRecord>),
    /// A placement.
    Placement(Placement),
    /// Maybe a placement.
    MaybePlacement(Option<Placement>),
    /// Maybe a state document.
    State(Option<WireState>),
    /// A page of states.
    Page(WirePage),
    /// Maybe an alarm.
    Alarm(Option<WireAlarm>),
    /// Leased alarms.
    Leased(Vec<WireLeased>),
    /// Leases.
    Leases(Vec<AlarmLease>),
}

/// A [`StoreError`] as it travels in replies: the variants a caller acts on keep their data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum WireStoreError {
    /// [`StoreError::AddressInUse`].
    AddressInUse {
        /// The address.
        address: String,
        /// The live host holding it.
        host_id: String,
    },
    /// [`StoreError::HostNotFound`].
    HostNotFound(String),
    /// [`StoreError::ClaimRefused`].
    ClaimRefused {
        /// The actor.
        actor: ActorRef,
        /// The candidate.
        candidate: String,
        /// Why.
        reason: ClaimRefusal,
    },
    /// [`StoreError::Fenced`].
    Fenced {
        /// The actor.
        actor: ActorRef,
        /// The stale epoch.
        epoch: u64,
    },
    /// [`StoreError::NoQuorum`].
    NoQuorum {
        /// Unreachable peers.
        unreachable: Vec<String>,
    },
    /// [`StoreError::InvalidArgument`].
    InvalidArgument(String),
    /// [`StoreError::Corrupt`].
    Corrupt(String),
    /// Anything else ([`StoreError::Unavailable`] on the caller).
    Unavailable(String),
    /// The node asked is not the leader (it names the leader when it knows one).
    NotLeader {
        /// The leader's address.
        leader: Option<String>,
    },
}

impl From<&StoreError> for WireStoreError {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::AddressInUse { address, host_id } => WireStoreError::AddressInUse {
                address: address.clone(),
                host_id: host_id.clone(),
            },
            StoreError::HostNotFound(h) => WireStoreError::HostNotFound(h.clone()),
            StoreError::ClaimRefused {
                actor,
                candidate,
                reason,
            } => WireStoreError::ClaimRefused {
                actor: actor.clone(),
                candidate: candidate.clone(),
                reason: *reason,
            },
            StoreError::Fenced { actor, epoch } => WireStoreError::Fenced {
                actor: actor.clone(),
                epoch: *epoch,
            },
            StoreError::NoQuorum { unreachable } => WireStoreError::NoQuorum {
                unreachable: unreachable.clone(),
            },
            StoreError::InvalidArgument(m) => WireStoreError::InvalidArgument(m.clone()),
            StoreError::Corrupt(m) => WireStoreError::Corrupt(m.clone()),
            other => WireStoreError::Unavailable(other.to_string()),
        }
    }
}

impl From<WireStoreError> for StoreError {
    fn from(e: WireStoreError) -> Self {
        match e {
            WireStoreError::AddressInUse { address, host_id } => {
                StoreError::AddressInUse { address, host_id }
            }
            WireStoreError::HostNotFound(h) => StoreError::HostNotFound(h),
            WireStoreError::ClaimRefused {
                actor,
                candidate,
                reason,
            } => StoreError::ClaimRefused {
                actor,
                candidate,
                reason,
            },
            WireStoreError::Fenced { actor, epoch } => StoreError::Fenced { actor, epoch },
            WireStoreError::NoQuorum { unreachable } => StoreError::NoQuorum { unreachable },
            WireStoreError::InvalidArgument(m) => StoreError::InvalidArgument(m),
            WireStoreError::Corrupt(m) => StoreError::Corrupt(m),
            WireStoreError::Unavailable(m) => StoreError::Unavailable(m),
            WireStoreError::NotLeader { leader } => StoreError::Unavailable(match leader {
                Some(l) => format!("this node is not the leader; the leader is {l}"),
                None => "this node is not the leader and knows no leader".into(),
            }),
        }
    }
}

/// The result of an [`Op`] as the log and the wire carry it.
pub(crate) type Reply = Result<Outcome, WireStoreError>;

/// Whether an error is a deterministic answer of the store (the same on every node for the
/// same contents and command) rather than a failure of this node's database.
pub(crate) fn is_deterministic(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::AddressInUse { .. }
            | StoreError::HostNotFound(_)
            | StoreError::ClaimRefused { .. }
            | StoreError::Fenced { .. }
            | StoreError::InvalidArgument(_)
    )
}

/// Runs an operation on a node's own provider.
pub(crate) async fn execute(p: &SqliteProvider, op: Op) -> Result<Outcome, StoreError> {
    Ok(match op {
        Op::RegisterHost {
            registration,
            now,
            ttl,
        } => {
            p.register_host(&registration, now, ttl).await?;
            Outcome::Unit
        }
        Op::Heartbeat { host_id, now } => {
            p.heartbeat(&host_id, now).await?;
            Outcome::Unit
        }
        Op::UnregisterHost { host_id } => {
            p.unregister_host(&host_id).await?;
            Outcome::Unit
        }
        Op::Claim {
            actor,
            candidate,
            now,
            ttl,
        } => Outcome::Placement(p.claim(&actor, &candidate, now, ttl).await?),
        Op::Release {
            actor,
            host_id,
            epoch,
        } => Outcome::Bool(p.release(&actor, &host_id, epoch).await?),
        Op::SetState {
            actor,
            data,
            expires_at,
            fence,
        } => {
            p.set_state(&actor, &data, expires_at, fence).await?;
            Outcome::Unit
        }
        Op::DeleteState { actor, fence } => Outcome::Bool(p.delete_state(&actor, fence).await?),
        Op::DeleteExpiredState { now } => Outcome::Count(p.delete_expired_state(now).await?),
        Op::SetAlarm {
            actor,
            name,
            properties,
            fence,
        } => {
            let properties = properties.into_properties()?;
            p.set_alarm(&actor, &name, &properties, fence).await?;
            Outcome::Unit
        }
        Op::DeleteAlarm { actor, name, fence } => {
            Outcome::Bool(p.delete_alarm(&actor, &name, fence).await?)
        }
        Op::LeaseAlarms { request, now } => Outcome::Leased(
            p.lease_alarms(&request, now)
                .await?
                .into_iter()
                .map(|l| WireLeased {
                    properties: (&l.properties).into(),
                    lease: l.lease,
                    attempts: l.attempts,
                    lease_expires_at: l.lease_expires_at,
                })
                .collect(),
        ),
        Op::RenewAlarmLeases {
            host_id,
            leases,
            now,
            lease_duration,
        } => Outcome::Leases(
            p.renew_alarm_leases(&host_id, &leases, now, lease_duration)
                .await?,
        ),
        Op::CompleteAlarm { lease, outcome } => {
            Outcome::Bool(p.complete_alarm(&lease, outcome).await?)
        }
        Op::ReleaseAlarm { lease } => Outcome::Bool(p.release_alarm(&lease).await?),
        Op::LiveHosts { now, ttl } => Outcome::Hosts(p.live_hosts(now, ttl).await?),
        Op::Lookup { actor, now, ttl } => {
            Outcome::MaybePlacement(p.lookup(&actor, now, ttl).await?)
        }
        Op::CountPlacements {
            host_id,
            actor_type,
        } => Outcome::Count(p.count_placements(&host_id, &actor_type).await?),
        Op::GetState { actor, now } => {
            Outcome::State(p.get_state(&actor, now).await?.map(WireState::from))
        }
        Op::ListStates {
            actor_type,
            after,
            limit,
            include_data,
            now,
        } => Outcome::Page(
            p.list_states(&actor_type, after.as_deref(), limit, include_data, now)
                .await?
                .into(),
        ),
        Op::GetAlarm { actor, name } => Outcome::Alarm(
            p.get_alarm(&actor, &name)
                .await?
                .map(|a| WireAlarm::from(&a)),
        ),
    })
}

/// The leased alarms of an outcome.
pub(crate) fn leased_alarms(leased: Vec<WireLeased>) -> Result<Vec<LeasedAlarm>, StoreError> {
    leased
        .into_iter()
        .map(|l| {
            Ok(LeasedAlarm {
                lease: l.lease,
                properties: l.properties.into_properties()?,
                attempts: l.attempts,
                lease_expires_at: l.lease_expires_at,
            })
        })
        .collect()
}

/// An alarm of an outcome.
pub(crate) fn alarm(a: Option<WireAlarm>) -> Result<Option<AlarmProperties>, StoreError> {
    a.map(WireAlarm::into_properties).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn alarms_round_trip_exactly() {
        let p = AlarmProperties {
            due_time: t(5),
            interval: Some(Interval::new(Duration::from_nanos(1_500_000_123)).unwrap()),
            ttl: Some(t(99)),
            data: Some(Envelope::from_json(&b"{\"k\":[1,2]}"[..]).unwrap()),
        };
        let op = Op::set_alarm(
            &ActorRef::new("t", "a").unwrap(),
            "tick",
            &p,
            Fence::Epoch(3),
        );
        let json = serde_json::to_vec(&op).unwrap();
        let back: Op = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, op);
        let Op::SetAlarm { properties, .. } = back else {
            panic!("not a set_alarm")
        };
        assert_eq!(properties.into_properties().unwrap(), p);
    }

    #[test]
    fn errors_keep_their_variant() {
        let actor = ActorRef::new("t", "a").unwrap();
        for e in [
            StoreError::Fenced {
                actor: actor.clone(),
                epoch: 4,
            },
            StoreError::ClaimRefused {
                actor,
                candidate: "h".into(),
                reason: ClaimRefusal::AtCapacity,
            },
            StoreError::AddressInUse {
                address: "a".into(),
                host_id: "h".into(),
            },
            StoreError::HostNotFound("h".into()),
            StoreError::InvalidArgument("x".into()),
        ] {
            let wire = WireStoreError::from(&e);
            let json = serde_json::to_string(&wire).unwrap();
            let back: StoreError = serde_json::from_str::<WireStoreError>(&json)
                .unwrap()
                .into();
            assert_eq!(back.to_string(), e.to_string());
            assert!(is_deterministic(&back));
        }
        let unavailable: StoreError =
            WireStoreError::from(&StoreError::Unavailable("x".into())).into();
        assert!(!is_deterministic(&unavailable));
        assert!(
            !Op::GetAlarm {
                actor: ActorRef::new("t", "a").unwrap(),
                name: "n".into()
            }
            .is_write()
        );
        assert!(Op::DeleteExpiredState { now: t(0) }.is_write());
    }
}
