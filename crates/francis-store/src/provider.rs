//! The `Provider` trait: the single authority on hosts, placement, state and alarms.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use francis_core::{ActorRef, AlarmProperties};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Result of provider operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// An actor type a host serves, with its capacity on that host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorTypeSpec {
    /// The actor type.
    pub actor_type: String,
    /// At most this many actors of the type may be placed on the host at once (`None`: no limit).
    pub max_active: Option<u32>,
}

/// What a host tells the store when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRegistration {
    /// Fresh for every host process (and for every re-registration after self-fencing).
    pub host_id: String,
    /// The peer address other hosts use to reach it; unique among live hosts.
    pub address: String,
    /// The actor types it serves.
    pub actor_types: Vec<ActorTypeSpec>,
}

/// A registered host as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The host's id.
    pub host_id: String,
    /// Its peer address.
    pub address: String,
    /// The actor types it serves.
    pub actor_types: Vec<ActorTypeSpec>,
    /// When its last successful heartbeat (or registration) was written.
    pub last_heartbeat: DateTime<Utc>,
}

/// Where an actor is placed, and the epoch that fences its activation's writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The actor.
    pub actor: ActorRef,
    /// The owning host.
    pub host_id: String,
    /// The owning host's peer address.
    pub address: String,
    /// Strictly greater than the epoch of every earlier placement of any actor in this store.
    pub epoch: u64,
}

/// Why a claim for a candidate host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClaimRefusal {
    /// The candidate is not registered, or its heartbeat is older than the liveness window.
    CandidateNotLive,
    /// The candidate does not serve the actor's type.
    TypeNotServed,
    /// The candidate already has `max_active` actors of the type placed on it.
    AtCapacity,
}

impl std::fmt::Display for ClaimRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClaimRefusal::CandidateNotLive => "candidate host is not live",
            ClaimRefusal::TypeNotServed => "candidate host does not serve the actor type",
            ClaimRefusal::AtCapacity => "candidate host is at capacity for the actor type",
        })
    }
}

/// Which writes of an actor's state or alarms are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fence {
    /// Allowed only while the actor's current placement has exactly this epoch; otherwise the
    /// write is refused with [`StoreError::Fenced`] and changes nothing.
    Epoch(u64),
    /// Not fenced: an administrative write, or an alarm set from outside any activation.
    Unfenced,
}

/// A stored state document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The JSON document.
    pub data: Vec<u8>,
    /// When it expires, if it has a TTL.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One entry of a state listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateListItem {
    /// The actor id.
    pub actor_id: String,
    /// The document, when asked for.
    pub data: Option<Vec<u8>>,
}

/// A page of a state listing, in ascending actor id order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateListPage {
    /// The entries.
    pub items: Vec<StateListItem>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A request to lease due alarms for a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The leasing host.
    pub host_id: String,
    /// Only alarms of actors of these types.
    pub actor_types: Vec<String>,
    /// Only alarms due at or before this time (now + fetch-ahead).
    pub horizon: DateTime<Utc>,
    /// At most this many alarms.
    pub limit: u32,
    /// How long the leases last unless renewed.
    pub lease_duration: Duration,
    /// Chosen by the caller, unique per request; identifies the leases it grants.
    pub lease_id: String,
}

/// Identifies one granted alarm lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AlarmLease {
    /// The alarm's actor.
    pub actor: ActorRef,
    /// The alarm's name.
    pub name: String,
    /// The `lease_id` of the request that granted it.
    pub lease_id: String,
}

/// An alarm leased to a host.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedAlarm {
    /// The lease, to renew, complete or release it.
    pub lease: AlarmLease,
    /// The alarm as currently stored (its `due_time` is the occurrence to fire).
    pub properties: AlarmProperties,
    /// Failed attempts so far at this occurrence.
    pub attempts: u32,
    /// When the lease expires unless renewed.
    pub lease_expires_at: DateTime<Utc>,
}

/// What to do with a leased alarm after running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmOutcome {
    /// Delete it (a one-shot that ran, a repeating one past its TTL, or one that failed too often).
    Delete,
    /// Keep it, due again at `due`, with `attempts` failed attempts recorded (0 after success).
    Reschedule {
        /// Next due time.
        due: DateTime<Utc>,
        /// Failed attempts at that occurrence.
        attempts: u32,
    },
}

