//! Running one schedule: start the cluster, load it while injecting the planned faults, heal,
//! read every actor through every worker, stop, compare the replicas, check the history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::checker::{self, Settled};
use crate::client::{self, Http};
use crate::cluster::{Cluster, ProcState};
use crate::history::{Call, Kind, Op, Outcome, Phase, Violation};
use crate::plan::{FaultKind, Plan};
use crate::replicas;

/// How long a worker may take to become healthy (debug build, loaded machine).
pub const HEALTHY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a graceful shutdown may take after SIGTERM.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);
/// How long the final reads of one actor may keep failing (retryably) after the heal.
pub const FINAL_READ_DEADLINE: Duration = Duration::from_secs(30);
/// How long replicas may take to apply the whole log after the final reads.
pub const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);

/// A fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// What.
    pub kind: FaultKind,
    /// Which worker.
    pub target: usize,
    /// When it started, in microseconds since the schedule started.
    pub start_us: u64,
    /// When the worker was continued or started again.
    pub end_us: u64,
}

/// Everything one schedule produced.
#[derive(Debug, Serialize)]
pub struct ScheduleResult {
    /// What was planned.
    pub plan: Plan,
    /// Every call, load and final reads.
    pub calls: Vec<Call>,
    /// The faults as injected.
    pub faults: Vec<FaultRecord>,
    /// What the checker (and the harness) found.
    pub violations: Vec<Violation>,
    /// Wall time of the whole schedule.
    pub elapsed_ms: u64,
    /// The workers' directories, when kept (`--keep`, or on a violation).
    pub kept_dir: Option<PathBuf>,
}

/// The actor id of actor `n`.
pub fn actor_id(n: u32) -> String {
    format!("chaos-{n}")
}

/// Microseconds since `epoch`.
fn us(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a run of schedules shares.
#[derive(Debug, Clone)]
pub struct Env {
    /// The `worker` binary.
    pub worker: PathBuf,
    /// Keep every schedule's directory, not only failing ones.
    pub keep: bool,
    /// Where kept directories are moved (e.g. `target/chaos/<seed>`).
    pub keep_root: PathBuf,
}

/// Reaps workers that exited; an exit the suite did not cause is a crash.
fn poll_exits(cluster: &Mutex<Cluster>, violations: &Mutex<Vec<Violation>>) {
    let mut cluster = lock(cluster);
    for w in &mut cluster.workers {
        match w.try_exit() {
            Ok(Some(status)) if !w.expect_exit => {
                warn!(worker = w.index, %status, "worker exited on its own");
                lock(violations).push(Violation::new(
                    Kind::WorkerCrash,
                    format!(
                        "worker {} exited on its own with {status}; log tail:\n{}",
                        w.index,
                        w.log_tail(15)
                    ),
                ));
            }
            Ok(_) => {}
            Err(e) => warn!(worker = w.index, "cannot poll the worker: {e}"),
        }
    }
}

/// SIGTERM to worker `i`, then waits for its exit; a shutdown that does not finish in time is
/// killed and reported, a non-zero exit is a crash.
async fn stop_gracefully(
    cluster: &Mutex<Cluster>,
    violations: &Mutex<Vec<Violation>>,
    i: usize,
) -> Result<()> {
    {
        let mut c = lock(cluster);
        let w = &mut c.workers[i];
        if !w.is_up() {
            return Ok(());
        }
        w.expect_exit = true;
        w.terminate()?;
    }
    let end = Instant::now() + SHUTDOWN_DEADLINE;
    loop {
        poll_exits(cluster, violations);
        if shutdown_finished(cluster, violations, i, Instant::now() >= end)? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether worker `i` is down after SIGTERM (reporting a non-zero exit); when `late`, kills a
/// worker still running and reports it.
fn shutdown_finished(
    cluster: &Mutex<Cluster>,
    violations: &Mutex<Vec<Violation>>,
    i: usize,
    late: bool,
) -> Result<bool> {
    let mut c = lock(cluster);
    let w = &mut c.workers[i];
    if !w.is_up() {
        if let Some(status) = w.last_exit
            && !status.success()
        {
            lock(violations).push(Violation::new(
                Kind::WorkerCrash,
                format!(
                    "worker {i} exited with {status} after SIGTERM; log tail:\n{}",
                    w.log_tail(15)
                ),
            ));
        }
        return Ok(true);
    }
    if late {
        lock(violations).push(Violation::new(
            Kind::ShutdownStuck,
            format!(
                "worker {i} still running {}s after SIGTERM; log tail:\n{}",
                SHUTDOWN_DEADLINE.as_secs(),
                w.log_tail(15)
            ),
        ));
        w.kill9()?;
        return Ok(true);
    }
    Ok(false)
}

/// Runs the planned faults, in order, relative to `load_start`.
async fn inject(
    plan: Plan,
    cluster: Shared<Cluster>,
    violations: Shared<Vec<Violation>>,
    epoch: Instant,
    load_start: Instant,
) -> Result<Vec<FaultRecord>> {
    let mut records = Vec::new();
    for f in &plan.faults {
        let at = load_start + Duration::from_millis(f.at_ms);
        tokio::time::sleep_until(at.into()).await;
        let start_us = us(epoch);
        let hold = Duration::from_millis(f.hold_ms);
        info!(
            schedule = plan.index,
            worker = f.target,
            fault = f.kind.as_str(),
            hold_ms = f.hold_ms,
            "fault"
        );
        match f.kind {
            FaultKind::Kill => {
                lock(&cluster).workers[f.target].kill9()?;
                tokio::time::sleep_until((at + hold).into()).await;
                let mut c = lock(&cluster);
                let config = c.config.clone();
                c.workers[f.target].start(&config)?;
            }
            FaultKind::Pause => {
                lock(&cluster).workers[f.target].pause()?;
                tokio::time::sleep_until((at + hold).into()).await;
                lock(&cluster).workers[f.target].resume()?;
            }
            FaultKind::Restart => {
                stop_gracefully(&cluster, &violations, f.target).await?;
                tokio::time::sleep_until((at + hold).into()).await;
                let mut c = lock(&cluster);
                let config = c.config.clone();
                c.workers[f.target].start(&config)?;
            }
        }
        records.push(FaultRecord {
            kind: f.kind,
            target: f.target,
            start_us,
            end_us: us(epoch),
        });
    }
    Ok(records)
}

/// One client task: random calls until `load_end`.
async fn client_loop(
    plan: Plan,
    client: usize,
    http: Http,
    addresses: Vec<String>,
    epoch: Instant,
    load_end: Instant,
) -> Vec<Call> {
    let mut rng = StdRng::seed_from_u64(plan.seed ^ ((client as u64 + 1) << 32));
    let mut calls = Vec::new();
    while Instant::now() < load_end {
        let actor = rng.random_range(0..plan.actors);
        let op = if rng.random_ratio(plan.peek_percent, 100) {
            Op::Peek
        } else {
            Op::Increment
        };
        let worker = rng.random_range(0..addresses.len());
        let start_us = us(epoch);
        let (outcome, host) = http.call(&addresses[worker], op, &actor_id(actor)).await;
        let failed = !matches!(outcome, Outcome::Ok(_));
        calls.push(Call {
            client,
            actor,
            op,
            worker,
            phase: Phase::Load,
            start_us,
            end_us: us(epoch),
            outcome,
            host,
        });
        if failed {
            // Pacing, not synchronization: do not spin on a worker that is down.
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..=200))).await;
        }
    }
    calls
}

