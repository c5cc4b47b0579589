//! `cargo xtask bench [--quick] [--json PATH] [SCENARIO...]`: builds `francis-bench` in release
//! and runs it from the workspace root, streaming its output; its exit status is passed through.
//!
//! The scenario names are checked here first so a typo fails in a second rather than after a
//! release build. They mirror `benches/francis-bench/src/args.rs` (a test keeps the two equal:
//! xtask depends on no workspace crate).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Every scenario `francis-bench` knows, in the order it runs them.
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

/// The default results file, relative to the workspace root.
pub const DEFAULT_JSON: &str = "target/bench/results.json";

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// Small sizes (CI): every scenario in well under two minutes after the build.
    pub quick: bool,
    /// Where the JSON results go; relative paths are relative to the workspace root.
    pub json: PathBuf,
    /// The scenarios to run; empty means all.
    pub scenarios: Vec<String>,
}

/// Parses `bench`'s arguments; unknown options and scenarios are errors naming what is valid.
pub fn parse_options(args: &[String]) -> Result<BenchOptions, String> {
    let mut opts = BenchOptions {
        quick: false,
        json: PathBuf::from(DEFAULT_JSON),
        scenarios: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--json" => match it.next() {
                Some(path) if !path.is_empty() && !path.starts_with("--") => {
                    opts.json = PathBuf::from(path);
                }
                _ => return Err("`--json` needs a path".to_owned()),
            },
            other if other.starts_with('-') => {
                return Err(format!("unknown option `{other}` for `bench`"));
            }
            other if SCENARIOS.contains(&other) => opts.scenarios.push(other.to_owned()),
            other => {
                return Err(format!(
                    "unknown scenario `{other}`; valid scenarios: {}",
                    SCENARIOS.join(", ")
                ));
            }
        }
    }
    Ok(opts)
}

/// The arguments given to cargo: `run --release -p francis-bench -- ...`, with the JSON path
/// made absolute against `root`.
pub fn cargo_args(root: &Path, opts: &BenchOptions) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--release", "-p", "francis-bench", "--"]
        .map(String::from)
        .to_vec();
    if opts.quick {
        args.push("--quick".to_owned());
    }
    args.push("--json".to_owned());
    args.push(root.join(&opts.json).to_string_lossy().into_owned());
    args.extend(opts.scenarios.iter().cloned());
    args
}

/// Whether `name` is one of the variables `cargo run` sets for the program it runs (here:
/// xtask). They must not reach the inner cargo: build scripts such as ring's rerun when
/// `CARGO_PKG_NAME` or `CARGO_MANIFEST_DIR` change, so the release build would be redone on
/// every alternation between `cargo build --release` and `cargo xtask bench`.
pub fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || matches!(
            name,
            "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
        )
}

/// Runs the benchmark; returns its exit status (or an error if cargo could not be started).
pub fn run(root: &Path, opts: &BenchOptions) -> Result<i32, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_run) {
            command.env_remove(&name);
        }
    }
    let status = command
        .args(cargo_args(root, opts))
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_run_everything_into_target_bench() {
        let o = parse_options(&[]).unwrap();
        assert!(!o.quick);
        assert_eq!(o.json, PathBuf::from(DEFAULT_JSON));
        assert!(o.scenarios.is_empty());
        let args = cargo_args(Path::new("/r"), &o);
        assert_eq!(
            args,
            strings(&[
                "run",
                "--release",
                "-p",
                "francis-bench",
                "--",
                "--json",
                "/r/target/bench/results.json"
            ])
        );
    }

    #[test]
    fn options_and_scenarios_are_passed_on() {
        let o = parse_options(&strings(&[
            "--quick",
            "memory",
            "--json",
            "/tmp/x.json",
            "alarms",
        ]))
        .unwrap();
        assert!(o.quick);
        let args = cargo_args(Path::new("/r"), &o);
        assert_eq!(
            &args[5..],
            &strings(&["--quick", "--json", "/tmp/x.json", "memory", "alarms"])[..]
        );
    }

    #[test]
    fn unknown_scenarios_list_the_valid_ones() {
        let err = parse_options(&strings(&["invoke"])).unwrap_err();
        assert!(err.starts_with("unknown scenario `invoke`"), "{err}");
        for s in SCENARIOS {
            assert!(err.contains(s), "{err}");
        }
    }

    #[test]
    fn bad_options_are_refused() {
        assert_eq!(
            parse_options(&strings(&["--json"])).unwrap_err(),
            "`--json` needs a path"
        );
        assert_eq!(
            parse_options(&strings(&["--json", "--quick"])).unwrap_err(),
            "`--json` needs a path"
        );
        let err = parse_options(&strings(&["--fast"])).unwrap_err();
        assert!(err.contains("`--fast`"), "{err}");
    }

    #[test]
    fn the_variables_of_cargo_run_are_kept_from_the_inner_cargo() {
        for name in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "OUT_DIR",
        ] {
            assert!(set_by_cargo_run(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "PATH",
            "RUSTFLAGS",
        ] {
            assert!(!set_by_cargo_run(name), "{name}");
        }
    }

    #[test]
    fn the_scenario_list_matches_francis_bench() {
        let path = crate::project_root().join("benches/francis-bench/src/args.rs");
        let text = std::fs::read_to_string(&path).expect("francis-bench's args.rs");
        let start = text
            .find("pub const SCENARIOS")
            .expect("SCENARIOS in args.rs");
        let end = start + text[start..].find("];").expect("end of SCENARIOS");
        let theirs: Vec<&str> = text[start..end].split('"').skip(1).step_by(2).collect();
        assert_eq!(theirs, SCENARIOS.to_vec());
    }
}
