//! An in-memory [`Provider`] for tests of other layers (behind the `testing` feature).
//!
//! It keeps everything in one mutex and never touches a thread or a file, so tests on tokio's
//! paused clock stay deterministic (real I/O would let paused time jump ahead while waiting).
//! It passes the same conformance suite as the SQLite provider; nothing survives a drop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use francis_core::{ActorRef, AlarmProperties};

use crate::error::StoreError;
use crate::op::{Op, Reply};
use crate::policy::check_op;
use crate::policy::{CandidateView, add_millis, check_candidate, duration_millis, is_live, millis};
use crate::provider::{
    AlarmLease, AlarmOutcome, Fence, HostRecord, HostRegistration, LeaseRequest, LeasedAlarm,
    Placement, Provider, StateListItem, StateListPage, StateRecord, StoreResult,
};

/// A [`Provider`] held in memory; for tests only.
#[derive(Debug, Default)]
pub struct MemoryProvider {
    inner: Mutex<Mem>,
}

#[derive(Debug, Default)]
struct Mem {
    hosts: BTreeMap<String, HostRecord>,
    placements: HashMap<ActorRef, (String, u64)>,
    last_epoch: u64,
    states: BTreeMap<(String, String), (Vec<u8>, Option<i64>)>,
    alarms: BTreeMap<(ActorRef, String), MemAlarm>,
}

#[derive(Debug, Clone)]
struct MemAlarm {
    properties: AlarmProperties,
    attempts: u32,
    /// (lease id, host id, expires at ms)
    lease: Option<(String, String, i64)>,
}

impl MemoryProvider {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.lock().expect("memory provider lock")
    }
}

fn ms(t: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t).single().unwrap_or_default()
}

impl Mem {
    fn host_live(&self, host_id: &str, now: i64, ttl: i64) -> bool {
        self.hosts
            .get(host_id)
            .is_some_and(|h| is_live(millis(h.last_heartbeat), now, ttl))
    }

    fn placement(&self, actor: &ActorRef, host_id: &str, epoch: u64) -> Placement {
        Placement {
            actor: actor.clone(),
            host_id: host_id.to_owned(),
            address: self
                .hosts
                .get(host_id)
                .map(|h| h.address.clone())
                .unwrap_or_default(),
            epoch,
        }
    }

    fn check_fence(&self, actor: &ActorRef, fence: Fence) -> StoreResult<()> {
        match fence {
            Fence::Unfenced => Ok(()),
            Fence::Epoch(epoch) => match self.placements.get(actor) {
                Some((_, current)) if *current == epoch => Ok(()),
                _ => Err(StoreError::Fenced {
                    actor: actor.clone(),
                    epoch,
                }),
            },
        }
    }

    fn remove_host(&mut self, host_id: &str) {
        self.hosts.remove(host_id);
        self.placements.retain(|_, (h, _)| h != host_id);
        for alarm in self.alarms.values_mut() {
            if alarm.lease.as_ref().is_some_and(|(_, h, _)| h == host_id) {
                alarm.lease = None;
            }
        }
    }

    fn lease_held<'a>(&'a mut self, lease: &AlarmLease) -> Option<&'a mut MemAlarm> {
        self.alarms
            .get_mut(&(lease.actor.clone(), lease.name.clone()))
            .filter(|a| {
                a.lease
                    .as_ref()
                    .is_some_and(|(id, _, _)| *id == lease.lease_id)
            })
    }
}

