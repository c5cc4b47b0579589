//! The host's metrics, read through a recording `metrics` recorder: known traffic gives
//! exactly those counts, and actor ids never become series.

mod support;

use std::collections::BTreeMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use support::*;

/// Every series as `name{label=value,...}` -> its value, added up over every snapshot taken
/// so far (the recording recorder answers each series with what changed since the last
/// snapshot; a histogram counts the values it received).
fn totals(
    so_far: &mut BTreeMap<String, f64>,
    snapshotter: &metrics_util::debugging::Snapshotter,
) -> BTreeMap<String, f64> {
    for (name, v) in series(snapshotter.snapshot().into_vec()) {
        *so_far.entry(name).or_default() += v;
    }
    so_far.clone()
}

fn series(
    snapshot: Vec<(
        CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )>,
) -> BTreeMap<String, f64> {
    snapshot
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let v = match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => n as f64,
                (MetricKind::Gauge, DebugValue::Gauge(g)) => g.into_inner(),
                (MetricKind::Histogram, DebugValue::Histogram(h)) => h.len() as f64,
                (kind, value) => panic!("{kind:?} with {value:?}"),
            };
            (name, v)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn known_traffic_gives_exactly_those_counts_and_ids_add_no_series() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The test's runtime has one thread: every task of the host records here.
    let _guard = metrics::set_default_local_recorder(&recorder);
    let h = memory_host(options()).await;
    let svc = h.service();
    for _ in 0..5 {
        increment(&svc, "a").await;
    }
    let failed = invoke(&svc, "a", "fail").await.unwrap_err();
    assert_eq!(failed.code(), "actor_error");
    let mut seen = BTreeMap::new();
    let first = totals(&mut seen, &snapshotter);
    let ok = "francis_invocations_total{actor_type=probe,method=increment,outcome=ok}";
    let bad = "francis_invocations_total{actor_type=probe,method=fail,outcome=actor_error}";
    assert_eq!(first.get(ok), Some(&5.0), "{first:#?}");
    assert_eq!(first.get(bad), Some(&1.0), "{first:#?}");
    assert_eq!(
        first.get("francis_invocation_duration_seconds{actor_type=probe,method=increment}"),
        Some(&5.0),
        "{first:#?}"
    );
    assert_eq!(
        first.get("francis_activations_total{actor_type=probe}"),
        Some(&1.0)
    );
    assert_eq!(
        first.get("francis_active_actors{actor_type=probe}"),
        Some(&1.0)
    );

    // Many more actors, same methods: counts grow, the set of series does not.
    for i in 0..2_000 {
        increment(&svc, &format!("id-{i}")).await;
    }
    let after = totals(&mut seen, &snapshotter);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>(),
        "new series appeared"
    );
    assert_eq!(
        after.get("francis_activations_total{actor_type=probe}"),
        Some(&2_001.0)
    );
    assert_eq!(
        after.get("francis_active_actors{actor_type=probe}"),
        Some(&2_001.0)
    );
    assert_eq!(after.get(ok), Some(&2_005.0), "{after:#?}");

    // Methods invented by callers stop adding series past the limit of the type, whichever
    // activation (a new one per call here) they reach.
    for i in 0..100 {
        let _ = invoke(&svc, &format!("x-{i}"), &format!("made-up-{i}")).await;
    }
    let invented = totals(&mut seen, &snapshotter);
    let methods = invented
        .keys()
        .filter(|k| k.starts_with("francis_invocation_duration_seconds{actor_type=probe"))
        .count();
    assert!(methods <= 64 + 1, "{methods} method series: {invented:#?}");
    assert!(
        invented.keys().any(|k| k.contains("method=other")),
        "{invented:#?}"
    );

    h.stop().await;
    let stopped = totals(&mut seen, &snapshotter);
    assert_eq!(
        stopped.get("francis_active_actors{actor_type=probe}"),
        Some(&0.0),
        "{stopped:#?}"
    );
    assert_eq!(
        stopped.get("francis_deactivations_total{actor_type=probe,reason=shutdown}"),
        Some(&2_101.0),
        "{stopped:#?}"
    );
}
