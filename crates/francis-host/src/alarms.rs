//! The alarm engine: leases due alarms from the store in batches that grow with the backlog,
//! re-checks the leases of every alarm that came due in one store read, fires each on the
//! actor's turn, and records the outcome (delete, reschedule, retry, drop).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use francis_core::Error;
use francis_store::{AlarmCompletion, AlarmLease, AlarmOutcome, LeaseRequest, LeasedAlarm};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use crate::events::HostEvent;
use crate::policy::{
    ALARM_IN_FLIGHT_BATCHES, ALARM_LEASE_BATCHES, ALARM_RUNNING_BATCHES, AlarmDecision,
    EARLY_LEASE_SPACING, alarm_lease_needs_renewal, alarm_outcome, alarm_outcome_retry_delay,
    alarm_run_handed_back, alarm_start_margin, lease_again_early, next_lease_limit, retry_delay,
};
use crate::runtime::Op;
use crate::service::HostInner;
use crate::service::HostService;

/// What the engine's loop and its firing tasks share.
struct Engine {
    inner: Arc<HostInner>,
    /// Every lease this host holds (alarms waiting for their time, running, or recording
    /// their outcome), with when it expires in the store as far as this host knows. Counted
    /// against the in-flight cap; those near expiry are renewed together.
    held: Mutex<HashMap<AlarmLease, DateTime<Utc>>>,
    /// Signalled by every alarm that is done, so an engine held back by the in-flight cap
    /// resumes as soon as there is room rather than a poll interval later.
    finished: Notify,
    /// Signalled when an alarm was rescheduled to before the next poll (it repeats faster than
    /// the poll interval): lease again at once, so it fires at its own cadence.
    rescheduled_soon: Notify,
    /// Bounds the alarms running at once (their turns, and the calls and store work those
    /// start), whatever the number held. Only the engine's loop takes permits, before it
    /// confirms the leases of the alarms it starts, so an alarm never waits for a permit
    /// after its lease was checked.
    running: Arc<Semaphore>,
}

impl Engine {
    fn held(&self) -> usize {
        self.held.lock().expect("held leases lock").len()
    }

    /// The store renewed `leases` for a lease duration from `now`.
    fn extended(&self, leases: &[AlarmLease], now: DateTime<Utc>) {
        let expires = chrono::Duration::from_std(self.inner.act.timings.alarm_lease)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut held = self.held.lock().expect("held leases lock");
        for lease in leases {
            if let Some(at) = held.get_mut(lease) {
                *at = expires;
            }
        }
    }

    /// An alarm is done with its lease; `next_due` is when it is due again, if it was
    /// rescheduled.
    fn done(&self, lease: &AlarmLease, next_due: Option<DateTime<Utc>>) {
        self.held.lock().expect("held leases lock").remove(lease);
        self.finished.notify_one();
        if let Some(due) = next_due
            && lease_again_early(
                due,
                self.inner.act.store.clock.now(),
                self.inner.act.timings.alarm_poll_interval,
            )
        {
            self.rescheduled_soon.notify_one();
        }
    }
}

/// Leased alarms waiting for their due time, earliest first.
#[derive(Default)]
struct Waiting {
    by_due: BTreeMap<(DateTime<Utc>, u64), LeasedAlarm>,
    seq: u64,
}

impl Waiting {
    fn push(&mut self, alarm: LeasedAlarm) {
        self.seq += 1;
        self.by_due
            .insert((alarm.properties.due_time, self.seq), alarm);
    }

    fn next_due(&self) -> Option<DateTime<Utc>> {
        self.by_due.keys().next().map(|(due, _)| *due)
    }

    /// Removes and returns the earliest alarm due at or before `now` (within a millisecond:
    /// the timer that woke the engine counts in milliseconds, and waking again for the rest
    /// would only spin).
    fn pop_due(&mut self, now: DateTime<Utc>) -> Option<LeasedAlarm> {
        let first = self.by_due.first_entry()?;
        (first.key().0 <= now + chrono::Duration::milliseconds(1)).then(|| first.remove())
    }

    fn take_all(&mut self) -> Vec<LeasedAlarm> {
        std::mem::take(&mut self.by_due).into_values().collect()
    }
}

