//! The scenarios of issue 9, each measured beside its baseline in the same run.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use francis_core::{ActorRef, ActorService, AlarmProperties, Envelope};
use francis_host::HostService;
use francis_transport::{RequestHandler, Transport, TransportConfig, async_trait, proto};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

use crate::actors::{
    BENCH, IDLE, Msg, PSK, Running, echo_json, free_addr, sqlite_host, start_host,
};
use crate::load::{Budget, drive, interleave};
use crate::report::Row;
use crate::stats::{Measure, Target};

/// Sizes of a run: full, or `--quick`.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub quick: bool,
}

impl Sizes {
    fn budget(self, full: (u64, u64), quick: (u64, u64)) -> Budget {
        let (ops, ms) = if self.quick { quick } else { full };
        Budget::new(ops, Duration::from_millis(ms))
    }
    fn pick<T>(self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

fn actor(ty: &str, id: impl std::fmt::Display) -> ActorRef {
    ActorRef::new(ty, id.to_string()).expect("valid bench actor reference")
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `invoke-local`: one active actor, small JSON in and out, 1 and 64 callers, beside a bare
/// tokio task actor (mpsc + oneshot) doing the same JSON decode/encode.
pub async fn invoke_local(sz: Sizes) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let host = sqlite_host(&dir.path().join("local.db")).await?;
    let svc = host.host.service();
    let target = actor(BENCH, "echo-1");
    svc.invoke(&target, "echo", Envelope::encode(&Msg::sample(0))?)
        .await?;

    type Req = (Vec<u8>, oneshot::Sender<Result<Vec<u8>, String>>);
    let (tx, mut rx) = mpsc::channel::<Req>(1024);
    let baseline_actor = tokio::spawn(async move {
        while let Some((req, reply)) = rx.recv().await {
            let _ = reply.send(echo_json(&req));
        }
    });
    let mut rows = Vec::new();
    for callers in [1usize, 64] {
        let budget = sz.budget((300_000, 4_000), (30_000, 700));
        let tx2 = tx.clone();
        let (svc2, target2) = (svc.clone(), target.clone());
        let (base, m) = interleave(
            callers,
            budget,
            move |_, n| {
                let tx = tx2.clone();
                async move {
                    let req = serde_json::to_vec(&Msg::sample(n)).map_err(err)?;
                    let (otx, orx) = oneshot::channel();
                    tx.send((req, otx)).await.map_err(err)?;
                    let resp = orx.await.map_err(err)??;
                    let _: Msg = serde_json::from_slice(&resp).map_err(err)?;
                    Ok(())
                }
            },
            move |_, n| {
                let (svc, target) = (svc2.clone(), target2.clone());
                async move {
                    let data = Envelope::encode(&Msg::sample(n)).map_err(err)?;
                    let out = svc.invoke(&target, "echo", data).await.map_err(err)?;
                    let _: Msg = out.ok_or("no output")?.decode().map_err(err)?;
                    Ok(())
                }
            },
        )
        .await;
        let goal = if callers == 64 {
            Target::RatioAtLeast(0.5)
        } else {
            Target::None
        };
        let case = format!("{callers} caller{}", if callers == 1 { "" } else { "s" });
        rows.push(
            Row::new(
                "invoke-local",
                &case,
                &m,
                Some(("tokio mpsc+oneshot actor", &base)),
                goal,
            )
            .note("one active actor; SQLite host"),
        );
    }
    drop(tx);
    let _ = baseline_actor.await;
    host.stop(Duration::from_secs(20)).await;
    Ok(rows)
}

/// The raw echo endpoint of the `invoke-remote` baseline.
#[derive(Debug)]
struct Echo;

#[async_trait]
impl RequestHandler for Echo {
    async fn handle(&self, _peer: &str, request: proto::Request) -> proto::Response {
        match request.body {
            Some(proto::request::Body::Invoke(invoke)) => {
                proto::Response::invoke_ok(Some(invoke.payload))
            }
            _ => proto::Response::unsupported(),
        }
    }
}

/// A handler for a client-only transport.
#[derive(Debug)]
struct Refuse;

#[async_trait]
impl RequestHandler for Refuse {
    async fn handle(&self, _peer: &str, _request: proto::Request) -> proto::Response {
        proto::Response::unsupported()
    }
}

/// The echo endpoint's host id.
const ECHO_ID: &str = "bench-echo";

/// Kills the child process if it is still running when dropped.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Closes its stdin (the child's signal to stop) and waits up to `limit`, then kills it.
    fn finish(&mut self, limit: Duration) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        drop(child.stdin.take());
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawns this binary with `args`, stdin and stdout piped, and returns it with its stdout.
fn spawn_self(args: &[&str]) -> anyhow::Result<(ChildGuard, BufReader<std::process::ChildStdout>)> {
    let exe = std::env::current_exe().context("cannot find the bench binary")?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot spawn the bench binary")?;
    let out = BufReader::new(child.stdout.take().expect("piped stdout"));
    Ok((ChildGuard(Some(child)), out))
}

/// Reads one line from the child, giving up after `limit`.
async fn read_line(
    mut out: BufReader<std::process::ChildStdout>,
    limit: Duration,
) -> anyhow::Result<(String, BufReader<std::process::ChildStdout>)> {
    let read = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let n = out.read_line(&mut line);
        (n, line, out)
    });
    match tokio::time::timeout(limit, read).await {
        Ok(Ok((Ok(n), line, out))) if n > 0 => Ok((line.trim().to_owned(), out)),
        Ok(Ok((Ok(_), _, _))) => Err(anyhow!("the child process exited early")),
        Ok(Ok((Err(e), _, _))) => Err(anyhow!("cannot read the child's output: {e}")),
        Ok(Err(e)) => Err(anyhow!("reader failed: {e}")),
        Err(_) => Err(anyhow!("the child process did not answer within {limit:?}")),
    }
}

