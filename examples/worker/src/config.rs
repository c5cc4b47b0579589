//! The worker's command line, as the local-cluster guide writes it.
//!
//! Flags follow Go's `flag` package, which the local-cluster guide's commands were written for: one dash or
//! two (`-worker-address` = `--worker-address`), the value either as the next argument or after
//! `=`. A flag given twice keeps its last value. There are no positional arguments.

use std::path::PathBuf;

use crate::error::WorkerError;

/// Default `-worker-address`: where the HTTP control server listens.
pub const DEFAULT_WORKER_ADDRESS: &str = "127.0.0.1:8081";
/// Default `-actor-host-address`: the peer address the host advertises.
pub const DEFAULT_ACTOR_HOST_ADDRESS: &str = "127.0.0.1:7571";
/// Default `-data`: the SQLite file, relative to the working directory.
pub const DEFAULT_DATA: &str = "data.db";
/// The example's shared cluster key, used when neither `-runtime-psk` nor the environment sets one.
/// Fine for trying things out on one machine; anything real must set its own.
pub const EXAMPLE_RUNTIME_PSK: &str = "example-runtime-psk-change-me-please";
/// Environment variable read for the runtime PSK when `-runtime-psk` is not given.
pub const PSK_ENV: &str = "FRANCIS_RUNTIME_PSK";
/// Runtime PSKs shorter than this many bytes are refused (DESIGN.md section 6).
pub const MIN_PSK_LEN: usize = 32;

/// The log filter when `RUST_LOG` is not set: Francis's own lines (the worker's and every
/// `francis_*` crate's: a target matches by prefix) at `info`, other crates at `warn`, and the Raft library's internals
/// (which log every failed message to a stopped peer as an error) off, since the replicated
/// store logs what matters to an operator itself.
pub const DEFAULT_LOG_FILTER: &str = "warn,worker=info,francis=info,openraft=off";

/// How log lines are written (`-log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line: time, level, target, message and fields, and the spans the
    /// event happened in.
    Json,
}

/// What `-h` prints.
pub const USAGE: &str = "\
Usage: worker [flags]

Runs one Francis actor host serving the actor type `myactor`, with an HTTP control server.

Flags (one dash or two; `-flag value` or `-flag=value`):
  -worker-address HOST:PORT      HTTP control server address (default 127.0.0.1:8081)
  -actor-host-address HOST:PORT  peer address this host advertises to other hosts
                                 (default 127.0.0.1:7571)
  -actor-host-bind-address IP:PORT
                                 address the peer server binds, when it is not the advertised
                                 one (a container or NAT: e.g. 0.0.0.0:7571); default: the
                                 advertised address
  -data PATH|URL                 SQLite database file, created if missing (default data.db,
                                 in the working directory); or a postgres:// (postgresql://)
                                 URL: one PostgreSQL database shared by every worker (tables
                                 prefixed francis_, created if missing; no -peers)
  -peers ADDR,ADDR,...            the actor-host addresses of every worker of the cluster: each
                                 keeps its own data file and they replicate it with Raft
                                 (default: 127.0.0.1:7571,127.0.0.1:7572 when
                                 -actor-host-address is one of them, else none; '' for none:
                                 a plain SQLite file, which other workers may share)
  -store-only                    a replicated cluster's voter that hosts no actors: it keeps
                                 a copy of the data and votes, and routes calls it receives
                                 to the workers that host actors (needs -peers)
  -health-deadline DURATION      a host that cannot renew its lease for this long loses its
                                 actors to the other hosts (default 8s; e.g. 2s, PT5S)
  -runtime-psk KEY               shared cluster key, at least 32 bytes (default: the
                                 FRANCIS_RUNTIME_PSK environment variable, else the
                                 example key; change it for anything real)
  -log-format text|json          log lines as text (default) or one JSON object per line
  -h, -help                      print this help

Logs go to standard output; RUST_LOG filters them (default: Francis's own lines at info,
other libraries at warn, the Raft library's own logs off: RUST_LOG=info,openraft=info shows
them).
";