/// Why the engine's loop woke up.
enum Wake {
    /// An alarm it holds came due.
    Due,
    /// The poll ticked, an alarm finished while it was held back, or an alarm was rescheduled
    /// to before the next poll: lease.
    Lease,
}

/// Runs until `stop` fires; then releases the leases of alarms that have not started.
pub(crate) async fn run(inner: Arc<HostInner>, stop: CancellationToken) {
    let timings = inner.act.timings.clone();
    let types: Vec<String> = inner
        .act
        .types
        .read()
        .expect("types lock")
        .keys()
        .cloned()
        .collect();
    if types.is_empty() {
        return;
    }
    let engine = Arc::new(Engine {
        inner,
        held: Mutex::default(),
        finished: Notify::new(),
        rescheduled_soon: Notify::new(),
        running: Arc::new(Semaphore::new(
            (timings.alarm_batch_size as usize).saturating_mul(ALARM_RUNNING_BATCHES as usize),
        )),
    });
    let inner = &engine.inner;
    let clock = inner.act.store.clock.clone();
    let batch = timings.alarm_batch_size;
    let cap = batch.saturating_mul(ALARM_IN_FLIGHT_BATCHES);
    let max_lease = batch.saturating_mul(ALARM_LEASE_BATCHES);
    // Outcomes are recorded by one task, in batches: whatever finished while the last batch
    // was being written goes in the next.
    let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record_outcomes(engine.clone(), outcomes_rx));
    let mut poll = tokio::time::interval(timings.alarm_poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting = Waiting::default();
    let mut tasks = JoinSet::new();
    let mut last_renewal = Instant::now();
    let mut last_lease = Instant::now();
    // The last lease's size, and whether it came back full (more alarms are due): then lease
    // again at once, and more, instead of waiting for the next tick.
    let mut limit = batch;
    let mut full = false;
    // Set when the in-flight cap stopped a lease: lease again when an alarm is done.
    let mut held_back = false;
    loop {
        let wake = if full && !held_back {
            Wake::Lease
        } else {
            // With every running slot taken, an alarm that came due waits for one to free up
            // (an alarm finishing signals `finished`), not for its timer.
            let no_slot = engine.running.available_permits() == 0;
            let wake_at = waiting
                .next_due()
                .filter(|_| !no_slot)
                .map(|due| Instant::now() + (due - clock.now()).to_std().unwrap_or_default());
            tokio::select! {
                // Stopping wins over a timer that is also ready.
                biased;
                _ = stop.cancelled() => break,
                _ = sleep_until(wake_at) => Wake::Due,
                _ = poll.tick() => Wake::Lease,
                _ = engine.finished.notified(), if held_back || no_slot => {
                    if held_back { Wake::Lease } else { Wake::Due }
                }
                _ = engine.rescheduled_soon.notified() => {
                    // Early leases are spaced, so a very fast alarm does not lease per firing.
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep_until(last_lease + EARLY_LEASE_SPACING) => {}
                    }
                    Wake::Lease
                }
            }
        };
        if stop.is_cancelled() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        // Each alarm that came due takes a running slot before its lease is confirmed, so it
        // never waits after its check; the rest wait in the queue for a slot.
        let now = clock.now();
        let mut due = Vec::new();
        while let Ok(slot) = engine.running.clone().try_acquire_owned() {
            match waiting.pop_due(now) {
                Some(alarm) => due.push((alarm, slot)),
                None => break,
            }
        }
        if !due.is_empty() {
            fire_due(&engine, due, &mut tasks, &outcomes).await;
        }
        if last_renewal.elapsed() >= timings.alarm_lease / 3 {
            renew(&engine).await;
            last_renewal = Instant::now();
        }
        if matches!(wake, Wake::Due) && !full {
            continue;
        }
        // Backpressure: hold at most `cap` alarms at once.
        let room = u32::try_from(cap as usize - engine.held().min(cap as usize)).unwrap_or(0);
        held_back = room == 0;
        if held_back {
            continue;
        }
        limit = next_lease_limit(limit, full, batch, room.min(max_lease));
        last_lease = Instant::now();
        let now = clock.now();
        let request = LeaseRequest {
            host_id: inner.act.host_id(),
            actor_types: types.clone(),
            horizon: now
                + chrono::Duration::from_std(timings.alarm_fetch_ahead).unwrap_or_default(),
            limit,
            lease_duration: timings.alarm_lease,
            lease_id: uuid::Uuid::new_v4().to_string(),
        };
        let leased = match inner
            .act
            .store
            .call(inner.act.store.provider.lease_alarms(&request, now))
            .await
        {
            Ok(leased) => leased,
            Err(e) => {
                warn!(host = %inner.act.address, "could not lease alarms: {e}");
                full = false;
                continue;
            }
        };
        full = leased.len() >= limit as usize;
        let mut held = engine.held.lock().expect("held leases lock");
        for alarm in leased {
            held.insert(alarm.lease.clone(), alarm.lease_expires_at);
            let slot = (alarm.properties.due_time <= now)
                .then(|| engine.running.clone().try_acquire_owned().ok())
                .flatten();
            match slot {
                // Leased when already due, and it can start now: the lease is as fresh as a
                // re-check would make it.
                Some(slot) => {
                    tasks.spawn(fire(engine.clone(), alarm, slot, outcomes.clone()));
                }
                None => waiting.push(alarm),
            }
        }
    }
    // Alarms waiting for their time give their leases back; running ones finish their turn.
    for alarm in waiting.take_all() {
        let engine = engine.clone();
        tasks.spawn(async move {
            let store = &engine.inner.act.store;
            let _ = store.call(store.provider.release_alarm(&alarm.lease)).await;
            engine.done(&alarm.lease, None);
        });
    }
    while tasks.join_next().await.is_some() {}
    // Every firing task is done: the recorder writes what is left and ends.
    drop(outcomes);
    let _ = recorder.await;
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Fires the alarms that came due, each with its running slot: their leases are re-checked
/// first (an alarm replaced or deleted while it waited is no longer leased to us and never
/// fires). Leases with at least [`alarm_start_margin`] left are checked by one store read
/// that also requires that margin; the others (the renewal fell behind) are renewed instead,
/// in one write, so no alarm starts on a lease about to expire.
async fn fire_due(
    engine: &Arc<Engine>,
    due: Vec<(LeasedAlarm, OwnedSemaphorePermit)>,
    tasks: &mut JoinSet<()>,
    outcomes: &Outcomes,
) {
    let inner = &engine.inner;
    let store = &inner.act.store;
    let lease = inner.act.timings.alarm_lease;
    let margin = chrono::Duration::from_std(alarm_start_margin(lease)).unwrap_or_default();
    let now = store.clock.now();
    let (fresh, stale): (Vec<AlarmLease>, Vec<AlarmLease>) = {
        let held = engine.held.lock().expect("held leases lock");
        due.iter()
            .map(|(a, _)| a.lease.clone())
            // A second of slack for the store's expiry, kept in whole milliseconds.
            .partition(|l| {
                held.get(l)
                    .is_some_and(|expires| *expires - now >= margin + chrono::Duration::seconds(1))
            })
    };
    let host_id = inner.act.host_id();
    let mut confirmed = HashSet::new();
    if !fresh.is_empty() {
        // A read, off the store's write path: the leases need no extending here.
        match store
            .call(
                store
                    .provider
                    .held_alarm_leases(&host_id, &fresh, now + margin),
            )
            .await
        {
            Ok(held) => confirmed.extend(held),
            Err(e) => warn!(host = %inner.act.address, alarms = fresh.len(),
                            "could not check alarm leases, leaving them to expire: {e}"),
        }
    }
    if !stale.is_empty() {
        match store
            .call(
                store
                    .provider
                    .renew_alarm_leases(&host_id, &stale, now, lease),
            )
            .await
        {
            Ok(renewed) => {
                engine.extended(&renewed, now);
                confirmed.extend(renewed);
            }
            Err(e) => warn!(host = %inner.act.address, alarms = stale.len(),
                            "could not renew alarm leases, leaving them to expire: {e}"),
        }
    }
    for (alarm, slot) in due {
        if confirmed.contains(&alarm.lease) {
            tasks.spawn(fire(engine.clone(), alarm, slot, outcomes.clone()));
        } else {
            debug!(actor = %alarm.lease.actor, alarm = %alarm.lease.name, host = %inner.act.address,
                   "alarm was replaced or deleted before it fired, or its lease could not be confirmed");
            drop(slot);
            engine.done(&alarm.lease, None);
        }
    }
}

