//! The example worker: one Francis actor host, on its own SQLite file, serving the actor
//! type `myactor`, with a small HTTP control server to invoke actors and schedule alarms.
//!
//! The binary is a thin wrapper: parse the flags ([`parse_args`]), then [`Worker::bind`] and
//! [`Worker::run`] until SIGINT or SIGTERM. The same pieces run in-process in tests:
//!
//! ```no_run
//! use worker::{Config, Worker};
//! use francis_core::CancellationToken;
//!
//! # async fn demo() -> Result<(), worker::WorkerError> {
//! let config = Config { worker_address: "127.0.0.1:0".into(), ..Config::default() };
//! let worker = Worker::bind(config).await?;
//! println!("control server on http://{}", worker.local_addr());
//! let shutdown = CancellationToken::new();
//! worker.run(shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! Endpoints, status codes and examples are in `docs/worker.md`.

mod actor;
mod config;
mod error;
mod http;
mod prometheus;

use std::net::SocketAddr;
use std::time::Duration;

use francis_host::{HostService, LocalHost};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use actor::{ACTOR_TYPE, IDLE_TIMEOUT, MyActor, MyState, WAIT, WAIT_SUFFIX, register};
pub use config::{
    Command, Config, DEFAULT_ACTOR_HOST_ADDRESS, DEFAULT_DATA, DEFAULT_LOG_FILTER, DEFAULT_PEERS,
    DEFAULT_WORKER_ADDRESS, DataStore, EXAMPLE_RUNTIME_PSK, LogFormat, MIN_PSK_LEN, PSK_ENV,
    PskSource, USAGE, default_peers, is_postgres_url, parse_args,
};
pub use error::WorkerError;
pub use http::{
    CODE_PAYLOAD_TOO_LARGE, HOST_HEADER, MAX_BODY_BYTES, has_quorum, health_status, payload,
    retry_after_secs, router, status_for,
};

/// How long running turns may take to finish on shutdown, as in the seed.
pub const SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// After the host stopped, open HTTP connections get this long to finish before the control
/// server is dropped.
const SERVER_DRAIN: Duration = Duration::from_secs(5);

/// A worker whose control server is bound and whose host is built, not yet serving.
#[derive(Debug)]
pub struct Worker {
    host: LocalHost,
    listener: TcpListener,
    config: Config,
}

impl Worker {
    /// Binds the control server's address, opens (or creates) the data file and registers
    /// `myactor` (unless `-store-only`). Fails with [`WorkerError::Bind`] when the address is taken, before the data
    /// file is touched.
    pub async fn bind(config: Config) -> Result<Worker, WorkerError> {
        // Before the host exists, so every metric it registers reaches `GET /metrics`.
        prometheus::handle();
        let listener = TcpListener::bind(&config.worker_address)
            .await
            .map_err(|source| WorkerError::Bind {
                address: config.worker_address.clone(),
                source,
            })?;
        let mut builder = LocalHost::builder().address(config.actor_host_address.clone());
        if let Some(bind) = config.actor_host_bind_address {
            builder = builder.bind_address(bind);
        }
        let builder = match config.data_store() {
            DataStore::Sqlite(path) => builder.sqlite(path),
            DataStore::Postgres(url) => builder.postgres(url),
        };
        let mut builder = builder
            .runtime_psks([config.runtime_psk.as_bytes()])
            .peers(config.peers.clone())
            .shutdown_grace_period(SHUTDOWN_GRACE_PERIOD);
        if let Some(deadline) = config.health_deadline {
            builder = builder.health_deadline(deadline);
        }
        let host = builder.build().await?;
        if !config.store_only {
            register(&host)?;
        }
        Ok(Worker {
            host,
            listener,
            config,
        })
    }

    /// The address the control server listens on (the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// The host's service.
    pub fn service(&self) -> HostService {
        self.host.service()
    }

    /// Serves until `shutdown` fires, then shuts down gracefully: the host stops taking calls
    /// (they get `503 shutting_down`), running turns get [`SHUTDOWN_GRACE_PERIOD`] to finish,
    /// every actor is deactivated; then the control server closes.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let worker_address = self.local_addr();
        let Worker {
            host,
            listener,
            config,
        } = self;
        let actor_types: &[&str] = if config.store_only {
            &[]
        } else {
            &[ACTOR_TYPE]
        };
        info!(worker_address = %worker_address, actor_host_address = %config.actor_host_address,
              data = %config.data_for_logs(), ?actor_types, "worker started");
        if config.psk_source == PskSource::Example {
            warn!("using the example runtime PSK; set -runtime-psk or {PSK_ENV} for anything real");
        }

        let app = router(host.service());
        let server_stop = CancellationToken::new();
        let mut server = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(server_stop.clone().cancelled_owned())
                .into_future(),
        );

        let host_run = host.run(shutdown.clone());
        tokio::pin!(host_run);
        let host_result = tokio::select! {
            r = &mut host_run => r,
            served = &mut server => {
                // The control server ended on its own: stop the host too, then report it.
                let err = match served {
                    Ok(Ok(())) => std::io::Error::other("the control server stopped unexpectedly"),
                    Ok(Err(e)) => e,
                    Err(join) => std::io::Error::other(join.to_string()),
                };
                error!(worker_address = %worker_address, "control server failed: {err}; shutting down");
                shutdown.cancel();
                if let Err(e) = host_run.await {
                    warn!("host did not stop cleanly: {e}");
                }
                return Err(WorkerError::Serve(err));
            }
        };

        server_stop.cancel();
        match tokio::time::timeout(SERVER_DRAIN, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!("control server stopped with an error: {e}"),
            Ok(Err(e)) => warn!("control server task failed: {e}"),
            Err(_) => {
                warn!("HTTP connections still open after {SERVER_DRAIN:?}; closing them");
                server.abort();
            }
        }
        host_result?;
        info!(worker_address = %worker_address, actor_host_address = %config.actor_host_address,
              "worker stopped");
        Ok(())
    }
}