/// Where the runtime PSK came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PskSource {
    /// The `-runtime-psk` flag.
    Flag,
    /// The `FRANCIS_RUNTIME_PSK` environment variable.
    Environment,
    /// Neither: the example's key.
    Example,
}

/// A worker's settings. `Config::default()` has the documented defaults.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the HTTP control server listens (`host:port`; port 0 picks a free one).
    pub worker_address: String,
    /// The peer address the actor host advertises (`host:port`).
    pub actor_host_address: String,
    /// `-actor-host-bind-address`: the socket address the peer server binds, when it is not
    /// the advertised one.
    pub actor_host_bind_address: Option<std::net::SocketAddr>,
    /// The SQLite database file, or a `postgres://` / `postgresql://` URL
    /// (see [`Config::data_store`]).
    pub data: PathBuf,
    /// The replicated cluster's peer addresses (empty: a plain SQLite file).
    pub peers: Vec<String>,
    /// The host's health-check deadline (`None`: the host's default, 8 s).
    pub health_deadline: Option<std::time::Duration>,
    /// `-store-only`: register no actor type (a voter of the replicated store that hosts no
    /// actors).
    pub store_only: bool,
    /// The runtime PSK (at least [`MIN_PSK_LEN`] bytes). Never logged.
    pub runtime_psk: String,
    /// Where [`Config::runtime_psk`] came from.
    pub psk_source: PskSource,
    /// `-log-format`: text (default) or JSON lines.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            worker_address: DEFAULT_WORKER_ADDRESS.to_owned(),
            actor_host_address: DEFAULT_ACTOR_HOST_ADDRESS.to_owned(),
            actor_host_bind_address: None,
            data: PathBuf::from(DEFAULT_DATA),
            peers: default_peers(DEFAULT_ACTOR_HOST_ADDRESS),
            health_deadline: None,
            store_only: false,
            runtime_psk: EXAMPLE_RUNTIME_PSK.to_owned(),
            psk_source: PskSource::Example,
            log_format: LogFormat::Text,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("worker_address", &self.worker_address)
            .field("actor_host_address", &self.actor_host_address)
            .field("actor_host_bind_address", &self.actor_host_bind_address)
            .field("data", &self.data_for_logs())
            .field("peers", &self.peers)
            .field("health_deadline", &self.health_deadline)
            .field("store_only", &self.store_only)
            .field("runtime_psk", &"<redacted>")
            .field("psk_source", &self.psk_source)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run a worker with these settings.
    Run(Config),
    /// Print [`USAGE`] and exit successfully.
    Help,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    WorkerAddress,
    ActorHostAddress,
    ActorHostBindAddress,
    Data,
    Peers,
    HealthDeadline,
    StoreOnly,
    RuntimePsk,
    LogFormat,
}

