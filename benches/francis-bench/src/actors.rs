//! The actors the scenarios call, and helpers to start and stop hosts.

use std::net::UdpSocket;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use francis_core::{Actor, ActorContext, ActorInit, Client, Envelope, Error, async_trait};
use francis_host::{ActorOptions, Health, LocalHost, LocalHostBuilder};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The cluster key of every bench host.
pub const PSK: &str = "francis-bench-runtime-psk-long-enough-0123456789";
/// The type with `echo`, `write` and alarms.
pub const BENCH: &str = "bench";
/// The type that does nothing (activation and memory).
pub const IDLE: &str = "idle";

/// The small JSON message of the invoke scenarios (about 100 bytes encoded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Msg {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub values: Vec<u32>,
}

impl Msg {
    pub fn sample(id: u64) -> Msg {
        Msg {
            id,
            name: "francis-bench".to_owned(),
            tags: vec!["a".into(), "bb".into(), "ccc".into()],
            values: vec![1, 22, 333, 4444, 55555],
        }
    }
}

/// Decodes the request and encodes the reply: the work both sides of `invoke-local` do.
pub fn echo_json(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let msg: Msg = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    serde_json::to_vec(&msg).map_err(|e| e.to_string())
}

/// Fire times of alarms: `(due_ms, fired_ms)` wall clock.
pub type AlarmLog = Arc<Mutex<Vec<(i64, i64)>>>;

/// The bench actor: `echo` (JSON in, JSON out), `write` (stores its input as its state),
/// `noop`; alarms record their lateness.
pub struct BenchActor {
    state: Client<serde_json::Value>,
    alarms: AlarmLog,
}

#[async_trait]
impl Actor for BenchActor {
    async fn invoke(
        &mut self,
        ctx: &ActorContext,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        match method {
            "echo" => {
                let msg: Msg = data.decode()?;
                Ok(Some(Envelope::encode(&msg)?))
            }
            "write" => {
                let value: serde_json::Value = data.decode()?;
                self.state.set(ctx, value).await?;
                Ok(None)
            }
            "noop" => Ok(None),
            other => Err(Error::actor(format!("unknown method {other}"))),
        }
    }

    async fn alarm(
        &mut self,
        _ctx: &ActorContext,
        _name: &str,
        data: Option<Envelope>,
    ) -> Result<(), Error> {
        let fired = chrono::Utc::now().timestamp_millis();
        let due: i64 = data.map(|d| d.decode()).transpose()?.unwrap_or(fired);
        self.alarms.lock().expect("alarm log").push((due, fired));
        Ok(())
    }
}

/// An actor with no state that answers every call with nothing.
pub struct IdleActor;

#[async_trait]
impl Actor for IdleActor {
    async fn invoke(
        &mut self,
        _ctx: &ActorContext,
        _method: &str,
        _data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        Ok(None)
    }
}

/// A running host.
pub struct Running {
    pub host: Arc<LocalHost>,
    pub alarms: AlarmLog,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), francis_host::HostError>>,
}

/// A free loopback UDP address (bound and released: good enough for a benchmark).
pub fn free_addr() -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
    sock.local_addr().expect("local address").to_string()
}

/// Builds a host with `configure`, registers the bench types (no idle deactivation), runs it
/// and waits (at most 60 s) until it serves.
pub async fn start_host(
    configure: impl FnOnce(LocalHostBuilder) -> LocalHostBuilder,
    serve_types: bool,
) -> anyhow::Result<Running> {
    let builder = LocalHost::builder()
        .address(free_addr())
        .runtime_psks([PSK])
        .shutdown_grace_period(Duration::from_secs(5));
    let host = Arc::new(configure(builder).build().await?);
    let alarms = AlarmLog::default();
    if serve_types {
        let opts = ActorOptions {
            idle_timeout: None,
            ..Default::default()
        };
        let log = alarms.clone();
        host.register_actor(
            BENCH,
            move |init: ActorInit| BenchActor {
                state: Client::new(init.actor),
                alarms: log.clone(),
            },
            opts.clone(),
        )?;
        host.register_actor(IDLE, |_| IdleActor, opts)?;
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let host = host.clone();
        let shutdown = shutdown.clone();
        async move { host.run(shutdown).await }
    });
    let mut health = host.health_watch();
    tokio::time::timeout(
        Duration::from_secs(60),
        health.wait_for(|h| *h == Health::Serving),
    )
    .await
    .map_err(|_| anyhow::anyhow!("host did not serve within 60 s"))??;
    Ok(Running {
        host,
        alarms,
        shutdown,
        task,
    })
}

/// Starts a host on its own SQLite file.
pub async fn sqlite_host(db: &Path) -> anyhow::Result<Running> {
    let db = db.to_path_buf();
    start_host(move |b| b.sqlite(db), true).await
}

impl Running {
    /// Shuts the host down, waiting at most `limit` (then abandons it).
    pub async fn stop(self, limit: Duration) {
        self.shutdown.cancel();
        match tokio::time::timeout(limit, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("  (host stopped with an error: {e})"),
            Ok(Err(e)) => eprintln!("  (host task failed: {e})"),
            Err(_) => eprintln!("  (host did not stop within {limit:?}; abandoned)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_json_round_trips_and_refuses_garbage() {
        let bytes = serde_json::to_vec(&Msg::sample(7)).unwrap();
        let back: Msg = serde_json::from_slice(&echo_json(&bytes).unwrap()).unwrap();
        assert_eq!(back, Msg::sample(7));
        assert!(echo_json(b"{not json").is_err());
    }
}