/// The `__serve` child of `invoke-remote`: host B on the shared file, plus the raw echo
/// endpoint; prints `ready`, runs until its stdin closes.
pub async fn serve(db: &Path, host_addr: &str, echo_addr: &str) -> anyhow::Result<()> {
    let (db, addr) = (db.to_path_buf(), host_addr.to_owned());
    let host = start_host(move |b| b.address(addr).sqlite(db), true).await?;
    let echo = Transport::start(
        TransportConfig::new(ECHO_ID, echo_addr.parse()?, vec![PSK.as_bytes().to_vec()]),
        Arc::new(Echo),
    )?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "ready")?;
        stdout.flush()?;
    }
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let stdin = std::io::stdin();
        while stdin.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            line.clear();
        }
    })
    .await?;
    echo.shutdown().await;
    host.stop(Duration::from_secs(10)).await;
    Ok(())
}

/// `invoke-remote`: calls through host A (this process) to actors owned by host B (a child
/// process; both share one SQLite file), beside a raw echo over the same QUIC mTLS transport.
pub async fn invoke_remote(sz: Sizes) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("shared.db");
    let (b_addr, echo_addr) = (free_addr(), free_addr());
    let db_text = db.to_string_lossy().into_owned();
    let (mut child, out) = spawn_self(&["__serve", &db_text, &b_addr, &echo_addr])?;
    let (line, _out) = read_line(out, Duration::from_secs(90)).await?;
    if line != "ready" {
        return Err(anyhow!(
            "the serving child said `{line}` instead of `ready`"
        ));
    }
    let result = remote_measure(sz, &db, echo_addr.parse()?).await;
    child.finish(Duration::from_secs(15));
    result
}

