//! Durable alarms: timing, repetition, replacement, retries, and restarts.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use francis_core::{ActorService, AlarmProperties, ErrorKind, Interval};
use francis_host::HostEvent;
use francis_store::MemoryProvider;
use support::*;

fn fired(h: &TestHost) -> Vec<(String, Option<String>, Duration)> {
    h.probe.alarms.lock().unwrap().clone()
}

fn alarm_in(secs: u64) -> AlarmProperties {
    AlarmProperties::once(Utc::now() + chrono::Duration::seconds(secs as i64))
}

fn is_fired(e: &HostEvent) -> bool {
    matches!(e, HostEvent::AlarmFired { .. })
}

/// Runs virtual time forward by `d`, letting every task react.
async fn run_for(d: Duration) {
    let end = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < end {
        tokio::time::advance(Duration::from_millis(100)).await;
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_alarm_fires_once_at_its_time_and_is_deleted() {
    let mut h = memory_host(options()).await;
    let svc = h.service();
    let set_at = h.probe.start.elapsed();
    let mut props = alarm_in(5);
    props.data = Some(json(serde_json::json!({"Hello": "World"})));
    svc.set_alarm(&actor("a"), "wake", props.clone())
        .await
        .unwrap();
    assert_eq!(svc.get_alarm(&actor("a"), "wake").await.unwrap(), props);
    h.event(Duration::from_secs(30), is_fired).await;
    let log = fired(&h);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].0, "wake");
    assert_eq!(log[0].1.as_deref(), Some(r#"{"Hello":"World"}"#));
    let when = log[0].2 - set_at;
    assert!(
        when >= Duration::from_secs(4) && when <= Duration::from_secs(6),
        "{when:?}"
    );
    run_for(Duration::from_secs(60)).await;
    assert_eq!(fired(&h).len(), 1);
    let err = svc.get_alarm(&actor("a"), "wake").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlarmNotFound);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_repeating_alarm_keeps_its_cadence_until_its_ttl() {
    let mut h = memory_host(options()).await;
    let svc = h.service();
    let start = Utc::now();
    let props = AlarmProperties {
        due_time: start + chrono::Duration::seconds(1),
        interval: Some(Interval::new(Duration::from_secs(10)).unwrap()),
        ttl: Some(start + chrono::Duration::seconds(35)),
        data: None,
    };
    svc.set_alarm(&actor("a"), "tick", props).await.unwrap();
    for _ in 0..4 {
        h.event(Duration::from_secs(30), is_fired).await;
    }
    run_for(Duration::from_secs(40)).await;
    let times: Vec<u64> = fired(&h).iter().map(|(_, _, t)| t.as_secs()).collect();
    assert_eq!(times.len(), 4, "{times:?}");
    for (i, t) in times.iter().enumerate() {
        let expected = 1 + 10 * i as u64;
        assert!(
            *t >= expected && *t <= expected + 1,
            "firing {i} at {t}s: {times:?}"
        );
    }
    assert_eq!(
        svc.get_alarm(&actor("a"), "tick").await.unwrap_err().kind(),
        ErrorKind::AlarmNotFound
    );
    assert_eq!(h.probe.violations.load(Ordering::SeqCst), 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_alarm_repeating_faster_than_the_poll_keeps_its_own_cadence() {
    // Every second, with the host's default 1.5 s alarm poll.
    let mut h = memory_host(options()).await;
    let svc = h.service();
    let set_at = h.probe.start.elapsed();
    let props = AlarmProperties::every(Duration::from_secs(1)).unwrap();
    svc.set_alarm(&actor("a"), "fast", props).await.unwrap();
    for _ in 0..8 {
        h.event(Duration::from_secs(30), is_fired).await;
    }
    let times: Vec<Duration> = fired(&h).iter().map(|(_, _, t)| *t - set_at).collect();
    // The first firing comes at the first poll that sees it (up to one poll interval late);
    // from then on the alarm keeps its own one-second cadence.
    assert!(times[0] <= Duration::from_millis(1600), "{times:?}");
    let gaps: Vec<Duration> = times[1..].windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .all(|g| *g >= Duration::from_millis(900) && *g <= Duration::from_millis(1100)),
        "firings {times:?}, gaps {gaps:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_millisecond_alarm_is_held_to_the_early_lease_spacing() {
    // Leasing again early for every firing of a 1 ms alarm would be a store write per
    // millisecond; early leases are spaced instead, so it fires about once per spacing.
    let h = memory_host(options()).await;
    let svc = h.service();
    let props = AlarmProperties::every(Duration::from_millis(1)).unwrap();
    svc.set_alarm(&actor("a"), "fastest", props).await.unwrap();
    // Paused time jumps to each next timer, so every firing the engine wants happens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fired = fired(&h).len();
    // The documented spacing, 20 ms: about 150 firings; at least half that, so a much wider
    // spacing fails too.
    let (least, most) = (3000 / 20 / 2, 3000 / 20 + 5);
    assert!(
        (least..=most).contains(&fired),
        "{fired} firings in 3 s (between {least} and {most})"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn replacing_an_alarm_abandons_the_old_version() {
    let mut h = memory_host(options()).await;
    let svc = h.service();
    let mut first = alarm_in(2);
    first.data = Some(json(serde_json::json!("old")));
    svc.set_alarm(&actor("a"), "x", first).await.unwrap();
    // let the engine lease the old version (due within the fetch-ahead window)
    run_for(Duration::from_millis(500)).await;
    let mut second = alarm_in(8);
    second.data = Some(json(serde_json::json!("new")));
    svc.set_alarm(&actor("a"), "x", second).await.unwrap();
    h.event(Duration::from_secs(30), is_fired).await;
    run_for(Duration::from_secs(30)).await;
    let log = fired(&h);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].1.as_deref(), Some(r#""new""#));
    assert!(log[0].2 >= Duration::from_secs(7), "{log:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_alarm_never_fires() {
    let h = memory_host(options()).await;
    let svc = h.service();
    svc.set_alarm(&actor("a"), "x", alarm_in(2)).await.unwrap();
    run_for(Duration::from_millis(500)).await;
    svc.delete_alarm(&actor("a"), "x").await.unwrap();
    run_for(Duration::from_secs(30)).await;
    assert!(fired(&h).is_empty());
    let err = svc.delete_alarm(&actor("a"), "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlarmNotFound);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_alarm_is_retried_with_backoff_then_dropped() {
    let mut h = memory_host(options()).await; // max 3 attempts, 2 s initial delay
    h.probe.fail_alarms.store(usize::MAX, Ordering::SeqCst);
    let svc = h.service();
    svc.set_alarm(&actor("a"), "x", alarm_in(1)).await.unwrap();
    for _ in 0..3 {
        h.event(Duration::from_secs(60), is_fired).await;
    }
    run_for(Duration::from_secs(120)).await;
    let times: Vec<Duration> = fired(&h).iter().map(|(_, _, t)| *t).collect();
    assert_eq!(times.len(), 3, "{times:?}");
    // retry 1 after 1-2 s (2 s with equal jitter), retry 2 after 2-4 s; plus polling slack
    let gap1 = times[1] - times[0];
    let gap2 = times[2] - times[1];
    assert!(
        gap1 >= Duration::from_secs(1) && gap1 <= Duration::from_secs(4),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_secs(2) && gap2 <= Duration::from_secs(6),
        "{gap2:?}"
    );
    assert_eq!(
        svc.get_alarm(&actor("a"), "x").await.unwrap_err().kind(),
        ErrorKind::AlarmNotFound
    );
    h.stop().await;
}

/// An alarm handler that fails with an error of a kind the engine hands back when the cluster
/// fails (here `Overloaded`, as passing on a refused call's error would) still counts its
/// attempts and is dropped after the last, rather than being handed back forever.
#[tokio::test(start_paused = true)]
async fn an_alarm_handler_failing_with_a_cluster_error_still_counts_attempts() {
    let mut h = memory_host(options()).await; // max 3 attempts
    h.probe.fail_alarms.store(usize::MAX, Ordering::SeqCst);
    h.probe
        .fail_alarms_as_overloaded
        .store(true, Ordering::SeqCst);
    let svc = h.service();
    svc.set_alarm(&actor("a"), "x", alarm_in(1)).await.unwrap();
    for _ in 0..3 {
        h.event(Duration::from_secs(60), is_fired).await;
    }
    run_for(Duration::from_secs(120)).await;
    assert_eq!(fired(&h).len(), 3, "three attempts, then dropped");
    assert_eq!(
        svc.get_alarm(&actor("a"), "x").await.unwrap_err().kind(),
        ErrorKind::AlarmNotFound
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_alarm_that_succeeds_on_retry_is_done() {
    let mut h = memory_host(options()).await;
    h.probe.fail_alarms.store(1, Ordering::SeqCst);
    let svc = h.service();
    svc.set_alarm(&actor("a"), "x", alarm_in(1)).await.unwrap();
    h.event(Duration::from_secs(60), is_fired).await;
    h.event(Duration::from_secs(60), is_fired).await;
    run_for(Duration::from_secs(60)).await;
    assert_eq!(fired(&h).len(), 2);
    assert!(svc.get_alarm(&actor("a"), "x").await.is_err());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn alarm_arguments_are_checked() {
    let h = memory_host(options()).await;
    let svc = h.service();
    let mut bad = alarm_in(10);
    bad.ttl = Some(Utc::now());
    assert_eq!(
        svc.set_alarm(&actor("a"), "x", bad)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        svc.set_alarm(&actor("a"), "a/b", alarm_in(1))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidReference
    );
    let unknown = francis_core::ActorRef::new("nobody-serves-this", "a").unwrap();
    assert_eq!(
        svc.set_alarm(&unknown, "x", alarm_in(1))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::ActorTypeUnsupported
    );
    h.stop().await;
}

/// Real time and a real SQLite file: an alarm set on one host process fires on the next one
/// that opens the same file, even though it came due while no host was running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_that_came_due_while_down_fires_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.db");
    let fast = |b: francis_host::LocalHostBuilder| {
        b.with_timings(|t| {
            t.alarm_poll_interval = Duration::from_millis(50);
            t.alarm_fetch_ahead = Duration::from_millis(50);
        })
    };
    let open = |path: std::path::PathBuf| async move {
        Arc::new(
            francis_store_sqlite::SqliteProvider::open(
                &path,
                francis_store_sqlite::SqliteOptions::default(),
            )
            .await
            .unwrap(),
        )
    };
    let h1 = start_with(open(path.clone()).await, options(), fast).await;
    let svc = h1.service();
    assert_eq!(increment(&svc, "a").await, 1);
    svc.set_alarm(
        &actor("a"),
        "later",
        AlarmProperties::once(Utc::now() + chrono::Duration::milliseconds(300)),
    )
    .await
    .unwrap();
    h1.stop().await;
    // Wait (polling the wall clock) until the alarm is overdue while no host runs.
    let due = std::time::Instant::now() + Duration::from_millis(400);
    while std::time::Instant::now() < due {
        tokio::task::yield_now().await;
    }
    let mut h2 = start_with(open(path.clone()).await, options(), fast).await;
    h2.event(Duration::from_secs(10), is_fired).await;
    assert_eq!(fired(&h2).len(), 1);
    // state survived the restart too
    assert_eq!(increment(&h2.service(), "a").await, 2);
    h2.stop().await;
}

/// An outcome write that fails with an error a retry can help is written again at once (a
/// few times), so a brief store outage does not leave a one-shot alarm to fire again when its
/// lease expires.
#[tokio::test(start_paused = true)]
async fn a_failed_outcome_write_is_retried_so_the_alarm_fires_once() {
    let store = Arc::new(StallingProvider::new(MemoryProvider::new()));
    store.fail_alarm_outcomes.store(2, Ordering::SeqCst);
    let h = start(store.clone(), options()).await;
    let svc = h.service();
    svc.set_alarm(&actor("a"), "x", alarm_in(1)).await.unwrap();
    // Well within the 20 s lease: recorded by a retry, not by the lease running out.
    run_for(Duration::from_secs(8)).await;
    assert_eq!(fired(&h).len(), 1);
    assert_eq!(
        svc.get_alarm(&actor("a"), "x").await.unwrap_err().kind(),
        ErrorKind::AlarmNotFound
    );
    assert_eq!(
        store.count("complete_alarms"),
        3,
        "two failures, then written"
    );
    run_for(Duration::from_secs(60)).await;
    assert_eq!(fired(&h).len(), 1, "fired once");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_due_alarms_drains_at_once_in_batched_store_operations() {
    // 300 alarms due together, default timings (poll 1.5 s, batch 25): one batch per poll
    // would need 18 s. Leasing again at once after a full batch, and as soon as a running
    // alarm makes room, fires them all within a poll interval of their due time.
    let store = Arc::new(StallingProvider::new(MemoryProvider::new()));
    let h = start(store.clone(), options()).await;
    let svc = h.service();
    let due = alarm_in(2);
    for i in 0..300 {
        svc.set_alarm(
            &actor(&format!("burst{}", i % 30)),
            &format!("n{}", i / 30),
            due.clone(),
        )
        .await
        .unwrap();
    }
    let drained = tokio::time::timeout(Duration::from_secs(4), async {
        while fired(&h).len() < 300 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "only {} of 300 alarms fired within 4 s",
        fired(&h).len()
    );
    assert_eq!(h.probe.violations.load(Ordering::SeqCst), 0);
    h.stop().await;
    // The store work is batched: leases grow (25, 50, 100...) instead of 12 of 25, the
    // leases of alarms that came due are confirmed together, and outcomes are recorded
    // together, not one write per alarm.
    let (leases, checks, outcomes) = (
        store.count("lease_alarms"),
        store.count("held_alarm_leases"),
        store.count("complete_alarms"),
    );
    assert!(leases <= 8, "{leases} leases for 300 alarms");
    assert!(checks <= 3, "{checks} lease checks for 300 alarms");
    assert!(
        checks >= 1,
        "the alarms leased ahead were checked before they fired"
    );
    // Fresh leases are checked by a read and left alone by the renewal.
    assert_eq!(store.count("renew_alarm_leases"), 0);
    assert!(outcomes <= 30, "{outcomes} outcome writes for 300 alarms");
    assert_eq!(store.count("complete_alarm"), 0);
}