/// Renews the leases that are near expiry (see [`alarm_lease_needs_renewal`]) in one store
/// call; a lease taken or renewed recently is left alone, so a large burst leased ahead of
/// its due time is not renewed wholesale just as it comes due.
async fn renew(engine: &Engine) {
    let inner = &engine.inner;
    let store = &inner.act.store;
    let lease = inner.act.timings.alarm_lease;
    let now = store.clock.now();
    let leases: Vec<AlarmLease> = engine
        .held
        .lock()
        .expect("held leases lock")
        .iter()
        .filter(|(_, expires)| alarm_lease_needs_renewal(**expires, now, lease))
        .map(|(l, _)| l.clone())
        .collect();
    if leases.is_empty() {
        return;
    }
    match store
        .call(
            store
                .provider
                .renew_alarm_leases(&inner.act.host_id(), &leases, now, lease),
        )
        .await
    {
        Ok(held) => {
            engine.extended(&held, now);
            let held: HashSet<_> = held.into_iter().collect();
            let lost = leases.iter().filter(|l| !held.contains(*l)).count();
            if lost > 0 {
                debug!(host = %inner.act.address, lost, "alarm leases lost (alarms replaced or deleted)");
            }
        }
        Err(e) => warn!(host = %inner.act.address, "could not renew alarm leases: {e}"),
    }
}