async fn remote_measure(
    sz: Sizes,
    db: &Path,
    echo_addr: std::net::SocketAddr,
) -> anyhow::Result<Vec<Row>> {
    let db = db.to_path_buf();
    let a = start_host(move |b| b.sqlite(db), false).await?;
    let svc = a.host.service();
    let client = Arc::new(Transport::start(
        TransportConfig::new(
            "bench-client",
            "127.0.0.1:0".parse()?,
            vec![PSK.as_bytes().to_vec()],
        ),
        Arc::new(Refuse),
    )?);
    let callers = 64usize;
    let actors: Arc<Vec<ActorRef>> = Arc::new(
        (0..callers)
            .map(|i| actor(BENCH, format!("r{i}")))
            .collect(),
    );
    let mut served_by = std::collections::BTreeSet::new();
    for a in actors.iter() {
        let out = svc
            .invoke_traced(a, "echo", Envelope::encode(&Msg::sample(0))?)
            .await?;
        served_by.insert(out.served_by);
    }
    if served_by.contains(svc.host_address()) {
        return Err(anyhow!(
            "an actor ran on host A: the remote path was not measured"
        ));
    }
    let mut rows = Vec::new();
    for n_callers in [1usize, callers] {
        let budget = sz.budget((100_000, 4_000), (5_000, 800));
        let c = client.clone();
        let (s, acts) = (svc.clone(), actors.clone());
        let (base, m) = interleave(
            n_callers,
            budget,
            move |caller, n| {
                let c = c.clone();
                async move {
                    let payload = Bytes::from(serde_json::to_vec(&Msg::sample(n)).map_err(err)?);
                    let invoke = proto::Invoke {
                        actor_type: BENCH.into(),
                        actor_id: format!("r{caller}"),
                        method: "echo".into(),
                        payload,
                        request_id: n.to_string(),
                        ..Default::default()
                    };
                    let out = c.invoke(echo_addr, ECHO_ID, invoke).await.map_err(err)?;
                    let _: Msg = serde_json::from_slice(&out.ok_or("no output")?).map_err(err)?;
                    Ok(())
                }
            },
            move |caller, n| {
                let (s, acts) = (s.clone(), acts.clone());
                async move {
                    let data = Envelope::encode(&Msg::sample(n)).map_err(err)?;
                    let out = s.invoke(&acts[caller], "echo", data).await.map_err(err)?;
                    let _: Msg = out.ok_or("no output")?.decode().map_err(err)?;
                    Ok(())
                }
            },
        )
        .await;
        let goal = if n_callers == callers {
            Target::RatioAtLeast(0.7)
        } else {
            Target::None
        };
        rows.push(
            Row::new(
                "invoke-remote",
                &format!("{n_callers} caller{}", if n_callers == 1 { "" } else { "s" }),
                &m,
                Some(("raw francis-transport echo", &base)),
                goal,
            )
            .note("host B in a separate process, shared SQLite file; one actor per caller; baseline: Transport::invoke to an echo handler (quinn + rustls mTLS, same frames)"),
        );
    }
    client.shutdown().await;
    a.stop(Duration::from_secs(20)).await;
    Ok(rows)
}

/// The 1 KiB state value (a JSON string of 1024 bytes with its quotes).
fn kib_value() -> serde_json::Value {
    serde_json::Value::String("x".repeat(1022))
}

/// One load operation, boxed so setup functions can return it.
type Op = Arc<dyn Fn(usize, u64) -> OpFuture + Send + Sync>;
type OpFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// `write` of 1 KiB to `callers` actors (one per caller, each written once first) through
/// `services` (caller `c` uses `services[c % len]`).
async fn write_op(services: Vec<HostService>, callers: usize, prefix: &str) -> anyhow::Result<Op> {
    let data = Envelope::encode(&kib_value())?;
    let actors: Arc<Vec<ActorRef>> = Arc::new(
        (0..callers)
            .map(|i| actor(BENCH, format!("{prefix}{i}")))
            .collect(),
    );
    for (i, a) in actors.iter().enumerate() {
        services[i % services.len()]
            .invoke(a, "write", data.clone())
            .await?;
    }
    let services = Arc::new(services);
    Ok(Arc::new(move |caller, _| {
        let (s, acts, data) = (services.clone(), actors.clone(), data.clone());
        Box::pin(async move {
            s[caller % s.len()]
                .invoke(&acts[caller], "write", data)
                .await
                .map_err(err)?;
            Ok(())
        })
    }))
}