impl Flag {
    fn from_name(name: &str) -> Option<Flag> {
        Some(match name {
            "worker-address" => Flag::WorkerAddress,
            "actor-host-address" => Flag::ActorHostAddress,
            "actor-host-bind-address" => Flag::ActorHostBindAddress,
            "data" => Flag::Data,
            "peers" => Flag::Peers,
            "health-deadline" => Flag::HealthDeadline,
            "store-only" => Flag::StoreOnly,
            "runtime-psk" => Flag::RuntimePsk,
            "log-format" => Flag::LogFormat,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Flag::WorkerAddress => "worker-address",
            Flag::ActorHostAddress => "actor-host-address",
            Flag::ActorHostBindAddress => "actor-host-bind-address",
            Flag::Data => "data",
            Flag::Peers => "peers",
            Flag::HealthDeadline => "health-deadline",
            Flag::StoreOnly => "store-only",
            Flag::RuntimePsk => "runtime-psk",
            Flag::LogFormat => "log-format",
        }
    }
}

/// Parses the arguments after the program name. `env_psk` is the value of
/// [`PSK_ENV`] (`None` when unset; an empty value counts as unset).
///
/// Every value is checked here, so a worker that parsed its flags fails later only for reasons
/// outside the command line (address in use, unreadable data file).
pub fn parse_args<I, S>(args: I, env_psk: Option<String>) -> Result<Command, WorkerError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut config = Config::default();
    let mut flag_psk = None;
    let mut flag_peers = None;
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        if arg == "--" {
            // Go's terminator: only positional arguments may follow, and there are none.
            if let Some(extra) = args.next() {
                return Err(WorkerError::UnexpectedArgument(extra));
            }
            break;
        }
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(WorkerError::UnexpectedArgument(arg));
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (body, None),
        };
        if name == "h" || name == "help" {
            return Ok(Command::Help);
        }
        let Some(flag) = Flag::from_name(name) else {
            return Err(WorkerError::UnknownFlag(arg));
        };
        // A boolean flag, as in Go: `-store-only`, or `-store-only=true|false`.
        if flag == Flag::StoreOnly {
            config.store_only = match inline.as_deref() {
                None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
                Some(other) => {
                    return Err(invalid(
                        flag,
                        format!("expected true or false, got {other:?}"),
                    ));
                }
            };
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or(WorkerError::MissingValue(flag.name()))?,
        };
        match flag {
            Flag::WorkerAddress => {
                check_address(flag, &value, true)?;
                config.worker_address = value;
            }
            Flag::ActorHostAddress => {
                check_address(flag, &value, false)?;
                config.actor_host_address = value;
            }
            Flag::ActorHostBindAddress => {
                let bind = value.parse().map_err(|_| {
                    invalid(
                        flag,
                        format!("expected IP:PORT (such as 0.0.0.0:7571), got {value:?}"),
                    )
                })?;
                config.actor_host_bind_address = Some(bind);
            }
            Flag::Data => {
                if value.trim().is_empty() {
                    return Err(invalid(flag, "expected a file path, got an empty value"));
                }
                config.data = PathBuf::from(value);
            }
            Flag::Peers => {
                let mut peers = Vec::new();
                for peer in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    check_address(flag, peer, false)?;
                    peers.push(peer.to_owned());
                }
                flag_peers = Some(peers);
            }
            Flag::HealthDeadline => {
                let d = francis_core::parse_duration(&value).map_err(|e| match e {
                    francis_core::Error::InvalidArgument { message, .. } => invalid(flag, message),
                    other => invalid(flag, other.to_string()),
                })?;
                config.health_deadline = Some(d);
            }
            Flag::RuntimePsk => flag_psk = Some(value),
            Flag::LogFormat => {
                config.log_format = match value.trim() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => {
                        return Err(invalid(
                            flag,
                            format!("expected text or json, got {other:?}"),
                        ));
                    }
                }
            }
            Flag::StoreOnly => unreachable!("a boolean flag takes no value"),
        }
    }
    let (psk, source) = match (flag_psk, env_psk.filter(|v| !v.is_empty())) {
        (Some(v), _) => (v, PskSource::Flag),
        (None, Some(v)) => (v, PskSource::Environment),
        (None, None) => (EXAMPLE_RUNTIME_PSK.to_owned(), PskSource::Example),
    };
    if psk.len() < MIN_PSK_LEN {
        let origin = match source {
            PskSource::Environment => format!(" (from {PSK_ENV})"),
            _ => String::new(),
        };
        return Err(invalid(
            Flag::RuntimePsk,
            format!(
                "the key{origin} is {} bytes long; it must be at least {MIN_PSK_LEN}",
                psk.len()
            ),
        ));
    }
    config.runtime_psk = psk;
    config.psk_source = source;
    config.peers = match (config.data_store(), flag_peers) {
        // a shared PostgreSQL database needs no replication between workers
        (DataStore::Postgres(_), Some(peers)) if !peers.is_empty() => {
            return Err(invalid(
                Flag::Peers,
                "a PostgreSQL -data is shared by every worker; -peers (Raft replication of \
                 SQLite files) cannot be combined with it",
            ));
        }
        (DataStore::Postgres(_), _) => Vec::new(),
        (DataStore::Sqlite(_), peers) => {
            peers.unwrap_or_else(|| default_peers(&config.actor_host_address))
        }
    };
    if config.store_only && config.peers.is_empty() {
        return Err(invalid(
            Flag::StoreOnly,
            "a store-only worker is a voter of a replicated cluster: give -peers (the \
             actor-host addresses of every worker, this one included)",
        ));
    }
    Ok(Command::Run(config))
}