/// An alarm that ran, with what to record.
struct Ran {
    completion: AlarmCompletion,
    /// When it is due again, if it was rescheduled.
    next_due: Option<DateTime<Utc>>,
}

type Outcomes = mpsc::UnboundedSender<Ran>;

/// The most outcomes recorded in one store operation.
const MAX_OUTCOMES_PER_WRITE: usize = 512;

/// Runs one due alarm whose lease is current, then hands its outcome to the recorder (or,
/// when it did not run, tells the engine it is done).
async fn fire(
    engine: Arc<Engine>,
    alarm: LeasedAlarm,
    slot: OwnedSemaphorePermit,
    outcomes: Outcomes,
) {
    let lease = alarm.lease.clone();
    let ran = fire_inner(&engine.inner, alarm).await;
    drop(slot);
    match ran {
        Some(ran) => {
            if let Err(mpsc::error::SendError(ran)) = outcomes.send(ran) {
                // Cannot happen while the engine runs (it outlives every firing task).
                engine.done(&ran.completion.lease, None);
            }
        }
        None => engine.done(&lease, None),
    }
}

/// Records the outcomes of alarms that ran, in batches, until every sender is gone.
async fn record_outcomes(engine: Arc<Engine>, mut rx: mpsc::UnboundedReceiver<Ran>) {
    let inner = &engine.inner;
    let store = &inner.act.store;
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_OUTCOMES_PER_WRITE).await > 0 {
        let completions: Vec<AlarmCompletion> =
            batch.iter().map(|ran| ran.completion.clone()).collect();
        let mut attempt = 0;
        let written = loop {
            let written = store
                .call(store.provider.complete_alarms(&completions))
                .await;
            attempt += 1;
            match (&written, alarm_outcome_retry_delay(attempt)) {
                (Err(e), Some(delay)) if e.is_retryable() => {
                    debug!(host = %inner.act.address, alarms = batch.len(), attempt,
                           "could not record alarm outcomes, trying again: {e}");
                    tokio::time::sleep(delay).await;
                }
                _ => break written,
            }
        };
        match written {
            Ok(recorded) => {
                let recorded: HashSet<AlarmLease> = recorded.into_iter().collect();
                for ran in batch.drain(..) {
                    let lease = &ran.completion.lease;
                    if recorded.contains(lease) {
                        engine.done(lease, ran.next_due);
                    } else {
                        debug!(actor = %lease.actor, alarm = %lease.name, host = %inner.act.address,
                               "alarm changed while it ran; keeping the new version");
                        engine.done(lease, None);
                    }
                }
            }
            Err(e) => {
                warn!(host = %inner.act.address, alarms = batch.len(),
                      "could not record alarm outcomes (their leases will expire and they may fire again): {e}");
                for ran in batch.drain(..) {
                    engine.done(&ran.completion.lease, None);
                }
            }
        }
    }
}