/// Drives a boxed operation.
async fn drive_op(callers: usize, budget: Budget, op: Op) -> Measure {
    drive(callers, budget, move |c, n| op(c, n)).await
}

/// Raw sqlx upserts of the same rows: the same schema and pragmas (WAL, synchronous FULL,
/// foreign keys, busy timeout), one `BEGIN IMMEDIATE` transaction per write, from `callers`
/// tasks over one connection (SQLite has one writer; more connections only add lock waits).
async fn raw_sqlx_op(path: &Path) -> anyhow::Result<Op> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS state (
            actor_type TEXT NOT NULL,
            actor_id   TEXT NOT NULL,
            data       BLOB NOT NULL,
            expires_ms INTEGER,
            PRIMARY KEY (actor_type, actor_id)
        ) STRICT, WITHOUT ROWID;",
    )
    .execute(&pool)
    .await?;
    let data = Bytes::from(serde_json::to_vec(&kib_value())?);
    Ok(Arc::new(move |caller, _| {
        let (pool, data) = (pool.clone(), data.clone());
        Box::pin(async move {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
            sqlx::query(
                "INSERT INTO state (actor_type, actor_id, data, expires_ms) VALUES (?1, ?2, ?3, NULL)
                 ON CONFLICT (actor_type, actor_id) DO UPDATE SET
                     data = excluded.data, expires_ms = excluded.expires_ms",
            )
            .bind(BENCH)
            .bind(format!("w{caller}"))
            .bind(data.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            tx.commit().await.map_err(err)?;
            Ok(())
        })
    }))
}

/// `state-write`: 1 KiB `set_state` from 64 actors on one SQLite host, beside raw sqlx.
pub async fn state_write(sz: Sizes) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let budget = sz.budget((40_000, 6_000), (3_000, 1_200));
    let raw = raw_sqlx_op(&dir.path().join("raw.db")).await?;
    let host = sqlite_host(&dir.path().join("host.db")).await?;
    let write = write_op(vec![host.host.service()], 64, "w").await?;
    let (base, m) = interleave(64, budget, move |c, n| raw(c, n), move |c, n| write(c, n)).await;
    host.stop(Duration::from_secs(20)).await;
    Ok(vec![
        Row::new(
            "state-write",
            "64 actors, 1 KiB",
            &m,
            Some(("raw sqlx upsert, 1 tx/write", &base)),
            Target::RatioAtLeast(1.0),
        )
        .note("actor invoke -> Client::set (fenced write, group commit); synchronous=FULL on both"),
    ])
}

/// `state-write-hot`: one actor, 64 callers, each call a durable 1 KiB state write, beside
/// one commit per write (raw sqlx over one connection: what the actor cost when each turn
/// waited for its own commit). The output gate lets the turns run on and share commits.
pub async fn state_write_hot(sz: Sizes) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let budget = sz.budget((40_000, 6_000), (3_000, 1_200));
    let raw = raw_sqlx_op(&dir.path().join("raw.db")).await?;
    let host = sqlite_host(&dir.path().join("host.db")).await?;
    let svc = host.host.service();
    let hot = actor(BENCH, "hot");
    let data = Envelope::encode(&kib_value())?;
    svc.invoke(&hot, "write", data.clone()).await?;
    let write = move |_, _| {
        let (svc, hot, data) = (svc.clone(), hot.clone(), data.clone());
        async move {
            svc.invoke(&hot, "write", data).await.map_err(err)?;
            Ok(())
        }
    };
    let (base, m) = interleave(64, budget, move |c, n| raw(c, n), write).await;
    host.stop(Duration::from_secs(20)).await;
    Ok(vec![
        Row::new(
            "state-write-hot",
            "1 actor, 64 callers, 1 KiB",
            &m,
            Some(("raw sqlx upsert, 1 tx/write", &base)),
            Target::RatioAtLeast(5.0),
        )
        .note("every answer waits until its write is durable (synchronous=FULL on both)"),
    ])
}

