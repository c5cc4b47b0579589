//! The alarm engine: leases due alarms from the store, fires each at its time on the actor's
//! turn, and records the outcome (delete, reschedule, retry, drop).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use francis_core::{Error, ErrorKind};
use francis_store::{AlarmLease, AlarmOutcome, LeaseRequest, LeasedAlarm};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use crate::events::HostEvent;
use crate::policy::{
    AlarmDecision, EARLY_LEASE_SPACING, alarm_outcome, lease_again_early, retry_delay,
};
use crate::runtime::Op;
use crate::service::HostInner;
use crate::service::HostService;

type InFlight = Arc<Mutex<HashSet<AlarmLease>>>;

/// Runs until `stop` fires; then releases the leases of alarms that have not started.
pub(crate) async fn run(inner: Arc<HostInner>, stop: CancellationToken) {
    let timings = inner.act.timings.clone();
    let mut poll = tokio::time::interval(timings.alarm_poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let in_flight: InFlight = Arc::default();
    let mut tasks = JoinSet::new();
    let mut last_renewal = Instant::now();
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
    // Set when the last lease came back full (more alarms are due): lease again at once
    // instead of waiting for the next tick, so a burst drains at the store's pace.
    let mut more_due = false;
    // Signalled by every alarm that finishes, so a host held back by backpressure resumes
    // as soon as there is room rather than a poll interval later.
    let finished = Arc::new(Notify::new());
    // Signalled when an alarm was rescheduled to before the next poll (it repeats faster than
    // the poll interval): lease again at once, so it fires at its own cadence.
    let rescheduled_soon = Arc::new(Notify::new());
    let mut last_lease = Instant::now();
    loop {
        if more_due {
            if stop.is_cancelled() {
                break;
            }
        } else {
            tokio::select! {
                // Stopping wins over a timer that is also ready.
                biased;
                _ = stop.cancelled() => break,
                _ = poll.tick() => {}
                _ = rescheduled_soon.notified() => {
                    // Early leases are spaced, so a very fast alarm does not lease per firing.
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep_until(last_lease + EARLY_LEASE_SPACING) => {}
                    }
                }
            }
        }
        more_due = false;
        while tasks.try_join_next().is_some() {}
        if last_renewal.elapsed() >= timings.alarm_lease / 3 {
            renew(&inner, &in_flight).await;
            last_renewal = Instant::now();
        }
        // Backpressure: do not lease more than a few batches ahead of what is running.
        let running = in_flight.lock().expect("in-flight lock").len();
        if running >= 4 * timings.alarm_batch_size as usize {
            tokio::select! {
                // Stopping wins over a timer that is also ready.
                biased;
                _ = stop.cancelled() => break,
                _ = poll.tick() => {}
                _ = finished.notified() => {}
            }
            more_due = true;
            continue;
        }
        last_lease = Instant::now();
        let now = inner.act.store.clock.now();
        let request = LeaseRequest {
            host_id: inner.act.host_id(),
            actor_types: types.clone(),
            horizon: now
                + chrono::Duration::from_std(timings.alarm_fetch_ahead).unwrap_or_default(),
            limit: timings.alarm_batch_size,
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
                continue;
            }
        };
        more_due = leased.len() >= timings.alarm_batch_size as usize;
        for alarm in leased {
            in_flight
                .lock()
                .expect("in-flight lock")
                .insert(alarm.lease.clone());
            tasks.spawn(fire(
                inner.clone(),
                alarm,
                in_flight.clone(),
                [finished.clone(), rescheduled_soon.clone()],
                stop.clone(),
            ));
        }
    }
    // Alarms waiting for their time give their leases back; running ones finish their turn.
    while tasks.join_next().await.is_some() {}
}

