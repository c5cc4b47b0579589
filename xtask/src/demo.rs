//! `cargo xtask demo`: the two-worker local cluster, end to end, on
//! the real binaries, checking as it goes that everything the local-cluster guide promises holds.
//!
//! Standard library only: a tiny HTTP/1.1 client, a few JSON look-ups by key, and `kill` for
//! SIGTERM. Every worker process is killed if the demo fails or panics; Ctrl-C reaches the
//! workers too (they share the terminal's process group) and they shut down gracefully.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The idle timeout of `myactor`.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The demo's alarm interval (the local-cluster guide says 60s; the demo uses 2s to stay quick).
const ALARM_INTERVAL: &str = "2s";
/// How long a worker may take to become healthy.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// What `cargo xtask demo` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// Leave the workers running at the end and print the local-cluster guide's curl commands.
    pub keep: bool,
    /// The demo directory (default `target/demo`), emptied first.
    pub dir: Option<PathBuf>,
    /// `[worker1 http, worker2 http, worker1 host, worker2 host]`; the local cluster's by default.
    pub ports: [u16; 4],
    /// A worker binary to use instead of building one.
    pub worker_bin: Option<PathBuf>,
}

/// The local cluster's ports: control servers 8081/8082, actor hosts 7571/7572.
pub const SEED_PORTS: [u16; 4] = [8081, 8082, 7571, 7572];

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            keep: false,
            dir: None,
            ports: SEED_PORTS,
            worker_bin: None,
        }
    }
}

/// Parses `demo`'s arguments: `--keep`, `--dir PATH`, and (for tests) `--ports A,B,C,D` and
/// `--worker-bin PATH`.
pub fn parse_options(args: &[String]) -> Result<DemoOptions, String> {
    let mut opts = DemoOptions::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("`{name}` needs a value"))
        };
        match arg.as_str() {
            "--keep" => opts.keep = true,
            "--dir" => opts.dir = Some(PathBuf::from(value("--dir")?)),
            "--worker-bin" => opts.worker_bin = Some(PathBuf::from(value("--worker-bin")?)),
            "--ports" => {
                let raw = value("--ports")?;
                let ports: Vec<u16> = raw
                    .split(',')
                    .map(|p| p.trim().parse::<u16>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("`--ports` takes four port numbers, got `{raw}`"))?;
                opts.ports = ports
                    .try_into()
                    .map_err(|_| format!("`--ports` takes four port numbers, got `{raw}`"))?;
            }
            other => return Err(format!("`demo` does not take `{other}`")),
        }
    }
    Ok(opts)
}

/// One step of the demo: it checks what it shows, and says what went wrong.
type Step = fn(&mut Cluster) -> Result<(), String>;

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed(String),
    Skipped,
}

/// Runs the demo; `Ok(true)` when every check held.
pub fn run(root: &Path, opts: &DemoOptions) -> Result<bool, String> {
    let dir = opts.dir.clone().unwrap_or_else(|| root.join("target/demo"));
    let bin = match &opts.worker_bin {
        Some(bin) => bin.clone(),
        None => build_worker(root)?,
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
    }
    let mut cluster = Cluster::new(bin, &dir, opts.ports)?;
    println!(
        "\n== Starting the two workers of the local cluster in {} ==",
        dir.display()
    );
    let steps: [(&str, Step); 6] = [
        ("both workers start and become healthy", start_both),
        (
            "calls route to one owner per actor, counters continue",
            invoke_everywhere,
        ),
        ("the alarm fires, on exactly one host", alarm_fires_once),
        (
            "idle actors deactivate and come back with their state",
            idle_and_back,
        ),
        (
            "worker 2 restarts and every counter survives",
            restart_worker2,
        ),
        ("both workers shut down cleanly", |c| {
            if c.keep {
                return Ok(());
            }
            c.stop_all()
        }),
    ];
    cluster.keep = opts.keep;
    let mut results = Vec::new();
    let mut failed = false;
    for (name, step) in steps {
        if failed {
            results.push((name, Outcome::Skipped));
            continue;
        }
        println!("\n== {name} ==");
        match step(&mut cluster) {
            Ok(()) => results.push((name, Outcome::Passed)),
            Err(why) => {
                println!("!! {why}");
                cluster.show_log_tails();
                results.push((name, Outcome::Failed(why)));
                failed = true;
            }
        }
    }
    let ok = !failed;
    if ok && opts.keep {
        cluster.detach();
        print_keep_instructions(&cluster);
    }
    println!("\n== Summary ==");
    for (name, outcome) in &results {
        let mark = match outcome {
            Outcome::Passed => "passed ",
            Outcome::Failed(_) => "FAILED ",
            Outcome::Skipped => "skipped",
        };
        println!("  [{mark}] {name}");
    }
    println!("  logs: {}", dir.display());
    println!(
        "  {}",
        if ok {
            "everything the local-cluster guide describes held"
        } else {
            "the demo failed; see the log lines above"
        }
    );
    Ok(ok)
}

