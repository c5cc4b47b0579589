//! The process's Prometheus recorder: installed once, on first use, as the global `metrics`
//! recorder, so the host's metrics (and any the application adds) are served by
//! `GET /metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// How often the recorder folds recent histogram samples into its totals.
const UPKEEP: Duration = Duration::from_secs(5);

/// The recorder's handle, installing it (and its upkeep task, on the current tokio runtime)
/// the first time. A process in which another global recorder was installed first gets a
/// handle that renders nothing.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                francis_host::SECONDS_BUCKETS,
            )
            .expect("the buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; GET /metrics shows nothing");
        }
        let upkeep = handle.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(UPKEEP);
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
        }
        handle
    })
}