/// Reads every actor through every worker, retrying retryable failures until a deadline.
async fn final_reads(
    plan: &Plan,
    http: &Http,
    addresses: &[String],
    epoch: Instant,
    violations: &Mutex<Vec<Violation>>,
) -> Vec<Call> {
    let mut calls = Vec::new();
    for actor in 0..plan.actors {
        for (worker, address) in addresses.iter().enumerate() {
            let end = Instant::now() + FINAL_READ_DEADLINE;
            loop {
                let start_us = us(epoch);
                let (outcome, host) = http.call(address, Op::Peek, &actor_id(actor)).await;
                let ok = matches!(outcome, Outcome::Ok(_));
                let last = outcome.clone();
                calls.push(Call {
                    client: usize::MAX,
                    actor,
                    op: Op::Peek,
                    worker,
                    phase: Phase::Final,
                    start_us,
                    end_us: us(epoch),
                    outcome,
                    host,
                });
                if ok {
                    break;
                }
                if Instant::now() >= end {
                    lock(violations).push(Violation::new(
                        Kind::Unhealed,
                        format!(
                            "actor {actor} not readable through worker {worker} {}s after the heal: {last:?}",
                            FINAL_READ_DEADLINE.as_secs()
                        ),
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    calls
}

/// Reads every replica's state table; `Err` if one cannot be read.
async fn read_replicas(files: &[PathBuf]) -> Result<Vec<replicas::StateTable>> {
    let mut tables = Vec::new();
    for f in files {
        tables.push(replicas::read_state(f).await?);
    }
    Ok(tables)
}

/// Polls the replicas (workers still running) until their state tables agree.
async fn wait_converged(files: &[PathBuf]) -> bool {
    let end = Instant::now() + CONVERGE_DEADLINE;
    loop {
        if let Ok(tables) = read_replicas(files).await
            && tables.windows(2).all(|w| w[0] == w[1])
        {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs one schedule to the end; setup failures of the harness itself are `Err`.
pub async fn run(plan: &Plan, env: &Env) -> Result<ScheduleResult> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix(&format!("francis-chaos-{}-", plan.index))
        .tempdir()?;
    let cluster = Arc::new(Mutex::new(Cluster::new(
        &env.worker,
        tmp.path(),
        plan.workers,
        plan.health_deadline_s,
    )?));
    let (addresses, files): (Vec<String>, Vec<PathBuf>) = lock(&cluster)
        .workers
        .iter()
        .map(|w| (w.http_address.clone(), w.data_file()))
        .unzip();
    let violations: Shared<Vec<Violation>> = Arc::default();
    let http = Http::new();
    let epoch = Instant::now();
    lock(&cluster).start_all()?;

    let monitor = {
        let (cluster, violations) = (cluster.clone(), violations.clone());
        tokio::spawn(async move {
            loop {
                poll_exits(&cluster, &violations);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let mut calls = Vec::new();
    let mut faults = Vec::new();
    let mut healthy = true;
    for (i, a) in addresses.iter().enumerate() {
        if !client::wait_healthy(&http, a, HEALTHY_DEADLINE).await {
            healthy = false;
            lock(&violations).push(Violation::new(
                Kind::Unhealed,
                format!(
                    "worker {i} not healthy {}s after its first start",
                    HEALTHY_DEADLINE.as_secs()
                ),
            ));
        }
    }

    if healthy {
        let load_start = Instant::now();
        let load_end = load_start + plan.load();
        info!(
            schedule = plan.index,
            workers = plan.workers,
            faults = plan.faults.len(),
            "load"
        );
        let clients: Vec<JoinHandle<Vec<Call>>> = (0..plan.clients)
            .map(|c| {
                tokio::spawn(client_loop(
                    plan.clone(),
                    c,
                    http.clone(),
                    addresses.clone(),
                    epoch,
                    load_end,
                ))
            })
            .collect();
        let injector = tokio::spawn(inject(
            plan.clone(),
            cluster.clone(),
            violations.clone(),
            epoch,
            load_start,
        ));
        for c in clients {
            calls.extend(c.await?);
        }
        faults = injector.await??;

        // Heal: continue every paused worker, start every stopped one.
        {
            let mut c = lock(&cluster);
            for w in &mut c.workers {
                if w.state() == ProcState::Paused {
                    w.resume()?;
                }
            }
            c.start_all()?;
        }
        for (i, a) in addresses.iter().enumerate() {
            if !client::wait_healthy(&http, a, HEALTHY_DEADLINE).await {
                lock(&violations).push(Violation::new(
                    Kind::Unhealed,
                    format!(
                        "worker {i} not healthy {}s after the heal",
                        HEALTHY_DEADLINE.as_secs()
                    ),
                ));
            }
        }
        info!(schedule = plan.index, "final reads");
        calls.extend(final_reads(plan, &http, &addresses, epoch, &violations).await);
        if !wait_converged(&files).await {
            warn!(
                schedule = plan.index,
                "replicas still differ {}s after the final reads",
                CONVERGE_DEADLINE.as_secs()
            );
        }
    }

    for i in 0..plan.workers {
        stop_gracefully(&cluster, &violations, i).await?;
    }
    monitor.abort();
    let _ = monitor.await;

    // Logged panics, even in a process that then exited as told.
    for w in &lock(&cluster).workers {
        let log = w.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("panicked")) {
            lock(&violations).push(Violation::new(
                Kind::WorkerCrash,
                format!("worker {} panicked: {line}", w.index),
            ));
        }
    }

    let mut found = std::mem::take(&mut *lock(&violations));
    if healthy {
        match read_replicas(&files).await {
            Ok(tables) => {
                let settled = settle(plan, &tables);
                let before = found.len();
                found.extend(checker::check(&calls, &settled));
                let counters_disagree = found[before..]
                    .iter()
                    .any(|v| v.kind == Kind::ReplicaDivergence);
                if !counters_disagree {
                    for (i, t) in tables.iter().enumerate().skip(1) {
                        if let Some(diff) = replicas::difference(&tables[0], t) {
                            found.push(Violation::new(
                                Kind::ReplicaDivergence,
                                format!("replicas 0 and {i} differ: {diff}"),
                            ));
                        }
                    }
                }
            }
            Err(e) => found.push(Violation::new(
                Kind::ReplicaDivergence,
                format!("cannot read a replica: {e:#}"),
            )),
        }
    } else {
        found.extend(checker::check(&calls, &BTreeMap::new()));
    }

    let kept_dir = if env.keep || !found.is_empty() {
        let dest = env
            .keep_root
            .join(format!("schedule-{}-{:016x}", plan.index, plan.seed));
        Some(keep(tmp, &dest))
    } else {
        None
    };
    Ok(ScheduleResult {
        plan: plan.clone(),
        calls,
        faults,
        violations: found,
        elapsed_ms: started.elapsed().as_millis() as u64,
        kept_dir,
    })
}

/// Each actor's counter in each replica.
fn settle(plan: &Plan, tables: &[replicas::StateTable]) -> BTreeMap<u32, Settled> {
    (0..plan.actors)
        .map(|actor| {
            let key = ("myactor".to_owned(), actor_id(actor));
            let replicas = tables
                .iter()
                .map(|t| t.get(&key).and_then(|d| replicas::counter(d)))
                .collect();
            (actor, Settled { replicas })
        })
        .collect()
}

/// Moves the schedule's directory to `dest` (copying if it is on another file system); on
/// failure leaves it where it is. Returns where it is.
fn keep(tmp: tempfile::TempDir, dest: &Path) -> PathBuf {
    let src = tmp.keep();
    if let Some(parent) = dest.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::remove_dir_all(dest);
    if std::fs::rename(&src, dest).is_ok() {
        return dest.to_owned();
    }
    src
}