/// Where a worker keeps its store, as `-data` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataStore {
    /// An SQLite database file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by every worker, by URL.
    Postgres(String),
}

/// Whether a `-data` value selects PostgreSQL: it starts with `postgres://` or
/// `postgresql://` (the scheme in any case). Anything else is an SQLite path.
pub fn is_postgres_url(value: &str) -> bool {
    ["postgres://", "postgresql://"].iter().any(|scheme| {
        value
            .get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
    })
}

/// `url` with the password of its authority, and of a `password=` parameter, shown as `***`.
fn redact_password(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i)
            && let Some(colon) = out[start..at].find(':').map(|i| start + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some((head, query)) = out.split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}?{}", query.join("&"));
    }
    out
}

impl Config {
    /// The store `-data` selects: a `postgres://` or `postgresql://` URL is PostgreSQL,
    /// anything else an SQLite file path.
    pub fn data_store(&self) -> DataStore {
        match self.data.to_str() {
            Some(text) if is_postgres_url(text) => DataStore::Postgres(text.to_owned()),
            _ => DataStore::Sqlite(self.data.clone()),
        }
    }

    /// `-data` as logs and messages show it: a PostgreSQL URL's password is replaced by `***`.
    pub fn data_for_logs(&self) -> String {
        match self.data_store() {
            DataStore::Postgres(url) => redact_password(&url),
            DataStore::Sqlite(path) => path.display().to_string(),
        }
    }
}

/// The two default actor-host addresses: its workers form one cluster with no flag at all.
pub const DEFAULT_PEERS: [&str; 2] = ["127.0.0.1:7571", "127.0.0.1:7572"];

/// Without `-peers`: the two-worker local cluster for a worker on one of the default addresses, otherwise
/// a plain (unreplicated) SQLite file.
pub fn default_peers(actor_host_address: &str) -> Vec<String> {
    if DEFAULT_PEERS.contains(&actor_host_address) {
        DEFAULT_PEERS.iter().map(|p| (*p).to_owned()).collect()
    } else {
        Vec::new()
    }
}

fn invalid(flag: Flag, reason: impl Into<String>) -> WorkerError {
    WorkerError::InvalidValue {
        flag: flag.name(),
        reason: reason.into(),
    }
}