/// Runs one confirmed alarm; answers its outcome to record, or nothing when it did not run
/// (its lease was given back).
async fn fire_inner(inner: &Arc<HostInner>, alarm: LeasedAlarm) -> Option<Ran> {
    let store = &inner.act.store;
    let LeasedAlarm {
        lease,
        properties,
        attempts,
        ..
    } = alarm;
    let actor = lease.actor.clone();
    let ty = match inner.act.type_entry(actor.actor_type()) {
        Ok(ty) => ty,
        Err(_) => {
            let _ = store.call(store.provider.release_alarm(&lease)).await;
            return None;
        }
    };
    let span = tracing::info_span!(
        "francis.alarm",
        actor_type = actor.actor_type(),
        actor_id = actor.actor_id(),
        alarm = %lease.name,
        host = %inner.act.address,
        late_ms = (store.clock.now() - properties.due_time).num_milliseconds().max(0),
        outcome = tracing::field::Empty,
    );
    // The alarm runs on the actor's owner (here, or forwarded), through its turn lock.
    let result = HostService::new(inner.clone())
        .route_op(
            &actor,
            Op::Alarm {
                name: lease.name.clone(),
                data: properties.data.clone(),
            },
            // Unique per lease: a resend of this run is recognised by the owner, while a later
            // run (another lease, or the alarm set again for the same time) is not mistaken
            // for it.
            format!(
                "alarm-{}-{}-{}",
                lease.lease_id,
                properties.due_time.timestamp_millis(),
                lease.name
            ),
        )
        .instrument(span.clone())
        .await;
    span.record("outcome", crate::runtime::outcome_code(&result));
    if let Err(e) = &result
        && alarm_run_handed_back(e.kind())
    {
        // Not the actor's failure: hand the alarm back for another attempt or host.
        let _ = store.call(store.provider.release_alarm(&lease)).await;
        return None;
    }
    let succeeded = result.is_ok();
    let now = store.clock.now();
    let options = &ty.options;
    let delay = retry_delay(
        attempts + 1,
        options.initial_retry_delay,
        inner.act.timings.alarm_retry_cap,
        rand::random::<f64>(),
    );
    let (outcome, decision) = alarm_outcome(
        &properties,
        attempts,
        succeeded,
        options.max_attempts,
        now,
        delay,
    );
    log_decision(inner, &lease, decision, attempts, result.err());
    inner.act.emit(HostEvent::AlarmFired {
        actor: actor.clone(),
        name: lease.name.clone(),
        succeeded,
    });
    let next_due = match &outcome {
        AlarmOutcome::Reschedule { due, .. } => Some(*due),
        _ => None,
    };
    Some(Ran {
        completion: AlarmCompletion { lease, outcome },
        next_due,
    })
}

fn log_decision(
    inner: &HostInner,
    lease: &AlarmLease,
    decision: AlarmDecision,
    attempts: u32,
    error: Option<Error>,
) {
    let (ty, id, name, host) = (
        lease.actor.actor_type(),
        lease.actor.actor_id(),
        lease.name.as_str(),
        inner.act.address.as_str(),
    );
    match (decision, error) {
        (AlarmDecision::Finished | AlarmDecision::Repeats, _) => {
            info!(
                actor_type = ty,
                actor_id = id,
                alarm = name,
                host,
                "alarm fired"
            )
        }
        (AlarmDecision::Retry, e) => warn!(
            actor_type = ty,
            actor_id = id,
            alarm = name,
            host,
            attempt = attempts + 1,
            "alarm failed, will retry: {}",
            e.map(|e| e.to_string()).unwrap_or_default()
        ),
        (AlarmDecision::GiveUp, e) => error!(
            actor_type = ty,
            actor_id = id,
            alarm = name,
            host,
            attempts = attempts + 1,
            "alarm failed on its last attempt and was dropped: {}",
            e.map(|e| e.to_string()).unwrap_or_default()
        ),
    }
}