/// The store every consistent decision of the cluster goes through.
///
/// # Contract (every implementation must guarantee it; the `testing` suite checks it)
/// - **Atomicity**: each method is one atomic operation; concurrent calls from any number of
///   tasks, processes or hosts behave as if run one after another in some order.
/// - **Durability**: once a write returns `Ok`, it survives a crash or restart of the store
///   (up to the durability mode the implementation documents).
/// - **Time is an argument**: no method reads a clock; `now` and liveness windows are passed in,
///   so decisions are deterministic functions of the store's contents and the arguments.
/// - **Liveness**: a host is live while `now - last_heartbeat < ttl` for the `ttl` passed in.
/// - **Single placement**: [`Provider::claim`] never lets two placements of one actor exist on
///   live hosts; a placement on a dead host is replaced by a new one with a greater epoch.
/// - **Epochs** come from one store-wide counter and are never reused, so a placement row may be
///   deleted on release without a later placement reusing its epoch.
/// - **Fencing**: a write with [`Fence::Epoch`] succeeds only if the actor's current placement
///   exists and has that epoch; otherwise it returns [`StoreError::Fenced`] and changes nothing.
/// - **Alarm leases** are exclusive: an alarm is leased to at most one lease at a time until the
///   lease expires, is released, or completes; replacing or deleting an alarm ends its lease.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Registers a host. A dead host with the same address is removed first (with its
    /// placements); a live one makes this fail with [`StoreError::AddressInUse`].
    /// Registering an existing `host_id` again updates its record and heartbeat.
    async fn register_host(
        &self,
        registration: &HostRegistration,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<()>;

    /// Records a heartbeat; [`StoreError::HostNotFound`] if the host was removed.
    async fn heartbeat(&self, host_id: &str, now: DateTime<Utc>) -> StoreResult<()>;

    /// Removes a host, its placements and its alarm leases. Idempotent.
    async fn unregister_host(&self, host_id: &str) -> StoreResult<()>;

    /// The hosts whose heartbeat is younger than `ttl`, ordered by host id.
    async fn live_hosts(&self, now: DateTime<Utc>, ttl: Duration) -> StoreResult<Vec<HostRecord>>;

    /// Returns the actor's placement if it is on a live host; otherwise places it on
    /// `candidate` with a fresh epoch, provided the candidate is live, serves the type and is
    /// below its capacity ([`StoreError::ClaimRefused`] otherwise).
    async fn claim(
        &self,
        actor: &ActorRef,
        candidate: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Placement>;

    /// The actor's placement, only if its host is live.
    async fn lookup(
        &self,
        actor: &ActorRef,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Option<Placement>>;

    /// Removes the placement if it is still `(host_id, epoch)`; returns whether it did.
    async fn release(&self, actor: &ActorRef, host_id: &str, epoch: u64) -> StoreResult<bool>;

    /// How many actors of a type are placed on a host.
    async fn count_placements(&self, host_id: &str, actor_type: &str) -> StoreResult<u64>;

    /// The actor's state, unless absent or expired at `now`.
    async fn get_state(
        &self,
        actor: &ActorRef,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StateRecord>>;

    /// Creates or replaces the actor's state.
    async fn set_state(
        &self,
        actor: &ActorRef,
        data: &[u8],
        expires_at: Option<DateTime<Utc>>,
        fence: Fence,
    ) -> StoreResult<()>;

    /// Deletes the actor's state; returns whether there was one.
    async fn delete_state(&self, actor: &ActorRef, fence: Fence) -> StoreResult<bool>;

    /// Lists unexpired states of a type with ids strictly after `after`, at most `limit`.
    async fn list_states(
        &self,
        actor_type: &str,
        after: Option<&str>,
        limit: u32,
        include_data: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<StateListPage>;

    /// Deletes states that expired at or before `now`; returns how many.
    async fn delete_expired_state(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Creates or replaces a named alarm: the new version has no lease and no failed attempts.
    async fn set_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
        properties: &AlarmProperties,
        fence: Fence,
    ) -> StoreResult<()>;

    /// A named alarm.
    async fn get_alarm(&self, actor: &ActorRef, name: &str)
    -> StoreResult<Option<AlarmProperties>>;

    /// Deletes a named alarm; returns whether there was one.
    async fn delete_alarm(&self, actor: &ActorRef, name: &str, fence: Fence) -> StoreResult<bool>;

    /// Leases unleased (or lease-expired) alarms due by `request.horizon` for the given types,
    /// earliest due first, preferring actors placed on the requesting host.
    async fn lease_alarms(
        &self,
        request: &LeaseRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<LeasedAlarm>>;

    /// Extends the given leases held by `host_id`; returns those still held (and now extended).
    async fn renew_alarm_leases(
        &self,
        host_id: &str,
        leases: &[AlarmLease],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> StoreResult<Vec<AlarmLease>>;

    /// Applies the outcome of a run and ends the lease; `false` (and no change) if the lease is
    /// no longer held (the alarm was replaced, deleted, or re-leased after expiry).
    async fn complete_alarm(&self, lease: &AlarmLease, outcome: AlarmOutcome) -> StoreResult<bool>;

    /// Ends a lease without changing the alarm; `false` if it was no longer held.
    async fn release_alarm(&self, lease: &AlarmLease) -> StoreResult<bool>;
}