/// `activate`: first calls to new ids (placement claim + factory), 64 callers.
pub async fn activate(sz: Sizes) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let host = sqlite_host(&dir.path().join("activate.db")).await?;
    let svc = host.host.service();
    let budget = sz.budget((60_000, 6_000), (3_000, 1_500));
    let m = drive(64, budget, move |_, n| {
        let svc = svc.clone();
        async move {
            svc.invoke(&actor(IDLE, format!("a{n}")), "noop", Envelope::null())
                .await
                .map_err(err)?;
            Ok(())
        }
    })
    .await;
    host.stop(Duration::from_secs(60)).await;
    Ok(vec![
        Row::new(
            "activate",
            "64 callers, new ids",
            &m,
            None,
            Target::OpsAtLeast(10_000.0),
        )
        .note("SQLite host; claim + factory + first turn"),
    ])
}

/// `alarms`: N one-shot alarms due at the same instant (10 per actor), default host timings,
/// on one SQLite host and on the two-worker shape (two replicated hosts).
pub async fn alarms(sz: Sizes) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let single = vec![sqlite_host(&dir.path().join("alarms.db")).await?];
    let mut rows = vec![
        alarm_burst(
            single,
            sz.pick(20_000, 300),
            sz,
            "",
            Target::AllWithinSecs(5.0),
        )
        .await?,
    ];
    let two = replicated_hosts(dir.path(), 2, "alarms").await?;
    let case = ", 2 nodes replicated";
    rows.push(alarm_burst(two, sz.pick(2_000, 200), sz, case, Target::None).await?);
    Ok(rows)
}

/// Sets `n` alarms due together through the first of `hosts`, waits until all fired (on
/// whichever host owns each actor) or a limit after the due time, and stops the hosts.
/// With a target, a burst that did not all fire misses it.
async fn alarm_burst(
    hosts: Vec<Running>,
    n: u64,
    sz: Sizes,
    shape: &str,
    target: Target,
) -> anyhow::Result<Row> {
    let per_actor = 10u64;
    let actors = n.div_ceil(per_actor);
    let wait_limit = Duration::from_secs(sz.pick(90, 20));
    let svc = hosts[0].host.service();
    let lead = Duration::from_millis(2_000 + n / 4);
    let due = chrono::Utc::now() + chrono::Duration::from_std(lead)?;
    let due_ms = due.timestamp_millis();
    let mut props = AlarmProperties::once(due);
    props.data = Some(Envelope::encode(&due_ms)?);
    let set_started = Instant::now();
    let s = svc.clone();
    let set = drive(64, Budget::new(n, Duration::from_secs(120)), move |_, i| {
        let (s, props) = (s.clone(), props.clone());
        async move {
            let a = actor(BENCH, format!("al{}", i % actors));
            s.set_alarm(&a, &format!("n{}", i / actors), props)
                .await
                .map_err(err)?;
            Ok(())
        }
    })
    .await;
    let set_took = set_started.elapsed();
    let set_late = chrono::Utc::now() > due;
    let fired_so_far = |hosts: &[Running]| -> Vec<(i64, i64)> {
        hosts
            .iter()
            .flat_map(|h| h.alarms.lock().expect("alarm log").clone())
            .collect()
    };
    // Wait until every alarm that was set fired, or the limit after the due time.
    let until = Instant::now() + lead.saturating_sub(set_took) + wait_limit;
    while (fired_so_far(&hosts).len() as u64) < set.ops && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = fired_so_far(&hosts);
    for h in hosts {
        h.stop(Duration::from_secs(30)).await;
    }
    let lateness: Vec<Duration> = log
        .iter()
        .map(|(d, f)| Duration::from_millis((f - d).max(0) as u64))
        .collect();
    let fired = log.len() as u64;
    let all = fired >= set.ops && set.errors == 0;
    let mut sorted = lateness.clone();
    sorted.sort_unstable();
    let worst = sorted.last().copied().unwrap_or_default();
    let m = Measure::new(lateness, n - fired.min(n), None, worst);
    let mut row = Row::new(
        "alarms",
        &format!("{n} due together{shape}"),
        &m,
        None,
        Target::None,
    )
    .note(format!(
        "p50/p99 columns are lateness; fired {fired} of {n} ({}); last fired {:.1} s after due; set {} in {:.1} s{}; {} alarms per actor; default timings (poll 1.5 s, batch 25)",
        if all { "all".to_owned() } else { format!("gave up {wait_limit:?} after due") },
        worst.as_secs_f64(),
        set.ops,
        set_took.as_secs_f64(),
        if set_late { " (setting ended after the due time)" } else { "" },
        per_actor,
    ));
    let judged = if all { Some(worst.as_secs_f64()) } else { None };
    let has_target = !matches!(target, Target::None);
    row = row.judge(target, judged);
    if !all && has_target {
        row.target_met = Some(false);
    }
    Ok(row)
}