fn build_worker(root: &Path) -> Result<PathBuf, String> {
    println!("== Building the example worker (cargo build -p worker) ==");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "worker"])
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build -p worker failed ({status})"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug").join("worker"))
}

/// One worker process of the demo.
struct Worker {
    name: &'static str,
    dir: PathBuf,
    http: String,
    host: String,
    log: PathBuf,
    child: Option<Child>,
}

struct Cluster {
    bin: PathBuf,
    workers: [Worker; 2],
    peers: Option<String>,
    keep: bool,
    /// Which host served each of id1..id4 first.
    owners: Vec<String>,
}

impl Cluster {
    fn new(bin: PathBuf, dir: &Path, ports: [u16; 4]) -> Result<Cluster, String> {
        let make = |i: usize, name: &'static str| -> Result<Worker, String> {
            let wdir = dir.join(name);
            std::fs::create_dir_all(&wdir)
                .map_err(|e| format!("cannot create {}: {e}", wdir.display()))?;
            Ok(Worker {
                name,
                log: dir.join(format!("{name}.log")),
                dir: wdir,
                http: format!("127.0.0.1:{}", ports[i]),
                host: format!("127.0.0.1:{}", ports[2 + i]),
                child: None,
            })
        };
        // On the default addresses the workers need no -peers: it is their default.
        let peers =
            (ports != SEED_PORTS).then(|| format!("127.0.0.1:{},127.0.0.1:{}", ports[2], ports[3]));
        Ok(Cluster {
            bin,
            workers: [make(0, "worker1")?, make(1, "worker2")?],
            peers,
            keep: false,
            owners: Vec::new(),
        })
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        let w = &mut self.workers[i];
        for addr in [&w.http] {
            if TcpStream::connect(addr.as_str()).is_ok() {
                return Err(format!(
                    "{addr} is already in use: stop whatever listens there and run the demo again"
                ));
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&w.log)
            .map_err(|e| format!("cannot open {}: {e}", w.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-worker-address", &w.http, "-actor-host-address", &w.host]);
        if let Some(peers) = &self.peers {
            cmd.args(["-peers", peers]);
        }
        println!(
            "  cd {}/ && worker -worker-address {} -actor-host-address {}",
            w.name, w.http, w.host
        );
        let child = cmd
            .current_dir(&w.dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        w.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let w = &mut self.workers[i];
            if let Some(child) = &mut w.child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("{} exited early ({status})", w.name));
            }
            if let Ok(r) = request(&w.http, "GET", "/healthz", "")
                && r.status == 200
            {
                println!("  {} is healthy ({})", w.name, w.http);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} not healthy after {READY_DEADLINE:?}", w.name));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self, i: usize) -> Result<ExitStatus, String> {
        let w = &mut self.workers[i];
        let Some(mut child) = w.child.take() else {
            return Err(format!("{} is not running", w.name));
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{} did not stop within 30 s; killed it", w.name));
                }
            }
        }
    }

    fn stop_all(&mut self) -> Result<(), String> {
        for i in 0..2 {
            let status = self.stop(i)?;
            if !status.success() {
                return Err(format!("{} exited with {status}", self.workers[i].name));
            }
            println!("  {} stopped ({status})", self.workers[i].name);
        }
        Ok(())
    }

    fn show_log_tails(&self) {
        for w in &self.workers {
            let text = std::fs::read_to_string(&w.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            println!("--- last lines of {} ---", w.log.display());
            for line in &lines[lines.len().saturating_sub(15)..] {
                println!("  {line}");
            }
        }
    }

    fn log_lines(&self, i: usize, needles: &[&str]) -> Vec<String> {
        std::fs::read_to_string(&self.workers[i].log)
            .unwrap_or_default()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Leaves the workers running when the demo ends.
    fn detach(&mut self) {
        for w in &mut self.workers {
            w.child = None;
        }
    }

    fn invoke(&self, via: usize, id: &str, n: i64) -> Result<(i64, String), String> {
        let w = &self.workers[via];
        let r = request(
            &w.http,
            "POST",
            &format!("/invoke/myactor/{id}/increment"),
            &format!("{{\"In\": {n}}}"),
        )?;
        if r.status != 200 {
            return Err(format!("{id} via {}: HTTP {} {}", w.name, r.status, r.body));
        }
        let out = json_number(&r.body, "Out").ok_or_else(|| format!("no Out in {}", r.body))?;
        Ok((out, r.header("x-francis-host").unwrap_or_default()))
    }

    fn host_name(&self, address: &str) -> String {
        self.workers
            .iter()
            .find(|w| w.host == address)
            .map(|w| format!("{} ({address})", w.name))
            .unwrap_or_else(|| address.to_owned())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(mut child) = w.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn start_both(c: &mut Cluster) -> Result<(), String> {
    c.start(0)?;
    c.start(1)?;
    c.wait_ready(0)?;
    c.wait_ready(1)
}

fn invoke_everywhere(c: &mut Cluster) -> Result<(), String> {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "  {:<6} {:<10} {:<28} Out",
        "actor", "called via", "served by"
    );
    let mut owners = Vec::new();
    for (via, expected) in [(0, 42), (1, 84)] {
        for i in 1..=4 {
            let id = format!("id{i}");
            let (out, host) = c.invoke(via, &id, 42)?;
            let _ = writeln!(
                table,
                "  {:<6} {:<10} {:<28} {out}",
                id,
                c.workers[via].name,
                c.host_name(&host)
            );
            if out != expected {
                print!("{table}");
                return Err(format!("{id}: expected Out {expected}, got {out}"));
            }
            if via == 0 {
                owners.push(host);
            } else if owners[i - 1] != host {
                print!("{table}");
                return Err(format!(
                    "{id} was served by {} through worker 1 but by {host} through worker 2",
                    owners[i - 1]
                ));
            }
        }
    }
    print!("{table}");
    let mut distinct: std::collections::HashSet<String> = owners.iter().cloned().collect();
    // On the default addresses id1..id4 split 3/1; on other ports they may all land on one host,
    // so a few more actors show the spread.
    for i in 0..32 {
        if distinct.len() >= 2 {
            break;
        }
        let (_, host) = c.invoke(0, &format!("spread{i}"), 1)?;
        if !distinct.contains(&host) {
            println!("  spread{i} landed on {}", c.host_name(&host));
        }
        distinct.insert(host);
    }
    if distinct.len() < 2 {
        return Err("every actor landed on one host; placement should spread them".into());
    }
    println!("  each actor ran on one host whichever worker was called; both hosts own some");
    c.owners = owners;
    Ok(())
}

fn alarm_fires_once(c: &mut Cluster) -> Result<(), String> {
    let due = rfc3339(SystemTime::now());
    let body = format!(
        "{{\"dueTime\":\"{due}\",\"interval\":\"{ALARM_INTERVAL}\",\"ttl\":\"2028-10-08T10:00:02Z\",\"data\":{{\"Hello\":\"World\"}}}}"
    );
    println!(
        "  (the local-cluster guide repeats every 60s; the demo uses {ALARM_INTERVAL} to stay quick)"
    );
    println!(
        "  POST http://{}/alarm/myactor/actor1/alarm1 {body}",
        c.workers[0].http
    );
    let r = request(
        &c.workers[0].http,
        "POST",
        "/alarm/myactor/actor1/alarm1",
        &body,
    )?;
    if r.status != 204 {
        return Err(format!(
            "scheduling the alarm: HTTP {} {}",
            r.status, r.body
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(&c.workers[1].http, "GET", "/state/myactor/actor1", "")?;
        if r.status == 200 && json_number(&r.body, "alarms").unwrap_or(0) >= 2 {
            break;
        }
        if Instant::now() > deadline {
            return Err("the alarm did not fire twice within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = request(
        &c.workers[1].http,
        "DELETE",
        "/alarm/myactor/actor1/alarm1",
        "",
    )?;
    if r.status != 204 {
        return Err(format!("deleting the alarm: HTTP {} {}", r.status, r.body));
    }
    let mut fired_on = Vec::new();
    for i in 0..2 {
        let lines = c.log_lines(i, &["Actor received alarm", "actor1"]);
        for line in &lines {
            println!("  {}: {}", c.workers[i].name, short(line));
        }
        if !lines.is_empty() {
            fired_on.push(c.workers[i].name);
        }
    }
    if fired_on.len() != 1 {
        return Err(format!(
            "the alarm fired on {fired_on:?}; it must fire on exactly one host"
        ));
    }
    println!("  fired on {} only; deleted it again", fired_on[0]);
    Ok(())
}

fn idle_and_back(c: &mut Cluster) -> Result<(), String> {
    let last_call = Instant::now();
    for left in (1..=IDLE_TIMEOUT.as_secs()).rev() {
        print!(
            "\r  waiting out the {}s idle timeout: {left:>2}s ",
            IDLE_TIMEOUT.as_secs()
        );
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(1));
    }
    println!();
    let deadline = last_call + IDLE_TIMEOUT + Duration::from_secs(15);
    for i in 1..=4 {
        let id = format!("\"id{i}\"");
        loop {
            let lines: Vec<String> = (0..2)
                .flat_map(|w| c.log_lines(w, &["Actor deactivated", &id]))
                .collect();
            if let Some(line) = lines.first() {
                println!("  {}", short(line));
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("id{i} was not deactivated after the idle timeout"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for i in 1..=4 {
        let id = format!("id{i}");
        let (out, host) = c.invoke(0, &id, 42)?;
        println!("  {id}: Out {out}, re-activated on {}", c.host_name(&host));
        if out != 126 {
            return Err(format!(
                "{id}: expected Out 126 after re-activation, got {out}"
            ));
        }
    }
    Ok(())
}

fn restart_worker2(c: &mut Cluster) -> Result<(), String> {
    let status = c.stop(1)?;
    println!("  worker2 stopped ({status}); starting it again the same way");
    c.start(1)?;
    c.wait_ready(1)?;
    for i in 1..=4 {
        let id = format!("id{i}");
        let (out, host) = c.invoke(1, &id, 42)?;
        println!(
            "  {id}: Out {out} via worker2, served by {}",
            c.host_name(&host)
        );
        if out != 168 {
            return Err(format!(
                "{id}: expected Out 168 after the restart, got {out}"
            ));
        }
    }
    Ok(())
}

fn print_keep_instructions(c: &Cluster) {
    let (w1, w2) = (&c.workers[0].http, &c.workers[1].http);
    println!("\n== The workers keep running; try the local-cluster guide's commands ==");
    println!("  curl -X POST http://{w1}/invoke/myactor/id1/increment --data '{{\"In\": 42}}'");
    println!("  curl -X POST http://{w2}/invoke/myactor/id1/increment --data '{{\"In\": 42}}'");
    println!(
        "  curl -X POST http://{w1}/alarm/myactor/actor1/alarm1 \\\n    --data '{{\"dueTime\":\"'$(date -u +\"%Y-%m-%dT%H:%M:%SZ\")'\",\"interval\":\"60s\",\"ttl\":\"2028-10-08T10:00:02Z\",\"data\":{{\"Hello\":\"World\"}}}}'"
    );
    println!(
        "  logs: {} and {}",
        c.workers[0].log.display(),
        c.workers[1].log.display()
    );
    println!("  stop them with: pkill -f '{}'", c.bin.display());
}

/// A log line without its timestamp and module path, for display.
fn short(line: &str) -> &str {
    line.find("Actor").map_or(line, |i| &line[i..])
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// One HTTP/1.1 request with `Connection: close`.
fn request(addr: &str, method: &str, path: &str, body: &str) -> Result<Reply, String> {
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .map_err(|e| format!("{method} http://{addr}{path}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| format!("{method} http://{addr}{path}: {e}"))?;
    parse_reply(BufReader::new(stream)).map_err(|e| format!("{method} http://{addr}{path}: {e}"))
}

fn parse_reply(mut reader: impl BufRead) -> Result<Reply, String> {
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .map_err(|e| e.to_string())?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut body = String::new();
    reader
        .read_to_string(&mut body)
        .map_err(|e| e.to_string())?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// The integer value of `"key": n` in a flat JSON object.
fn json_number(json: &str, key: &str) -> Option<i64> {
    let needle = format!("\"{key}\"");
    let rest = &json[json.find(&needle)? + needle.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `t` as RFC 3339 UTC with whole seconds, e.g. `2026-11-27T17:30:00Z`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        assert_eq!(parse_options(&[]).unwrap(), DemoOptions::default());
        let args: Vec<String> = ["--keep", "--dir", "/tmp/d", "--ports", "1,2,3,4"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let o = parse_options(&args).unwrap();
        assert!(o.keep);
        assert_eq!(o.dir, Some(PathBuf::from("/tmp/d")));
        assert_eq!(o.ports, [1, 2, 3, 4]);
        assert!(parse_options(&["--ports".into(), "1,2".into()]).is_err());
        assert!(
            parse_options(&["--dir".into()])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            parse_options(&["--fast".into()])
                .unwrap_err()
                .contains("--fast")
        );
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_793_400), "2026-11-27T15:30:00Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn json_numbers_by_key() {
        assert_eq!(json_number(r#"{"Out":42}"#, "Out"), Some(42));
        assert_eq!(
            json_number(r#"{"counter": -3, "alarms": 7}"#, "alarms"),
            Some(7)
        );
        assert_eq!(json_number(r#"{"counter": -3}"#, "counter"), Some(-3));
        assert_eq!(json_number(r#"{"x":1}"#, "Out"), None);
    }

    #[test]
    fn replies_parse() {
        let raw = "HTTP/1.1 200 OK\r\nx-francis-host: 127.0.0.1:7571\r\ncontent-length: 10\r\n\r\n{\"Out\":42}";
        let r = parse_reply(raw.as_bytes()).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("X-Francis-Host").as_deref(),
            Some("127.0.0.1:7571")
        );
        assert_eq!(r.body, "{\"Out\":42}");
        assert!(parse_reply("garbage".as_bytes()).is_err());
    }
}