/// The operations, each on the locked store.
impl Mem {
    /// Runs one operation. Every check comes before any change, so a refused operation
    /// changes nothing.
    fn run(&mut self, op: Op) -> StoreResult<Reply> {
        check_op(&op)?;
        Ok(match op {
            Op::RegisterHost {
                registration,
                now,
                ttl,
            } => {
                self.register_host(&registration, now, ttl)?;
                Reply::Unit
            }
            Op::Heartbeat { host_id, now } => {
                self.heartbeat(&host_id, now)?;
                Reply::Unit
            }
            Op::UnregisterHost { host_id } => {
                self.unregister_host(&host_id)?;
                Reply::Unit
            }
            Op::LiveHosts { now, ttl } => Reply::Hosts(self.live_hosts(now, ttl)?),
            Op::Claim {
                actor,
                candidate,
                now,
                ttl,
            } => Reply::Placement(self.claim(&actor, &candidate, now, ttl)?),
            Op::Lookup { actor, now, ttl } => Reply::MaybePlacement(self.lookup(&actor, now, ttl)?),
            Op::Release {
                actor,
                host_id,
                epoch,
            } => Reply::Bool(self.release(&actor, &host_id, epoch)?),
            Op::CountPlacements {
                host_id,
                actor_type,
            } => Reply::Count(self.count_placements(&host_id, &actor_type)?),
            Op::GetState { actor, now } => Reply::State(self.get_state(&actor, now)?),
            Op::SetState {
                actor,
                data,
                expires_at,
                fence,
            } => {
                self.set_state(&actor, &data, expires_at, fence)?;
                Reply::Unit
            }
            Op::DeleteState { actor, fence } => Reply::Bool(self.delete_state(&actor, fence)?),
            Op::ListStates {
                actor_type,
                after,
                limit,
                include_data,
                now,
            } => Reply::Page(self.list_states(
                &actor_type,
                after.as_deref(),
                limit,
                include_data,
                now,
            )?),
            Op::DeleteExpiredState { now } => Reply::Count(self.delete_expired_state(now)?),
            Op::SetAlarm {
                actor,
                name,
                properties,
                fence,
            } => {
                self.set_alarm(&actor, &name, &properties, fence)?;
                Reply::Unit
            }
            Op::GetAlarm { actor, name } => Reply::Alarm(self.get_alarm(&actor, &name)?),
            Op::DeleteAlarm { actor, name, fence } => {
                Reply::Bool(self.delete_alarm(&actor, &name, fence)?)
            }
            Op::LeaseAlarms { request, now } => Reply::Leased(self.lease_alarms(&request, now)?),
            Op::RenewAlarmLeases {
                host_id,
                leases,
                now,
                lease_duration,
            } => Reply::Leases(self.renew_alarm_leases(&host_id, &leases, now, lease_duration)?),
            Op::HeldAlarmLeases {
                host_id,
                leases,
                now,
            } => Reply::Leases(self.held_alarm_leases(&host_id, &leases, now)),
            Op::CompleteAlarm { lease, outcome } => {
                Reply::Bool(self.complete_alarm(&lease, outcome)?)
            }
            Op::ReleaseAlarm { lease } => Reply::Bool(self.release_alarm(&lease)?),
            Op::CompleteAlarms { completions } => {
                let mut done = Vec::with_capacity(completions.len());
                for c in completions {
                    if self.complete_alarm(&c.lease, c.outcome)? {
                        done.push(c.lease);
                    }
                }
                Reply::Leases(done)
            }
        })
    }

