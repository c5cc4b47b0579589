//! Starting the cargo-built `worker` binary on free ports, and talking HTTP to it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Generous bound on waiting for a worker to come up or go down (debug build, loaded machine).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(50);

/// A free TCP port on 127.0.0.1 (bound, then released for the worker to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A free UDP port on 127.0.0.1, for a host's peer (QUIC) address.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral UDP port")
        .port()
}

/// A replicated cluster of workers on loopback: free ports and a directory each (under a root),
/// all of them in `-peers`.
pub struct Cluster {
    /// `(http, actor host)` port of each worker.
    pub ports: Vec<(u16, u16)>,
    /// Every worker's actor-host address, comma-separated (the `-peers` value).
    pub peers: String,
    /// Each worker's working directory.
    pub dirs: Vec<PathBuf>,
}

impl Cluster {
    /// Plans `n` workers under `root` (nothing is started).
    pub fn new(root: &Path, n: usize) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_udp_port())).collect();
        let peers = ports
            .iter()
            .map(|(_, udp)| format!("127.0.0.1:{udp}"))
            .collect::<Vec<_>>()
            .join(",");
        let dirs = (0..n)
            .map(|i| {
                let dir = root.join(format!("worker{i}"));
                std::fs::create_dir_all(&dir).expect("create a worker directory");
                dir
            })
            .collect();
        Cluster { ports, peers, dirs }
    }

    /// Worker `i`'s actor-host address.
    pub fn address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i].1)
    }

    /// Starts worker `i` (again) on its ports and directory, with every worker in `-peers`.
    pub fn start(&self, i: usize, extra: &[&str]) -> Worker {
        self.start_with_peers(i, &self.peers, extra)
    }

    /// Starts worker `i` with the given `-peers`.
    pub fn start_with_peers(&self, i: usize, peers: &str, extra: &[&str]) -> Worker {
        let mut flags = vec!["-peers", peers];
        flags.extend_from_slice(extra);
        let (http, host) = self.ports[i];
        Worker::start_on(&self.dirs[i], http, host, &flags)
    }

    /// Starts every worker and waits until each serves.
    pub async fn start_all(&self) -> Vec<Worker> {
        let mut workers: Vec<Worker> = (0..self.ports.len()).map(|i| self.start(i, &[])).collect();
        for w in &mut workers {
            w.wait_ready().await;
        }
        workers
    }
}