/// Starts `nodes` hosts replicating one store over loopback, each with its own SQLite file
/// under `dir` (named after `tag`).
async fn replicated_hosts(dir: &Path, nodes: usize, tag: &str) -> anyhow::Result<Vec<Running>> {
    let addrs: Vec<String> = (0..nodes).map(|_| free_addr()).collect();
    let starts = (0..nodes).map(|i| {
        let (addr, peers, db) = (
            addrs[i].clone(),
            addrs.clone(),
            dir.join(format!("{tag}-node{i}.db")),
        );
        start_host(move |b| b.address(addr).sqlite(db).peers(peers), true)
    });
    let mut hosts: Vec<Running> = Vec::with_capacity(nodes);
    for h in futures::future::join_all(starts).await {
        hosts.push(h?);
    }
    Ok(hosts)
}

/// Drives `callers` 1 KiB writers through a replicated cluster of `nodes` in-process hosts
/// (callers spread over the hosts, so most calls are forwarded to their actor's owner).
async fn replicated_measure(
    dir: &Path,
    nodes: usize,
    callers: usize,
    budget: Budget,
) -> anyhow::Result<Measure> {
    let hosts = replicated_hosts(dir, nodes, &format!("n{nodes}c{callers}")).await?;
    let services = hosts.iter().map(|h| h.host.service()).collect();
    let m = match write_op(services, callers, &format!("rw{nodes}-{callers}-")).await {
        Ok(write) => Ok(drive_op(callers, budget, write).await),
        Err(e) => Err(e),
    };
    let stops = hosts
        .into_iter()
        .map(|h| tokio::spawn(h.stop(Duration::from_secs(30))));
    for s in stops.collect::<Vec<_>>() {
        let _ = s.await;
    }
    m
}

/// `replicated-write`: 1 KiB writes through replicated clusters on loopback (3 nodes and the
/// two-worker shape, 64 callers and one), beside the same load on a single SQLite host.
pub async fn replicated_write(sz: Sizes) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let budget = sz.budget((20_000, 6_000), (1_500, 1_500));
    let one = sz.budget((3_000, 4_000), (300, 1_000));
    let single = sqlite_host(&dir.path().join("single.db")).await?;
    let base = drive_op(
        64,
        budget,
        write_op(vec![single.host.service()], 64, "w").await?,
    )
    .await;
    let base_one = drive_op(
        1,
        one,
        write_op(vec![single.host.service()], 1, "w1-").await?,
    )
    .await;
    single.stop(Duration::from_secs(20)).await;

    let note = "in-process hosts, real QUIC on loopback; callers spread over the hosts (calls forwarded to owners)";
    let mut rows = Vec::new();
    for (nodes, callers, base, label, target) in [
        (
            3,
            64,
            &base,
            "state-write, single host",
            Target::RatioAtLeast(0.3),
        ),
        (
            2,
            64,
            &base,
            "state-write, single host",
            Target::RatioAtLeast(0.3),
        ),
        (2, 1, &base_one, "one writer, single host", Target::None),
    ] {
        let b = if callers == 1 { one } else { budget };
        let m = replicated_measure(dir.path(), nodes, callers, b).await?;
        let case = if callers == 1 {
            format!("{nodes} nodes, 1 caller, 1 KiB")
        } else {
            format!("{nodes} nodes, {callers} actors, 1 KiB")
        };
        rows.push(Row::new("replicated-write", &case, &m, Some((label, base)), target).note(note));
    }
    Ok(rows)
}

