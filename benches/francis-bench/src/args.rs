//! The command line: `francis-bench [--quick] [--json PATH] [SCENARIO...]`, plus the internal
//! child modes the harness spawns of itself.

use std::path::PathBuf;

/// Every scenario, in the order they run.
pub const SCENARIOS: &[&str] = &[
    "invoke-local",
    "invoke-remote",
    "state-write",
    "state-write-hot",
    "activate",
    "alarms",
    "replicated-write",
    "memory",
];

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Small sizes so the whole run takes well under two minutes.
    pub quick: bool,
    /// Where the JSON results go.
    pub json: PathBuf,
    /// The scenarios to run, in [`SCENARIOS`] order, without duplicates.
    pub scenarios: Vec<&'static str>,
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run scenarios.
    Run(RunOptions),
    /// Print usage.
    Help,
    /// Internal: serve host B (and the raw echo endpoint) for `invoke-remote`.
    Serve {
        /// The shared SQLite file.
        db: PathBuf,
        /// Host B's peer address.
        host_addr: String,
        /// The raw echo endpoint's address.
        echo_addr: String,
    },
    /// Internal: activate `n` idle actors in a fresh process and report bytes per actor.
    MemoryChild {
        /// How many actors.
        n: u64,
    },
}

/// The default JSON path, relative to the working directory (`cargo xtask bench` runs from the
/// workspace root).
pub const DEFAULT_JSON: &str = "target/bench/results.json";

pub const USAGE: &str = "\
usage: francis-bench [--quick] [--json PATH] [SCENARIO...]

Runs each scenario beside its baseline and prints a table; writes JSON (default
target/bench/results.json). No scenario named: all of them.

scenarios: invoke-local invoke-remote state-write state-write-hot activate alarms replicated-write memory

FRANCIS_BENCH_METRICS=1 records the hosts' metrics into a Prometheus recorder (as the worker
does), to compare with a run without one. FRANCIS_BENCH_TRACING=1 (or fmt) installs a tracing
subscriber that keeps Francis's spans and formats their fields as a log subscriber does (filter
warn,francis=info; nothing is written or exported); FRANCIS_BENCH_TRACING=spans keeps the spans
without formatting them (the cost of the spans alone).
";

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    match args.first().map(String::as_str) {
        Some("__serve") => return parse_serve(&args[1..]),
        Some("__memory") => {
            let n = args
                .get(1)
                .ok_or("__memory needs a count")?
                .parse::<u64>()
                .map_err(|e| format!("bad count: {e}"))?;
            return Ok(Command::MemoryChild { n });
        }
        _ => {}
    }
    let mut quick = false;
    let mut json = PathBuf::from(DEFAULT_JSON);
    let mut named: Vec<&'static str> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "--quick" => quick = true,
            "--json" => {
                let path = it.next().ok_or("`--json` needs a path")?;
                if path.is_empty() || path.starts_with("--") {
                    return Err(format!("`--json` needs a path, got `{path}`"));
                }
                json = PathBuf::from(path);
            }
            other if other.starts_with('-') => return Err(format!("unknown option `{other}`")),
            other => match SCENARIOS.iter().find(|s| **s == other) {
                Some(s) => named.push(s),
                None => {
                    return Err(format!(
                        "unknown scenario `{other}`; valid scenarios: {}",
                        SCENARIOS.join(", ")
                    ));
                }
            },
        }
    }
    let scenarios = if named.is_empty() {
        SCENARIOS.to_vec()
    } else {
        SCENARIOS
            .iter()
            .copied()
            .filter(|s| named.contains(s))
            .collect()
    };
    Ok(Command::Run(RunOptions {
        quick,
        json,
        scenarios,
    }))
}

fn parse_serve(args: &[String]) -> Result<Command, String> {
    match args {
        [db, host_addr, echo_addr] => Ok(Command::Serve {
            db: PathBuf::from(db),
            host_addr: host_addr.clone(),
            echo_addr: echo_addr.clone(),
        }),
        _ => Err("__serve needs DB HOST_ADDR ECHO_ADDR".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_list(list: &[&str]) -> Result<Command, String> {
        parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn run(list: &[&str]) -> RunOptions {
        match parse_list(list).unwrap() {
            Command::Run(o) => o,
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn no_arguments_run_everything_with_the_default_json() {
        let o = run(&[]);
        assert!(!o.quick);
        assert_eq!(o.json, PathBuf::from(DEFAULT_JSON));
        assert_eq!(o.scenarios, SCENARIOS.to_vec());
    }

    #[test]
    fn named_scenarios_run_in_canonical_order_once() {
        let o = run(&[
            "memory",
            "--quick",
            "invoke-local",
            "memory",
            "--json",
            "x.json",
        ]);
        assert!(o.quick);
        assert_eq!(o.json, PathBuf::from("x.json"));
        assert_eq!(o.scenarios, vec!["invoke-local", "memory"]);
    }

    #[test]
    fn unknown_scenarios_list_the_valid_ones() {
        let err = parse_list(&["invoke-locale"]).unwrap_err();
        assert!(err.contains("unknown scenario `invoke-locale`"), "{err}");
        for s in SCENARIOS {
            assert!(err.contains(s), "{err}");
        }
    }

    #[test]
    fn bad_options_are_errors() {
        assert!(
            parse_list(&["--json"])
                .unwrap_err()
                .contains("needs a path")
        );
        assert!(
            parse_list(&["--json", "--quick"])
                .unwrap_err()
                .contains("needs a path")
        );
        assert!(parse_list(&["--fast"]).unwrap_err().contains("`--fast`"));
        assert!(parse_list(&["__memory"]).is_err());
        assert!(parse_list(&["__memory", "x"]).is_err());
        assert!(parse_list(&["__serve", "a"]).is_err());
    }

    #[test]
    fn help_and_child_modes() {
        assert_eq!(parse_list(&["--help"]).unwrap(), Command::Help);
        assert_eq!(
            parse_list(&["__memory", "12"]).unwrap(),
            Command::MemoryChild { n: 12 }
        );
        assert_eq!(
            parse_list(&["__serve", "d.db", "127.0.0.1:1", "127.0.0.1:2"]).unwrap(),
            Command::Serve {
                db: PathBuf::from("d.db"),
                host_addr: "127.0.0.1:1".into(),
                echo_addr: "127.0.0.1:2".into(),
            }
        );
    }
}
