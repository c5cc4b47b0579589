//! `francis-bench`: the benchmark scenarios of issue 9, each measured beside its baseline in the
//! same run. Run it with `cargo xtask bench [--quick] [--json PATH] [SCENARIO...]`.
//!
//! Speed never fails the run: the exit status is non-zero only when the command line is wrong
//! or a scenario could not be run at all.

mod actors;
mod args;
mod load;
mod report;
mod scenarios;
mod stats;

use std::process::ExitCode;

use args::Command;
use report::{Row, RunReport};
use scenarios::Sizes;

/// With this set to `1`, the run (and the processes it spawns, which inherit it) records the
/// hosts' metrics into a Prometheus recorder, to compare against a run without one.
const METRICS_ENV: &str = "FRANCIS_BENCH_METRICS";

/// With this set to `1`, the run (and its child processes) installs a `tracing` subscriber that
/// keeps Francis's spans at `info` (as the worker's default filter does), exporting nothing,
/// to compare against a run without one.
const TRACING_ENV: &str = "FRANCIS_BENCH_TRACING";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let command = match args::parse(&argv) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("error: {message}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::var_os(METRICS_ENV).is_some_and(|v| v == "1") {
        // As the worker does: a Prometheus recorder receives every metric of the hosts, with
        // the same buckets, folded in by its upkeep every 5 s.
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                francis_host::SECONDS_BUCKETS,
            )
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            eprintln!("error: a metrics recorder is already installed");
            return ExitCode::FAILURE;
        }
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                handle.run_upkeep();
            }
        });
    }
    match std::env::var(TRACING_ENV).as_deref() {
        // Spans are created, their fields recorded and formatted as a log subscriber does; log
        // lines (at warn and above, rare in a benchmark) go nowhere.
        Ok("1") | Ok("fmt") => {
            use tracing_subscriber::layer::SubscriberExt;
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("warn,francis=info"))
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
            if tracing::subscriber::set_global_default(subscriber).is_err() {
                eprintln!("error: a tracing subscriber is already installed");
                return ExitCode::FAILURE;
            }
        }
        // Spans are created and kept by the registry, as for an exporter layer, but nothing
        // formats them: the cost of the spans themselves.
        Ok("spans") => {
            use tracing_subscriber::layer::SubscriberExt;
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("warn,francis=info"));
            if tracing::subscriber::set_global_default(subscriber).is_err() {
                eprintln!("error: a tracing subscriber is already installed");
                return ExitCode::FAILURE;
            }
        }
        _ => {}
    }
    let outcome = match command {
        Command::Help => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Command::Serve {
            db,
            host_addr,
            echo_addr,
        } => runtime.block_on(scenarios::serve(&db, &host_addr, &echo_addr)),
        Command::MemoryChild { n } => runtime.block_on(scenarios::memory_child(n)),
        Command::Run(opts) => runtime.block_on(run_all(opts, &argv)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_all(opts: args::RunOptions, argv: &[String]) -> anyhow::Result<()> {
    let sizes = Sizes { quick: opts.quick };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let command = format!("francis-bench {}", argv.join(" "));
    println!(
        "francis-bench: {date}, {cores} cores, {}",
        if opts.quick { "quick" } else { "full" }
    );
    let started = std::time::Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut failed = Vec::new();
    for name in &opts.scenarios {
        println!("== {name}");
        let t = std::time::Instant::now();
        match scenarios::run(name, sizes).await {
            Ok(new) => {
                print!("{}", report::table(&new));
                rows.extend(new);
            }
            Err(e) => {
                println!("   FAILED: {e:#}");
                failed.push(format!("{name}: {e:#}"));
            }
        }
        println!("   ({:.1} s)", t.elapsed().as_secs_f64());
    }
    println!(
        "\n== summary ({:.1} s)\n{}",
        started.elapsed().as_secs_f64(),
        report::table(&rows)
    );
    report::write_json(
        &opts.json,
        &RunReport {
            date,
            command,
            quick: opts.quick,
            cores,
            rows: &rows,
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", opts.json.display()))?;
    println!("results written to {}", opts.json.display());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "scenarios failed:\n  {}",
            failed.join("\n  ")
        ))
    }
}