async fn renew(inner: &HostInner, in_flight: &InFlight) {
    let leases: Vec<AlarmLease> = in_flight
        .lock()
        .expect("in-flight lock")
        .iter()
        .cloned()
        .collect();
    if leases.is_empty() {
        return;
    }
    let store = &inner.act.store;
    match store
        .call(store.provider.renew_alarm_leases(
            &inner.act.host_id(),
            &leases,
            store.clock.now(),
            inner.act.timings.alarm_lease,
        ))
        .await
    {
        Ok(held) => {
            let held: HashSet<_> = held.into_iter().collect();
            let lost = leases.iter().filter(|l| !held.contains(*l)).count();
            if lost > 0 {
                debug!(host = %inner.act.address, lost, "alarm leases lost (alarms replaced or deleted)");
            }
        }
        Err(e) => warn!(host = %inner.act.address, "could not renew alarm leases: {e}"),
    }
}

/// Runs one leased alarm, then tells the engine it `finished` and, when the alarm was
/// rescheduled to before the engine's next poll, that it is `rescheduled_soon`.
async fn fire(
    inner: Arc<HostInner>,
    alarm: LeasedAlarm,
    in_flight: InFlight,
    [finished, rescheduled_soon]: [Arc<Notify>; 2],
    stop: CancellationToken,
) {
    let lease = alarm.lease.clone();
    let next_due = fire_inner(&inner, alarm, &stop).await;
    in_flight.lock().expect("in-flight lock").remove(&lease);
    finished.notify_one();
    if let Some(due) = next_due
        && lease_again_early(
            due,
            inner.act.store.clock.now(),
            inner.act.timings.alarm_poll_interval,
        )
    {
        rescheduled_soon.notify_one();
    }
}

/// Runs one leased alarm; answers when it is due again, if it was rescheduled.
async fn fire_inner(
    inner: &Arc<HostInner>,
    alarm: LeasedAlarm,
    stop: &CancellationToken,
) -> Option<DateTime<Utc>> {
    let store = &inner.act.store;
    let LeasedAlarm {
        lease,
        properties,
        attempts,
        ..
    } = alarm;
    let wait = (properties.due_time - store.clock.now())
        .to_std()
        .unwrap_or_default();
    tokio::select! {
        // Stopping wins over a timer that is also ready.
        biased;
        _ = stop.cancelled() => {
            let _ = store.call(store.provider.release_alarm(&lease)).await;
            return None;
        }
        _ = tokio::time::sleep(wait) => {}
    }
    // The alarm may have been replaced or deleted while we waited: check the lease is ours.
    let held = store
        .call(store.provider.renew_alarm_leases(
            &inner.act.host_id(),
            std::slice::from_ref(&lease),
            store.clock.now(),
            inner.act.timings.alarm_lease,
        ))
        .await;
    match held {
        Ok(held) if held.contains(&lease) => {}
        Ok(_) => {
            debug!(actor = %lease.actor, alarm = %lease.name, host = %inner.act.address,
                   "alarm was replaced or deleted before it fired");
            return None;
        }
        Err(e) => {
            warn!(actor = %lease.actor, alarm = %lease.name, host = %inner.act.address,
                  "could not confirm alarm lease, leaving it to expire: {e}");
            return None;
        }
    }
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
        && matches!(
            e.kind(),
            ErrorKind::ShuttingDown
                | ErrorKind::HostUnavailable
                | ErrorKind::ActorNotHosted
                | ErrorKind::Transport
                | ErrorKind::NoHost
                | ErrorKind::NoQuorum
        )
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
    match store
        .call(store.provider.complete_alarm(&lease, outcome))
        .await
    {
        Ok(true) => next_due,
        Ok(false) => {
            debug!(actor = %actor, alarm = %lease.name, host = %inner.act.address,
                   "alarm changed while it ran; keeping the new version");
            None
        }
        Err(e) => {
            warn!(actor = %actor, alarm = %lease.name, host = %inner.act.address,
                  "could not record alarm outcome (the lease will expire and it may fire again): {e}");
            None
        }
    }
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