    fn register_host(
        &mut self,
        registration: &HostRegistration,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<()> {
        let m = self;
        let (now, ttl) = (millis(now), duration_millis(ttl));
        let same_address: Vec<HostRecord> = m
            .hosts
            .values()
            .filter(|h| h.address == registration.address && h.host_id != registration.host_id)
            .cloned()
            .collect();
        if let Some(live) = same_address
            .iter()
            .find(|h| is_live(millis(h.last_heartbeat), now, ttl))
        {
            return Err(StoreError::AddressInUse {
                address: registration.address.clone(),
                host_id: live.host_id.clone(),
            });
        }
        for dead in same_address {
            m.remove_host(&dead.host_id);
        }
        m.hosts.insert(
            registration.host_id.clone(),
            HostRecord {
                host_id: registration.host_id.clone(),
                address: registration.address.clone(),
                actor_types: registration.actor_types.clone(),
                last_heartbeat: ms(now),
            },
        );
        Ok(())
    }

    fn heartbeat(&mut self, host_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let m = self;
        let host = m
            .hosts
            .get_mut(host_id)
            .ok_or_else(|| StoreError::HostNotFound(host_id.to_owned()))?;
        host.last_heartbeat = now;
        Ok(())
    }

    fn unregister_host(&mut self, host_id: &str) -> StoreResult<()> {
        self.remove_host(host_id);
        Ok(())
    }

    fn live_hosts(&mut self, now: DateTime<Utc>, ttl: Duration) -> StoreResult<Vec<HostRecord>> {
        let m = self;
        let (now, ttl) = (millis(now), duration_millis(ttl));
        Ok(m.hosts
            .values()
            .filter(|h| is_live(millis(h.last_heartbeat), now, ttl))
            .cloned()
            .collect())
    }

    fn claim(
        &mut self,
        actor: &ActorRef,
        candidate: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Placement> {
        let m = self;
        let (now, ttl) = (millis(now), duration_millis(ttl));
        if let Some((host, epoch)) = m.placements.get(actor).cloned()
            && m.host_live(&host, now, ttl)
        {
            return Ok(m.placement(actor, &host, epoch));
        }
        let host = m.hosts.get(candidate);
        let view = CandidateView {
            live: m.host_live(candidate, now, ttl),
            capacity: host.and_then(|h| {
                h.actor_types
                    .iter()
                    .find(|t| t.actor_type == actor.actor_type())
                    .map(|t| t.max_active)
            }),
            placed: m
                .placements
                .iter()
                .filter(|(a, (h, _))| h == candidate && a.actor_type() == actor.actor_type())
                .count() as u64,
        };
        check_candidate(view).map_err(|reason| StoreError::ClaimRefused {
            actor: actor.clone(),
            candidate: candidate.to_owned(),
            reason,
        })?;
        m.last_epoch += 1;
        let epoch = m.last_epoch;
        m.placements
            .insert(actor.clone(), (candidate.to_owned(), epoch));
        Ok(m.placement(actor, candidate, epoch))
    }

    fn lookup(
        &mut self,
        actor: &ActorRef,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Option<Placement>> {
        let m = self;
        let (now, ttl) = (millis(now), duration_millis(ttl));
        Ok(m.placements
            .get(actor)
            .filter(|(host, _)| m.host_live(host, now, ttl))
            .map(|(host, epoch)| m.placement(actor, host, *epoch)))
    }

    fn release(&mut self, actor: &ActorRef, host_id: &str, epoch: u64) -> StoreResult<bool> {
        let m = self;
        let matches = m
            .placements
            .get(actor)
            .is_some_and(|(h, e)| h == host_id && *e == epoch);
        if matches {
            m.placements.remove(actor);
        }
        Ok(matches)
    }

    fn count_placements(&mut self, host_id: &str, actor_type: &str) -> StoreResult<u64> {
        let m = self;
        Ok(m.placements
            .iter()
            .filter(|(a, (h, _))| h == host_id && a.actor_type() == actor_type)
            .count() as u64)
    }

    fn get_state(
        &mut self,
        actor: &ActorRef,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StateRecord>> {
        let m = self;
        let key = (actor.actor_type().to_owned(), actor.actor_id().to_owned());
        Ok(m.states
            .get(&key)
            .filter(|(_, exp)| exp.is_none_or(|e| e > millis(now)))
            .map(|(data, exp)| StateRecord {
                data: data.clone(),
                expires_at: exp.map(ms),
            }))
    }

    fn set_state(
        &mut self,
        actor: &ActorRef,
        data: &[u8],
        expires_at: Option<DateTime<Utc>>,
        fence: Fence,
    ) -> StoreResult<()> {
        let m = self;
        m.check_fence(actor, fence)?;
        let key = (actor.actor_type().to_owned(), actor.actor_id().to_owned());
        m.states
            .insert(key, (data.to_vec(), expires_at.map(millis)));
        Ok(())
    }

    fn delete_state(&mut self, actor: &ActorRef, fence: Fence) -> StoreResult<bool> {
        let m = self;
        m.check_fence(actor, fence)?;
        let key = (actor.actor_type().to_owned(), actor.actor_id().to_owned());
        Ok(m.states.remove(&key).is_some())
    }

    fn list_states(
        &mut self,
        actor_type: &str,
        after: Option<&str>,
        limit: u32,
        include_data: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<StateListPage> {
        let m = self;
        let now = millis(now);
        let mut items: Vec<StateListItem> = m
            .states
            .range((actor_type.to_owned(), after.unwrap_or("").to_owned())..)
            .take_while(|((t, _), _)| t == actor_type)
            .filter(|((_, id), _)| after.is_none_or(|a| id.as_str() > a))
            .filter(|(_, (_, exp))| exp.is_none_or(|e| e > now))
            .take(limit as usize + 1)
            .map(|((_, id), (data, _))| StateListItem {
                actor_id: id.clone(),
                data: include_data.then(|| data.clone()),
            })
            .collect();
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|i| i.actor_id.clone())
        } else {
            None
        };
        Ok(StateListPage { items, next })
    }

    fn delete_expired_state(&mut self, now: DateTime<Utc>) -> StoreResult<u64> {
        let m = self;
        let now = millis(now);
        let before = m.states.len();
        m.states.retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
        Ok((before - m.states.len()) as u64)
    }

    fn set_alarm(
        &mut self,
        actor: &ActorRef,
        name: &str,
        properties: &AlarmProperties,
        fence: Fence,
    ) -> StoreResult<()> {
        let m = self;
        m.check_fence(actor, fence)?;
        m.alarms.insert(
            (actor.clone(), name.to_owned()),
            MemAlarm {
                properties: properties.clone(),
                attempts: 0,
                lease: None,
            },
        );
        Ok(())
    }

    fn get_alarm(&mut self, actor: &ActorRef, name: &str) -> StoreResult<Option<AlarmProperties>> {
        let m = self;
        Ok(m.alarms
            .get(&(actor.clone(), name.to_owned()))
            .map(|a| a.properties.clone()))
    }

    fn delete_alarm(&mut self, actor: &ActorRef, name: &str, fence: Fence) -> StoreResult<bool> {
        let m = self;
        m.check_fence(actor, fence)?;
        Ok(m.alarms.remove(&(actor.clone(), name.to_owned())).is_some())
    }

    fn lease_alarms(
        &mut self,
        request: &LeaseRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<LeasedAlarm>> {
        let m = self;
        let now = millis(now);
        let horizon = millis(request.horizon);
        let mut candidates: Vec<(bool, i64, (ActorRef, String))> = m
            .alarms
            .iter()
            .filter(|((actor, _), a)| {
                request.actor_types.iter().any(|t| t == actor.actor_type())
                    && millis(a.properties.due_time) <= horizon
                    && a.lease.as_ref().is_none_or(|(_, _, exp)| *exp <= now)
            })
            .map(|(key, a)| {
                let elsewhere = m
                    .placements
                    .get(&key.0)
                    .is_none_or(|(h, _)| *h != request.host_id);
                (elsewhere, millis(a.properties.due_time), key.clone())
            })
            .collect();
        // The earliest candidates (by due time, then key), then those of actors placed here.
        candidates.sort_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
        candidates.truncate(crate::policy::lease_candidates(request.limit) as usize);
        candidates.sort();
        candidates.truncate(request.limit as usize);
        let expires = add_millis(now, request.lease_duration);
        let mut granted = Vec::with_capacity(candidates.len());
        for (_, _, key) in candidates {
            let alarm = m.alarms.get_mut(&key).expect("candidate exists");
            alarm.lease = Some((request.lease_id.clone(), request.host_id.clone(), expires));
            granted.push(LeasedAlarm {
                lease: AlarmLease {
                    actor: key.0.clone(),
                    name: key.1.clone(),
                    lease_id: request.lease_id.clone(),
                },
                properties: alarm.properties.clone(),
                attempts: alarm.attempts,
                lease_expires_at: ms(expires),
            });
        }
        Ok(granted)
    }

    fn renew_alarm_leases(
        &mut self,
        host_id: &str,
        leases: &[AlarmLease],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> StoreResult<Vec<AlarmLease>> {
        let m = self;
        let now = millis(now);
        let expires = add_millis(now, lease_duration);
        let mut held = Vec::new();
        for lease in leases {
            if let Some(alarm) = m.lease_held(lease) {
                let (_, holder, exp) = alarm.lease.as_mut().expect("held lease");
                if holder == host_id && *exp > now {
                    *exp = expires;
                    held.push(lease.clone());
                }
            }
        }
        Ok(held)
    }

    fn held_alarm_leases(
        &mut self,
        host_id: &str,
        leases: &[AlarmLease],
        now: DateTime<Utc>,
    ) -> Vec<AlarmLease> {
        let now = millis(now);
        leases
            .iter()
            .filter(|lease| {
                self.lease_held(lease).is_some_and(|alarm| {
                    alarm
                        .lease
                        .as_ref()
                        .is_some_and(|(_, holder, exp)| holder == host_id && *exp > now)
                })
            })
            .cloned()
            .collect()
    }

    fn complete_alarm(&mut self, lease: &AlarmLease, outcome: AlarmOutcome) -> StoreResult<bool> {
        let m = self;
        let Some(alarm) = m.lease_held(lease) else {
            return Ok(false);
        };
        match outcome {
            AlarmOutcome::Delete => {
                m.alarms.remove(&(lease.actor.clone(), lease.name.clone()));
            }
            AlarmOutcome::Reschedule { due, attempts } => {
                alarm.properties.due_time = due;
                alarm.attempts = attempts;
                alarm.lease = None;
            }
        }
        Ok(true)
    }

    fn release_alarm(&mut self, lease: &AlarmLease) -> StoreResult<bool> {
        let m = self;
        match m.lease_held(lease) {
            Some(alarm) => {
                alarm.lease = None;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    async fn execute_batch(&self, ops: Vec<Op>) -> Vec<StoreResult<Reply>> {
        // One lock for the whole batch: it runs as one atomic step.
        let mut m = self.lock();
        ops.into_iter().map(|op| m.run(op)).collect()
    }
}