/// The `__memory` child: activates `n` idle actors and prints one JSON line.
pub async fn memory_child(n: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = sqlite_host(&dir.path().join("memory.db")).await?;
    let svc = host.host.service();
    for i in 0..100 {
        svc.invoke(&actor(IDLE, format!("warm{i}")), "noop", Envelope::null())
            .await?;
    }
    let before = rss_bytes()?;
    let started = Instant::now();
    let s = svc.clone();
    let m = drive(64, Budget::new(n, Duration::from_secs(600)), move |_, i| {
        let s = s.clone();
        async move {
            s.invoke(&actor(IDLE, format!("m{i}")), "noop", Envelope::null())
                .await
                .map_err(err)?;
            Ok(())
        }
    })
    .await;
    let took = started.elapsed();
    let after = rss_bytes()?;
    let active = host.host.active_actors().len() as u64 - 100;
    let line = serde_json::json!({
        "n": n, "activated": m.ops, "errors": m.errors, "active": active,
        "rss_before": before, "rss_after": after, "secs": took.as_secs_f64(),
    });
    println!("{line}");
    std::io::stdout().flush()?;
    drop(dir);
    // Exit without deactivating every actor: the parent only wanted the figure.
    std::process::exit(0)
}

/// Resident set size of this process, from `/proc/self/statm` (resident pages) and the page
/// size (`/proc/self/smaps`' `KernelPageSize`, 4 KiB if absent).
fn rss_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("read /proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("malformed /proc/self/statm"))?
        .parse()?;
    Ok(pages * page_size())
}

fn page_size() -> u64 {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("KernelPageSize:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(4096, |kb| kb * 1024)
}

/// `memory`: N idle actors with empty state in a fresh process; bytes per actor from the RSS
/// delta.
pub async fn memory(sz: Sizes) -> anyhow::Result<Vec<Row>> {
    let n: u64 = sz.pick(100_000, 5_000);
    let n_text = n.to_string();
    let (mut child, out) = spawn_self(&["__memory", &n_text])?;
    let (line, _out) = read_line(out, Duration::from_secs(sz.pick(600, 90))).await?;
    child.finish(Duration::from_secs(5));
    let v: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("bad memory report `{line}`"))?;
    let get = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let (before, after) = (get("rss_before"), get("rss_after"));
    let active = get("active");
    let per_actor = (active > 0.0).then(|| (after - before) / active);
    let m = Measure {
        ops: get("activated") as u64,
        errors: get("errors") as u64,
        first_error: None,
        elapsed: Duration::from_secs_f64(get("secs")),
        latencies: Vec::new(),
    };
    Ok(vec![
        Row::new("memory", &format!("{n} idle actors"), &m, None, Target::None)
            .judge(Target::BytesAtMost(2048.0), per_actor)
            .note(format!(
                "judged = bytes per actor (RSS delta {:.1} MiB over {active} active actors, fresh process; includes the SQLite page cache for their placement rows); ops/s = activation rate",
                (after - before) / 1048576.0
            )),
    ])
}

/// Runs one scenario by name.
pub async fn run(name: &str, sz: Sizes) -> anyhow::Result<Vec<Row>> {
    match name {
        "invoke-local" => invoke_local(sz).await,
        "invoke-remote" => invoke_remote(sz).await,
        "state-write" => state_write(sz).await,
        "state-write-hot" => state_write_hot(sz).await,
        "activate" => activate(sz).await,
        "alarms" => alarms(sz).await,
        "replicated-write" => replicated_write(sz).await,
        "memory" => memory(sz).await,
        other => Err(anyhow!("unknown scenario {other}")),
    }
}