/// `host:port` with a non-empty host and a numeric port; port 0 only where `allow_zero`.
fn check_address(flag: Flag, value: &str, allow_zero: bool) -> Result<(), WorkerError> {
    let expected = || format!("expected HOST:PORT such as 127.0.0.1:8081, got {value:?}");
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(invalid(flag, expected()));
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid(flag, expected()));
    }
    let port: u16 = port.parse().map_err(|_| invalid(flag, expected()))?;
    if port == 0 && !allow_zero {
        return Err(invalid(
            flag,
            format!("port 0 cannot be advertised to other hosts, got {value:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Config {
        match parse_args(args.iter().copied(), None) {
            Ok(Command::Run(c)) => c,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    fn fail(args: &[&str]) -> WorkerError {
        parse_args(args.iter().copied(), None).expect_err("should be refused")
    }

    #[test]
    fn defaults_are_the_seeds() {
        let c = run(&[]);
        assert_eq!(c.worker_address, "127.0.0.1:8081");
        assert_eq!(c.actor_host_address, "127.0.0.1:7571");
        assert_eq!(c.data, PathBuf::from("data.db"));
        assert_eq!(c.runtime_psk, EXAMPLE_RUNTIME_PSK);
        assert_eq!(c.psk_source, PskSource::Example);
        assert_eq!(c, Config::default());
    }

    #[test]
    fn peers_default_to_the_seeds_cluster_on_the_seeds_addresses() {
        assert_eq!(run(&[]).peers, DEFAULT_PEERS);
        assert_eq!(
            run(&["-actor-host-address", "127.0.0.1:7572"]).peers,
            DEFAULT_PEERS
        );
        assert!(
            run(&["-actor-host-address", "127.0.0.1:9999"])
                .peers
                .is_empty()
        );
        assert!(run(&["-peers", ""]).peers.is_empty());
        assert_eq!(
            run(&[
                "-peers",
                "10.0.0.1:1, 10.0.0.2:2",
                "-actor-host-address",
                "10.0.0.1:1"
            ])
            .peers,
            ["10.0.0.1:1", "10.0.0.2:2"]
        );
        let msg = fail(&["-peers", "a,nope"]).to_string();
        assert!(msg.contains("peers"), "{msg}");
    }

    #[test]
    fn store_only_is_a_boolean_flag_and_needs_peers() {
        assert!(!run(&[]).store_only);
        assert!(run(&["-store-only"]).store_only);
        assert!(run(&["--store-only=true", "-worker-address", "127.0.0.1:1"]).store_only);
        assert!(!run(&["-store-only=false"]).store_only);
        // it takes no value: the next argument is the next flag
        let c = run(&["-store-only", "-actor-host-address", "127.0.0.1:7572"]);
        assert!(c.store_only);
        assert_eq!(c.actor_host_address, "127.0.0.1:7572");
        let msg = fail(&["-store-only=maybe"]).to_string();
        assert!(msg.contains("store-only") && msg.contains("maybe"), "{msg}");
        let msg = fail(&["-store-only", "-peers", ""]).to_string();
        assert!(msg.contains("-peers"), "{msg}");
    }

    #[test]
    fn the_default_log_filter_keeps_francis_at_info_and_others_at_warn() {
        use tracing::Level;
        let f: tracing_subscriber::filter::Targets = DEFAULT_LOG_FILTER.parse().unwrap();
        for ours in [
            "worker",
            "worker::actor",
            "francis_host::runtime",
            "francis_replication::node",
        ] {
            assert!(f.would_enable(ours, &Level::INFO), "{ours}");
            assert!(!f.would_enable(ours, &Level::DEBUG), "{ours}");
        }
        for theirs in ["sqlx::query", "quinn::connection", "axum::serve", "hyper"] {
            assert!(!f.would_enable(theirs, &Level::INFO), "{theirs}");
            assert!(f.would_enable(theirs, &Level::WARN), "{theirs}");
        }
        assert!(!f.would_enable("openraft::core", &Level::ERROR));
    }

    #[test]
    fn the_peer_server_binds_the_advertised_address_unless_told_otherwise() {
        assert_eq!(run(&[]).actor_host_bind_address, None);
        let c = run(&[
            "-actor-host-address",
            "worker-1.internal:7571",
            "-actor-host-bind-address",
            "0.0.0.0:7571",
        ]);
        assert_eq!(c.actor_host_address, "worker-1.internal:7571");
        assert_eq!(
            c.actor_host_bind_address,
            Some("0.0.0.0:7571".parse().unwrap())
        );
        for bad in ["worker-1:7571", "0.0.0.0", ""] {
            let msg = fail(&["-actor-host-bind-address", bad]).to_string();
            assert!(
                msg.contains("actor-host-bind-address") && msg.contains("IP:PORT"),
                "{msg}"
            );
        }
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(run(&[]).log_format, LogFormat::Text);
        assert_eq!(run(&["-log-format", "json"]).log_format, LogFormat::Json);
        assert_eq!(run(&["--log-format=text"]).log_format, LogFormat::Text);
        let msg = fail(&["-log-format", "xml"]).to_string();
        assert!(
            msg.contains("log-format") && msg.contains("text or json"),
            "{msg}"
        );
    }

    #[test]
    fn health_deadline_takes_a_duration() {
        assert_eq!(run(&[]).health_deadline, None);
        let c = run(&["-health-deadline", "2s"]);
        assert_eq!(c.health_deadline, Some(std::time::Duration::from_secs(2)));
        let c = run(&["--health-deadline=PT1M"]);
        assert_eq!(c.health_deadline, Some(std::time::Duration::from_secs(60)));
        for bad in ["0s", "soon", "-5s", "5"] {
            let msg = fail(&["-health-deadline", bad]).to_string();
            assert!(msg.contains("health-deadline"), "{bad}: {msg}");
        }
        // A bare number once meant milliseconds (5 = 5 ms, a host fencing itself all the
        // time): now it is refused, saying how to write it.
        let msg = fail(&["-health-deadline", "5"]).to_string();
        assert!(msg.contains("has no unit") && msg.contains("5s"), "{msg}");
    }

    #[test]
    fn the_seeds_command_line_parses() {
        let c = run(&[
            "-worker-address",
            "127.0.0.1:8082",
            "-actor-host-address",
            "127.0.0.1:7572",
        ]);
        assert_eq!(c.worker_address, "127.0.0.1:8082");
        assert_eq!(c.actor_host_address, "127.0.0.1:7572");
    }

    #[test]
    fn one_or_two_dashes_and_inline_values() {
        let c = run(&[
            "--worker-address=localhost:9000",
            "-actor-host-address=[::1]:7000",
            "--data",
            "x/y.db",
            "-runtime-psk",
            "0123456789abcdef0123456789abcdef",
        ]);
        assert_eq!(c.worker_address, "localhost:9000");
        assert_eq!(c.actor_host_address, "[::1]:7000");
        assert_eq!(c.data, PathBuf::from("x/y.db"));
        assert_eq!(c.psk_source, PskSource::Flag);
        assert_eq!(c.runtime_psk, "0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn last_value_wins_and_terminator_is_accepted() {
        let c = run(&["-data", "a.db", "-data=b.db", "--"]);
        assert_eq!(c.data, PathBuf::from("b.db"));
    }

    #[test]
    fn help_in_any_spelling() {
        for h in ["-h", "--h", "-help", "--help"] {
            assert_eq!(
                parse_args([h], None).unwrap(),
                Command::Help,
                "{h} should ask for help"
            );
        }
        // Help wins even after other flags, like Go.
        assert_eq!(
            parse_args(["-data", "x.db", "-h"], None).unwrap(),
            Command::Help
        );
        assert!(USAGE.contains("-worker-address") && USAGE.contains(PSK_ENV));
    }

    #[test]
    fn psk_precedence_flag_then_env_then_example() {
        let env = "E".repeat(40);
        let flag = "F".repeat(32);
        match parse_args(["-runtime-psk", flag.as_str()], Some(env.clone())).unwrap() {
            Command::Run(c) => {
                assert_eq!(c.runtime_psk, flag);
                assert_eq!(c.psk_source, PskSource::Flag);
            }
            other => panic!("{other:?}"),
        }
        match parse_args(Vec::<String>::new(), Some(env.clone())).unwrap() {
            Command::Run(c) => {
                assert_eq!(c.runtime_psk, env);
                assert_eq!(c.psk_source, PskSource::Environment);
            }
            other => panic!("{other:?}"),
        }
        match parse_args(Vec::<String>::new(), Some(String::new())).unwrap() {
            Command::Run(c) => assert_eq!(c.psk_source, PskSource::Example),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_psks_are_refused_without_echoing_them() {
        let err = fail(&["-runtime-psk", "tooshort-secret"]);
        let msg = err.to_string();
        assert!(msg.contains("-runtime-psk") && msg.contains("32"), "{msg}");
        assert!(!msg.contains("tooshort-secret"), "{msg}");
        assert_eq!(err.exit_code(), 2);

        let err = parse_args(Vec::<String>::new(), Some("short-env-secret".into())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(PSK_ENV), "{msg}");
        assert!(!msg.contains("short-env-secret"), "{msg}");
    }

    #[test]
    fn unknown_flags_and_positionals_are_refused() {
        let err = fail(&["-replicas", "a,b"]);
        assert!(
            matches!(&err, WorkerError::UnknownFlag(f) if f == "-replicas"),
            "{err}"
        );
        assert!(matches!(fail(&["-"]), WorkerError::UnknownFlag(_)));
        assert!(matches!(fail(&["serve"]), WorkerError::UnexpectedArgument(a) if a == "serve"));
        assert!(
            matches!(fail(&["--", "extra"]), WorkerError::UnexpectedArgument(a) if a == "extra")
        );
        for err in [fail(&["-peers"]), fail(&["serve"])] {
            assert_eq!(err.exit_code(), 2);
            assert!(err.is_usage());
        }
    }

    #[test]
    fn missing_values_are_refused() {
        for flag in [
            "-worker-address",
            "--actor-host-address",
            "-data",
            "-runtime-psk",
        ] {
            let err = fail(&[flag]);
            assert!(matches!(err, WorkerError::MissingValue(_)), "{flag}: {err}");
            assert!(err.to_string().contains(flag.trim_start_matches('-')));
        }
    }

    #[test]
    fn bad_addresses_name_the_flag_and_the_value() {
        for bad in [
            "8081",
            "127.0.0.1",
            ":8081",
            "127.0.0.1:",
            "127.0.0.1:http",
            "h:70000",
            "a b:1",
        ] {
            let err = fail(&["-worker-address", bad]);
            let msg = err.to_string();
            assert!(
                msg.contains("-worker-address") && msg.contains(bad),
                "{bad}: {msg}"
            );
        }
        // The control server may pick a free port; the advertised address may not.
        assert_eq!(
            run(&["-worker-address", "127.0.0.1:0"]).worker_address,
            "127.0.0.1:0"
        );
        let err = fail(&["-actor-host-address", "127.0.0.1:0"]);
        assert!(err.to_string().contains("-actor-host-address"), "{err}");
    }

    #[test]
    fn postgres_urls_select_postgresql_and_anything_else_is_a_sqlite_path() {
        for url in [
            "postgres://francis@db:5432/app",
            "postgresql://u:pw@10.0.0.5/app?sslmode=disable",
            "POSTGRES://h/d",
        ] {
            let c = run(&["-data", url]);
            assert_eq!(c.data_store(), DataStore::Postgres(url.to_owned()), "{url}");
            assert!(
                c.peers.is_empty(),
                "{url}: a shared database needs no peers"
            );
        }
        // even on the default address (whose default is the local cluster's Raft group)
        let c = run(&[
            "-actor-host-address",
            "127.0.0.1:7571",
            "-data=postgres://h/d",
        ]);
        assert!(c.peers.is_empty());
        assert_eq!(c.data_store(), DataStore::Postgres("postgres://h/d".into()));
        for path in [
            "data.db",
            "postgres.db",
            "postgres:/x",
            "./postgres://x",
            "sqlite:a.db",
        ] {
            let c = run(&["-data", path]);
            assert_eq!(
                c.data_store(),
                DataStore::Sqlite(PathBuf::from(path)),
                "{path}"
            );
        }
        assert_eq!(run(&[]).data_store(), DataStore::Sqlite("data.db".into()));
    }

    #[test]
    fn postgres_data_refuses_peers() {
        let err = fail(&["-data", "postgres://h/d", "-peers", "127.0.0.1:7000"]);
        let msg = err.to_string();
        assert!(
            msg.contains("-peers") && msg.contains("PostgreSQL"),
            "{msg}"
        );
        assert_eq!(err.exit_code(), 2);
        // an explicitly empty -peers is fine
        assert!(
            run(&["-data", "postgres://h/d", "-peers", ""])
                .peers
                .is_empty()
        );
    }

    #[test]
    fn postgres_passwords_stay_out_of_logs() {
        let c = run(&[
            "-data",
            "postgres://francis:s3cr3t@db:5432/app?password=other&application_name=w",
        ]);
        let shown = c.data_for_logs();
        assert_eq!(
            shown,
            "postgres://francis:***@db:5432/app?password=***&application_name=w"
        );
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cr3t") && !debug.contains("other"),
            "{debug}"
        );
        assert_eq!(run(&["-data", "x/y.db"]).data_for_logs(), "x/y.db");
        assert_eq!(
            run(&["-data", "postgres://u@h/d"]).data_for_logs(),
            "postgres://u@h/d"
        );
    }

    #[test]
    fn empty_data_path_is_refused() {
        let err = fail(&["-data="]);
        assert!(err.to_string().contains("-data"), "{err}");
    }
}
