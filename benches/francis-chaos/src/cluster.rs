//! Worker processes: started on free ports in their own directories, signalled (kill -9,
//! SIGSTOP/SIGCONT, SIGTERM), restarted on the same ports and data, and always killed when the
//! suite ends, panics or is interrupted.
//!
//! Workers run in their own process group, so a Ctrl-C at the terminal reaches only the suite,
//! which then kills every worker it started (see [`kill_all`]).

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal, kill_process};

/// The cluster key given to every worker with `-runtime-psk`.
pub const PSK: &str = "francis-chaos-runtime-psk-0123456789abcdef";

/// Pids of every worker process still running, for [`kill_all`].
static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn running() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills (SIGKILL) every worker process this suite started that is still running. Called on
/// Ctrl-C and at exit; harmless when there is none.
pub fn kill_all() {
    for pid in std::mem::take(&mut *running()) {
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the worker to take).
pub fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free UDP port on 127.0.0.1, for a worker's peer (QUIC) address.
pub fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Settings shared by a cluster's workers.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `worker` binary.
    pub binary: PathBuf,
    /// Every worker's `-actor-host-address`, in order (the `-peers` list).
    pub peers: Vec<String>,
    /// `-health-deadline` in seconds, if not the default.
    pub health_deadline_s: Option<u64>,
}

/// State of one worker's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// Running and not paused.
    Running,
    /// Stopped with SIGSTOP.
    Paused,
    /// Not running (never started, killed, or exited after SIGTERM).
    Down,
}

/// One worker: its addresses, directory, log and (while it runs) its process.
#[derive(Debug)]
pub struct WorkerProc {
    /// Position in the cluster.
    pub index: usize,
    /// `-worker-address` (HTTP).
    pub http_address: String,
    /// `-actor-host-address` (QUIC peer port), also what `x-francis-host` names.
    pub host_address: String,
    /// Its directory: `data.db`, `data.db-raft`, `worker.log`.
    pub dir: PathBuf,
    /// stdout and stderr of every run of the process, appended.
    pub log: PathBuf,
    child: Option<Child>,
    state: ProcState,
    /// How many times it was started.
    pub starts: u32,
    /// Set before the suite stops the worker itself (SIGTERM): its exit is then expected.
    pub expect_exit: bool,
    /// How its last run ended, once reaped.
    pub last_exit: Option<ExitStatus>,
}

impl WorkerProc {
    /// A worker in `dir` (created) with these addresses; not started yet.
    pub fn new(index: usize, dir: PathBuf, http_address: String, host_address: String) -> Self {
        WorkerProc {
            index,
            log: dir.join("worker.log"),
            dir,
            http_address,
            host_address,
            child: None,
            state: ProcState::Down,
            starts: 0,
            expect_exit: false,
            last_exit: None,
        }
    }

    /// The data file (`-data`).
    pub fn data_file(&self) -> PathBuf {
        self.dir.join("data.db")
    }

    /// What the process is doing, as far as the suite made it.
    pub fn state(&self) -> ProcState {
        self.state
    }

    /// Starts the process (it must be down).
    pub fn start(&mut self, config: &ClusterConfig) -> Result<()> {
        anyhow::ensure!(self.child.is_none(), "worker {} already runs", self.index);
        std::fs::create_dir_all(&self.dir)?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        writeln!(log, "==== francis-chaos: start #{} ====", self.starts + 1)?;
        let err = log.try_clone()?;
        let mut command = Command::new(&config.binary);
        command
            .arg("-worker-address")
            .arg(&self.http_address)
            .arg("-actor-host-address")
            .arg(&self.host_address)
            .arg("-data")
            .arg(self.data_file())
            .arg("-peers")
            .arg(config.peers.join(","))
            .arg("-runtime-psk")
            .arg(PSK);
        if let Some(s) = config.health_deadline_s {
            command.arg("-health-deadline").arg(format!("{s}s"));
        }
        let child = command
            .current_dir(&self.dir)
            .env("RUST_LOG", "info")
            .env_remove("FRANCIS_RUNTIME_PSK")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {}", config.binary.display()))?;
        running().insert(child.id() as i32);
        self.child = Some(child);
        self.state = ProcState::Running;
        self.starts += 1;
        self.expect_exit = false;
        self.last_exit = None;
        Ok(())
    }

    fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(|c| Pid::from_raw(c.id() as i32))
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self.pid().context("worker is not running")?;
        kill_process(pid, signal).with_context(|| format!("signal worker {}", self.index))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            running().remove(&(child.id() as i32));
            let _ = child.kill();
            child.wait()?;
        }
        self.state = ProcState::Down;
        Ok(())
    }

    /// SIGSTOP.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(Signal::STOP)?;
        self.state = ProcState::Paused;
        Ok(())
    }

    /// SIGCONT (only if paused).
    pub fn resume(&mut self) -> Result<()> {
        if self.state == ProcState::Paused {
            self.signal(Signal::CONT)?;
            self.state = ProcState::Running;
        }
        Ok(())
    }

    /// SIGTERM (continuing it first if paused).
    pub fn terminate(&mut self) -> Result<()> {
        self.resume()?;
        self.signal(Signal::TERM)
    }

    /// The exit status, if the process exited (reaped; the worker is then down).
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let Some(status) = child.try_wait()? else {
            return Ok(None);
        };
        running().remove(&(child.id() as i32));
        self.child = None;
        self.state = ProcState::Down;
        self.last_exit = Some(status);
        Ok(Some(status))
    }

    /// Whether a process is attached (running or paused).
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Everything the worker logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Workers of one cluster, with their shared settings.
#[derive(Debug)]
pub struct Cluster {
    /// Shared settings.
    pub config: ClusterConfig,
    /// The workers, by index.
    pub workers: Vec<WorkerProc>,
}

impl Cluster {
    /// Plans `n` workers on free ports under `root/worker-{i}`; none started.
    pub fn new(
        binary: &Path,
        root: &Path,
        n: usize,
        health_deadline_s: Option<u64>,
    ) -> Result<Self> {
        let mut workers = Vec::new();
        for index in 0..n {
            workers.push(WorkerProc::new(
                index,
                root.join(format!("worker-{index}")),
                format!("127.0.0.1:{}", free_tcp_port()?),
                format!("127.0.0.1:{}", free_udp_port()?),
            ));
        }
        Ok(Cluster {
            config: ClusterConfig {
                binary: binary.to_owned(),
                peers: workers.iter().map(|w| w.host_address.clone()).collect(),
                health_deadline_s,
            },
            workers,
        })
    }

    /// Starts every worker that is down.
    pub fn start_all(&mut self) -> Result<()> {
        for w in &mut self.workers {
            if !w.is_up() {
                w.start(&self.config)?;
            }
        }
        Ok(())
    }
}
