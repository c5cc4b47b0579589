//! `francis-chaos`: the fault-injection suite of Francis, run by `cargo xtask chaos`.
//!
//! Each schedule, planned from a seed, starts a two- or three-worker replicated cluster of the
//! example `worker` binary, loads it with concurrent increments and peeks while it kills
//! (SIGKILL), pauses (SIGSTOP/SIGCONT) and gracefully restarts (SIGTERM) workers, heals it, reads
//! every actor through every worker, stops it and compares the replicas' SQLite files. The
//! checker then looks for lost acknowledged writes, duplicate or out-of-order results, stale
//! reads, two activations at once, diverging replicas, hangs, 500s and crashes. A
//! malformed-input pass follows. See `docs/chaos.md`.

mod args;
mod checker;
mod client;
mod cluster;
mod history;
mod malformed;
mod plan;
mod replicas;
mod report;
mod schedule;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let opts = match args::parse(&argv) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Workers must not outlive the suite, whatever ends it.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        cluster::kill_all();
        default_hook(info);
    }));
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
    let code = runtime.block_on(async {
        tokio::select! {
            result = run(opts) => match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    error!("{e:#}");
                    ExitCode::FAILURE
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: killing the workers");
                ExitCode::from(130)
            }
        }
    });
    cluster::kill_all();
    code
}

/// Runs every schedule and the malformed pass; `Ok(false)` if any violation was found.
async fn run(opts: args::Options) -> Result<bool> {
    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    std::fs::create_dir_all(&opts.out)?;
    let out = std::fs::canonicalize(&opts.out)?;
    // A private copy: a rebuild of the worker during the run must not change the binary that
    // restarted workers run.
    let run_dir = out.join(format!("run-{seed}"));
    std::fs::create_dir_all(&run_dir)?;
    let worker = run_dir.join("worker");
    std::fs::copy(&opts.worker, &worker)
        .with_context(|| format!("copy the worker binary {}", opts.worker.display()))?;
    let quick_flag = if opts.quick { " --quick" } else { "" };
    info!(
        seed,
        schedules = opts.schedules,
        "reproduce with: cargo xtask chaos --seed {seed} --schedules {}{quick_flag}",
        opts.schedules
    );
    let env = schedule::Env {
        worker: worker.clone(),
        keep: opts.keep,
        keep_root: run_dir.clone(),
    };
    let started = Instant::now();
    let mut results = Vec::new();
    let indices: Vec<usize> = match opts.only {
        Some(i) => vec![i],
        None => (0..opts.schedules).collect(),
    };
    for index in indices {
        let plan = plan::plan(seed, index, opts.quick);
        info!(
            schedule = index,
            schedule_seed = format!("{:#x}", plan.seed),
            workers = plan.workers,
            health_deadline_s = ?plan.health_deadline_s,
            faults = plan.faults.len(),
            "schedule {index}: cargo xtask chaos --seed {seed} --schedules {} --schedule {index}{quick_flag}",
            opts.schedules
        );
        let result = schedule::run(&plan, &env).await?;
        let ok = result.calls.iter().filter(|c| c.value().is_some()).count();
        info!(
            schedule = index,
            calls = result.calls.len(),
            ok,
            violations = result.violations.len(),
            elapsed_ms = result.elapsed_ms,
            "schedule done"
        );
        if let Some(dir) = &result.kept_dir {
            let history = dir.join("history.json");
            std::fs::write(&history, serde_json::to_vec(&result)?)?;
            info!(schedule = index, "kept {}", dir.display());
        }
        results.push(result);
    }
    let malformed = if opts.malformed && opts.only.is_none() {
        let dir = tempfile::Builder::new()
            .prefix("francis-chaos-malformed-")
            .tempdir()?;
        let m = malformed::run(&worker, dir.path(), seed, opts.quick).await?;
        if !m.violations.is_empty() || opts.keep {
            let dest = run_dir.join("malformed");
            let _ = std::fs::create_dir_all(&dest);
            let src = dir.keep();
            let _ = std::fs::remove_dir_all(&dest);
            let kept = if std::fs::rename(&src, &dest).is_ok() {
                dest
            } else {
                src
            };
            info!("malformed pass kept in {}", kept.display());
        }
        Some(m)
    } else {
        None
    };
    let summary = report::summarize(seed, &results, malformed, started.elapsed().as_secs_f64());
    let json = out.join(match opts.only {
        Some(i) => format!("chaos-{seed}-schedule-{i}.json"),
        None => format!("chaos-{seed}.json"),
    });
    std::fs::write(&json, serde_json::to_vec_pretty(&summary)?)?;
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    if !opts.keep && summary.violation_count() == 0 {
        let _ = std::fs::remove_file(&worker);
        let _ = std::fs::remove_dir(&run_dir);
    }
    print!("{}", summary.text());
    println!("  results       {}", json.display());
    let only = opts
        .only
        .map_or(String::new(), |i| format!(" --schedule {i}"));
    println!(
        "  reproduce     cargo xtask chaos --seed {seed} --schedules {}{only}{quick_flag}",
        opts.schedules
    );
    Ok(summary.violation_count() == 0)
}
