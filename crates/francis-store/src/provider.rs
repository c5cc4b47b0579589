//! The `Provider` trait: the single authority on hosts, placement, state and alarms.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use francis_core::{ActorRef, AlarmProperties};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::op::{Op, Reply};

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

/// One alarm's outcome, for [`Provider::complete_alarms`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmCompletion {
    /// The lease the alarm ran under.
    pub lease: AlarmLease,
    /// What to do with the alarm.
    pub outcome: AlarmOutcome,
}

/// The store every consistent decision of the cluster goes through.
///
/// A backend implements one method, [`Provider::execute_batch`]; the typed methods (`claim`,
/// `set_state`...) are provided: each builds its [`Op`], runs it with [`Provider::execute`]
/// and returns its [`Reply`] as the type it promises. Backends must not override them.
///
/// # Contract (every implementation must guarantee it; the `testing` suite checks it)
/// - **Atomicity**: each operation is atomic; concurrent calls from any number of tasks,
///   processes or hosts behave as if run one after another in some order.
/// - **Batches**: [`Provider::execute_batch`] runs its operations in order, each seeing the
///   effects of those before it, and commits them together (one transaction, one flush): an
///   operation that is refused (fenced, a refused claim, bad input) is undone alone and does
///   not affect the others; if the batch cannot be committed, every write in it fails with
///   the same retryable error and none is applied. (The replicated provider does not commit a
///   batch as a whole yet: each of its operations is atomic on its own.)
/// - **Durability**: once a write returns `Ok`, it survives a crash or restart of the store
///   (up to the durability mode the implementation documents).
/// - **Time is an argument**: no operation reads a clock; `now` and liveness windows are
///   passed in, so decisions are deterministic functions of the store's contents and the
///   arguments.
/// - **Liveness**: a host is live while `now - last_heartbeat < ttl` for the `ttl` passed in.
/// - **Single placement**: [`Provider::claim`] never lets two placements of one actor exist on
///   live hosts; a placement on a dead host is replaced by a new one with a greater epoch.
/// - **Epochs** come from one store-wide counter and are never reused, so a placement row may be
///   deleted on release without a later placement reusing its epoch.
/// - **Fencing**: a write with [`Fence::Epoch`] succeeds only if the actor's current placement
///   exists and has that epoch; otherwise it returns [`StoreError::Fenced`] and changes nothing.
/// - **Alarm leases** are exclusive: an alarm is leased to at most one lease at a time until the
///   lease expires, is released, or completes; replacing or deleting an alarm ends its lease.
/// - **Input**: every backend refuses the same bad input ([`crate::policy`]'s checks: an empty
///   host id, an actor type listed twice, a zero page size...) with
///   [`StoreError::InvalidArgument`], changing nothing.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Runs `ops` in order as one batch (see the contract) and returns one result per
    /// operation, in the same order.
    async fn execute_batch(&self, ops: Vec<Op>) -> Vec<StoreResult<Reply>>;

    /// Runs one operation (a batch of one unless the backend has a faster way).
    async fn execute(&self, op: Op) -> StoreResult<Reply> {
        self.execute_batch(vec![op])
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("the store answered no result".into())))
    }

    /// Registers a host. A dead host with the same address is removed first (with its
    /// placements); a live one makes this fail with [`StoreError::AddressInUse`].
    /// Registering an existing `host_id` again updates its record and heartbeat.
    async fn register_host(
        &self,
        registration: &HostRegistration,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<()> {
        self.execute(Op::RegisterHost {
            registration: registration.clone(),
            now,
            ttl,
        })
        .await?
        .into_unit()
    }

    /// Records a heartbeat; [`StoreError::HostNotFound`] if the host was removed.
    async fn heartbeat(&self, host_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.execute(Op::Heartbeat {
            host_id: host_id.to_owned(),
            now,
        })
        .await?
        .into_unit()
    }

    /// Removes a host, its placements and its alarm leases. Idempotent.
    async fn unregister_host(&self, host_id: &str) -> StoreResult<()> {
        self.execute(Op::UnregisterHost {
            host_id: host_id.to_owned(),
        })
        .await?
        .into_unit()
    }

    /// The hosts whose heartbeat is younger than `ttl`, ordered by host id.
    async fn live_hosts(&self, now: DateTime<Utc>, ttl: Duration) -> StoreResult<Vec<HostRecord>> {
        self.execute(Op::LiveHosts { now, ttl }).await?.into_hosts()
    }

    /// Returns the actor's placement if it is on a live host; otherwise places it on
    /// `candidate` with a fresh epoch, provided the candidate is live, serves the type and is
    /// below its capacity ([`StoreError::ClaimRefused`] otherwise).
    async fn claim(
        &self,
        actor: &ActorRef,
        candidate: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Placement> {
        self.execute(Op::Claim {
            actor: actor.clone(),
            candidate: candidate.to_owned(),
            now,
            ttl,
        })
        .await?
        .into_placement()
    }

    /// The actor's placement, only if its host is live.
    async fn lookup(
        &self,
        actor: &ActorRef,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Option<Placement>> {
        self.execute(Op::Lookup {
            actor: actor.clone(),
            now,
            ttl,
        })
        .await?
        .into_maybe_placement()
    }

    /// Removes the placement if it is still `(host_id, epoch)`; returns whether it did.
    async fn release(&self, actor: &ActorRef, host_id: &str, epoch: u64) -> StoreResult<bool> {
        self.execute(Op::Release {
            actor: actor.clone(),
            host_id: host_id.to_owned(),
            epoch,
        })
        .await?
        .into_bool()
    }

    /// How many actors of a type are placed on a host.
    async fn count_placements(&self, host_id: &str, actor_type: &str) -> StoreResult<u64> {
        self.execute(Op::CountPlacements {
            host_id: host_id.to_owned(),
            actor_type: actor_type.to_owned(),
        })
        .await?
        .into_count()
    }

    /// The actor's state, unless absent or expired at `now`.
    async fn get_state(
        &self,
        actor: &ActorRef,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StateRecord>> {
        self.execute(Op::GetState {
            actor: actor.clone(),
            now,
        })
        .await?
        .into_state()
    }

    /// Creates or replaces the actor's state.
    async fn set_state(
        &self,
        actor: &ActorRef,
        data: &[u8],
        expires_at: Option<DateTime<Utc>>,
        fence: Fence,
    ) -> StoreResult<()> {
        self.execute(Op::SetState {
            actor: actor.clone(),
            data: data.to_vec(),
            expires_at,
            fence,
        })
        .await?
        .into_unit()
    }

    /// Deletes the actor's state; returns whether there was one.
    async fn delete_state(&self, actor: &ActorRef, fence: Fence) -> StoreResult<bool> {
        self.execute(Op::DeleteState {
            actor: actor.clone(),
            fence,
        })
        .await?
        .into_bool()
    }

    /// Lists unexpired states of a type with ids strictly after `after`, at most `limit`.
    async fn list_states(
        &self,
        actor_type: &str,
        after: Option<&str>,
        limit: u32,
        include_data: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<StateListPage> {
        self.execute(Op::ListStates {
            actor_type: actor_type.to_owned(),
            after: after.map(str::to_owned),
            limit,
            include_data,
            now,
        })
        .await?
        .into_page()
    }

    /// Deletes states that expired at or before `now`; returns how many.
    async fn delete_expired_state(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.execute(Op::DeleteExpiredState { now })
            .await?
            .into_count()
    }

    /// Creates or replaces a named alarm: the new version has no lease and no failed attempts.
    async fn set_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
        properties: &AlarmProperties,
        fence: Fence,
    ) -> StoreResult<()> {
        self.execute(Op::SetAlarm {
            actor: actor.clone(),
            name: name.to_owned(),
            properties: properties.clone(),
            fence,
        })
        .await?
        .into_unit()
    }

    /// A named alarm.
    async fn get_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
    ) -> StoreResult<Option<AlarmProperties>> {
        self.execute(Op::GetAlarm {
            actor: actor.clone(),
            name: name.to_owned(),
        })
        .await?
        .into_alarm()
    }

    /// Deletes a named alarm; returns whether there was one.
    async fn delete_alarm(&self, actor: &ActorRef, name: &str, fence: Fence) -> StoreResult<bool> {
        self.execute(Op::DeleteAlarm {
            actor: actor.clone(),
            name: name.to_owned(),
            fence,
        })
        .await?
        .into_bool()
    }

    /// Leases unleased (or lease-expired) alarms due by `request.horizon` for the given types:
    /// of the earliest [`policy::lease_candidates`]`(limit)` of them (by due time, then actor
    /// and name), those of actors placed on the requesting host first, then the rest, each
    /// part earliest due first.
    ///
    /// [`policy::lease_candidates`]: crate::policy::lease_candidates
    async fn lease_alarms(
        &self,
        request: &LeaseRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<LeasedAlarm>> {
        self.execute(Op::LeaseAlarms {
            request: request.clone(),
            now,
        })
        .await?
        .into_leased()
    }

    /// Extends the given leases held by `host_id`; returns those still held (and now extended).
    async fn renew_alarm_leases(
        &self,
        host_id: &str,
        leases: &[AlarmLease],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> StoreResult<Vec<AlarmLease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        self.execute(Op::RenewAlarmLeases {
            host_id: host_id.to_owned(),
            leases: leases.to_vec(),
            now,
            lease_duration,
        })
        .await?
        .into_leases()
    }

    /// Which of `leases` `host_id` still holds at `now` (neither the alarm was replaced or
    /// deleted, nor the lease expired). A read: it changes nothing and extends nothing, so a
    /// backend serves it off its write path (a replicated store as a linearizable read).
    async fn held_alarm_leases(
        &self,
        host_id: &str,
        leases: &[AlarmLease],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<AlarmLease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        self.execute(Op::HeldAlarmLeases {
            host_id: host_id.to_owned(),
            leases: leases.to_vec(),
            now,
        })
        .await?
        .into_leases()
    }

    /// Applies the outcome of a run and ends the lease; `false` (and no change) if the lease is
    /// no longer held (the alarm was replaced, deleted, or re-leased after expiry).
    async fn complete_alarm(&self, lease: &AlarmLease, outcome: AlarmOutcome) -> StoreResult<bool> {
        self.execute(Op::CompleteAlarm {
            lease: lease.clone(),
            outcome,
        })
        .await?
        .into_bool()
    }

    /// Applies the outcomes of many runs in one operation, each as [`Provider::complete_alarm`]
    /// applies one; answers the leases whose outcome was recorded, in the order given (the
    /// others were no longer held, and nothing changed for them). A lease listed twice is
    /// refused with [`StoreError::InvalidArgument`] and nothing changes.
    async fn complete_alarms(
        &self,
        completions: &[AlarmCompletion],
    ) -> StoreResult<Vec<AlarmLease>> {
        self.execute(Op::CompleteAlarms {
            completions: completions.to_vec(),
        })
        .await?
        .into_leases()
    }

    /// Ends a lease without changing the alarm; `false` if it was no longer held.
    async fn release_alarm(&self, lease: &AlarmLease) -> StoreResult<bool> {
        self.execute(Op::ReleaseAlarm {
            lease: lease.clone(),
        })
        .await?
        .into_bool()
    }
}
