//! `worker`: runs the example worker until SIGINT or SIGTERM. See `worker -h`.

use std::io::IsTerminal;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use worker::{Command, LogFormat, PSK_ENV, USAGE, Worker, WorkerError, parse_args};

fn main() -> ExitCode {
    let command = match read_command_line() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("worker: {e}\n\n{USAGE}");
            return ExitCode::from(e.exit_code());
        }
    };
    let config = match command {
        Command::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Run(config) => config,
    };

    // Spans go to an OpenTelemetry collector when the OTEL_* environment names one.
    #[cfg(feature = "otlp")]
    let otlp = match francis_otlp::Otlp::from_env("francis-worker") {
        Ok(otlp) => otlp,
        Err(e) => {
            eprintln!("worker: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(worker::DEFAULT_LOG_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    #[cfg(feature = "otlp")]
    let registry = registry.with(otlp.as_ref().map(|o| o.layer()));
    match config.log_format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .init(),
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        Worker::bind(config).await?.run(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("worker failed: {e}");
            eprintln!("worker: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn read_command_line() -> Result<Command, WorkerError> {
    let args = std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .map_err(|a| WorkerError::UnexpectedArgument(a.to_string_lossy().into_owned()))
        })
        .collect::<Result<Vec<String>, _>>()?;
    let env_psk = match std::env::var(PSK_ENV) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(WorkerError::InvalidValue {
                flag: "runtime-psk",
                reason: format!("{PSK_ENV} is not valid UTF-8"),
            });
        }
    };
    parse_args(args, env_psk)
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM; a second one exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    let name = next_signal().await;
    info!(
        signal = name,
        "shutting down gracefully (send it again to exit at once)"
    );
    shutdown.cancel();
    let name = next_signal().await;
    error!(
        signal = name,
        "second signal: exiting without finishing the shutdown"
    );
    std::process::exit(130);
}

#[cfg(unix)]
async fn next_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot listen for SIGTERM: {e}; only Ctrl-C stops the worker");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(not(unix))]
async fn next_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}