/// The replicated store's members as `/healthz` reports them, sorted (empty when it does not
/// answer 200).
pub async fn store_members(http: &Http) -> Vec<String> {
    match http.try_send(Method::GET, "/healthz", Bytes::new()).await {
        Ok(r) if r.status == StatusCode::OK => {
            let mut m: Vec<String> = r.json()["store"]["members"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            m.sort();
            m
        }
        _ => Vec::new(),
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A running `worker` child process, killed (and its log printed) if a test fails.
pub struct Worker {
    child: Option<Child>,
    /// The working directory (where `data.db` goes by default).
    pub dir: PathBuf,
    /// `-worker-address`.
    pub worker_address: String,
    /// `-actor-host-address`: what `x-francis-host` should say.
    pub host_address: String,
    /// stdout and stderr of the child.
    pub log: PathBuf,
    /// A client for the control server.
    pub http: Http,
}

impl Worker {
    /// Starts the worker in `dir` on fresh free ports, with `extra` flags appended.
    pub fn start(dir: &Path, extra: &[&str]) -> Worker {
        Self::start_on(dir, free_port(), free_udp_port(), extra)
    }

    /// Starts the worker in `dir` on a free HTTP port and the actor-host port `host_port`,
    /// with `extra` flags appended and without `RUST_LOG`, so it logs with its default filter.
    pub fn start_with_default_logs(dir: &Path, host_port: u16, extra: &[&str]) -> Worker {
        Self::start_logging(dir, free_port(), host_port, extra, None)
    }

    /// Starts the worker in `dir` with the given ports.
    pub fn start_on(dir: &Path, http_port: u16, host_port: u16, extra: &[&str]) -> Worker {
        Self::start_logging(dir, http_port, host_port, extra, Some("info"))
    }

    /// Starts the worker in `dir` on fresh free ports with its default log filter and these
    /// environment variables.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        Self::start_full(dir, free_port(), free_udp_port(), extra, None, env)
    }

    fn start_logging(
        dir: &Path,
        http_port: u16,
        host_port: u16,
        extra: &[&str],
        rust_log: Option<&str>,
    ) -> Worker {
        Self::start_full(dir, http_port, host_port, extra, rust_log, &[])
    }

    fn start_full(
        dir: &Path,
        http_port: u16,
        host_port: u16,
        extra: &[&str],
        rust_log: Option<&str>,
        env: &[(&str, &str)],
    ) -> Worker {
        let worker_address = format!("127.0.0.1:{http_port}");
        let host_address = format!("127.0.0.1:{host_port}");
        let log = dir.join(format!("worker-{http_port}.log"));
        let out = std::fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        // The local-cluster guide's spelling, single dash.
        let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
        command
            .args(["-worker-address", &worker_address])
            .args(["-actor-host-address", &host_address])
            .args(extra)
            .current_dir(dir)
            .env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        clear_otel(&mut command);
        command.envs(env.iter().copied());
        let child = command
            .env_remove(worker::PSK_ENV)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the worker binary");
        Worker {
            child: Some(child),
            dir: dir.to_owned(),
            http: Http::new(&worker_address),
            worker_address,
            host_address,
            log,
        }
    }

    /// The child's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the log has at least `count` lines containing all of `needles`.
    pub async fn wait_for_log(&self, needles: &[&str], count: usize) -> Vec<String> {
        let what = format!("{count} log line(s) with {needles:?}");
        eventually(&what, DEADLINE, || async {
            let lines = self.log_lines(needles);
            (lines.len() >= count).then_some(lines)
        })
        .await
    }

    /// Waits until `/healthz` answers 200; panics (with the log) if the child exits first.
    pub async fn wait_ready(&mut self) {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "worker exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            let health = self
                .http
                .try_send(Method::GET, "/healthz", Bytes::new())
                .await;
            if let Ok(r) = health
                && r.status == StatusCode::OK
            {
                assert_eq!(r.json()["status"], "serving");
                assert_eq!(r.json()["host"], self.host_address.as_str());
                return;
            }
            assert!(
                Instant::now() < end,
                "worker not healthy after {DEADLINE:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let child = self.child.as_ref().expect("worker still running");
        let pid = rustix::process::Pid::from_child(child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the child"))
    }

    /// Waits for the child to exit, panicking after `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.try_exit_status() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < end,
                "worker still running {deadline:?} later; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Worker {
    /// Kills the process at once (SIGKILL): no graceful shutdown, nothing released.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill the worker");
            child.wait().expect("reap the worker");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- worker log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} answered a body that is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `code` of an error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    /// The `error` message of an error body.
    pub fn message(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_owned())
    }

    /// Asserts an error answer: status, code, and the message containing `words`.
    pub fn assert_error(&self, status: u16, code: &str, words: &[&str]) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        let message = self.message();
        for w in words {
            assert!(
                message.contains(w),
                "message {message:?} should contain {w:?}"
            );
        }
    }
}

/// A plain-HTTP/1.1 client for one worker.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    pub fn new(address: &str) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{address}"),
        }
    }

    /// Sends a request, returning transport errors.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        self.try_send_with(method, path, body, &[]).await
    }

    /// Sends a request with extra `headers`, returning transport errors.
    pub async fn try_send_with(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body.into()))
            .map_err(|e| e.to_string())?;
        let answer = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(Reply {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(60), answer)
            .await
            .map_err(|_| format!("no answer to {path} within 60 s"))?
    }

    /// Sends a request; panics on transport errors.
    pub async fn send(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("request to {path} failed: {e}"))
    }

    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.send(Method::POST, path, body).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Bytes::new()).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, Bytes::new()).await
    }
}

/// Runs the binary to completion with `args` in `dir` (for flag errors and `-h`).
/// Keeps the developer's own OpenTelemetry settings out of a worker started by a test.
fn clear_otel(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            command.env_remove(&name);
        }
    }
}

pub fn run_to_exit(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    clear_otel(&mut cmd);
    cmd.args(args)
        .current_dir(dir)
        .env_remove(worker::PSK_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn the worker binary");
    let end = Instant::now() + DEADLINE;
    while child.try_wait().expect("poll the child").is_none() {
        if Instant::now() >= end {
            let _ = child.kill();
            panic!("worker {args:?} did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(POLL);
    }
    child.wait_with_output().expect("collect output")
}
