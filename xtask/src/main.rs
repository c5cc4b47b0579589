//! Project automation for Francis, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! Commands:
//! - `bench`: the benchmarks (`francis-bench`, release build), each beside its baseline.
//! - `chaos`: the fault-injection suite (`francis-chaos`) over real worker clusters.
//! - `ci`: the CI gate, the same steps in the same order as `.ci/run` (a unit test keeps the two
//!   in sync). Stops at the first failing step and exits non-zero.
//!
//! Anything else prints the usage and exits with status 2.

mod bench;
mod chaos;
mod ci;
mod demo;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  bench   run the benchmarks beside their baselines (release build):
          [--quick] [--json PATH] [SCENARIO...]; results in target/bench/results.json
  chaos   run the fault-injection suite over real worker clusters: [--seed N]
          [--schedules K] [--schedule I] [--quick] [--keep] [--no-malformed]; results in
          target/chaos/; a failing seed reproduces with the same options
  ci      run the CI gate (the same steps as .ci/run): fmt, clippy, tests, cargo-deny
  demo    run the two-worker local cluster end to end and check it (--keep: leave it
          running; --dir PATH: where the workers' directories and logs go)
  help    print this message
";

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    Bench(bench::BenchOptions),
    Chaos(chaos::ChaosOptions),
    Ci,
    Demo(demo::DemoOptions),
    Help,
}

/// Turns the arguments after `cargo xtask` into a task, or a message saying what is wrong.
fn parse_args(args: &[OsString]) -> Result<Task, String> {
    let Some((first, rest)) = args.split_first() else {
        return Err("no command given".to_owned());
    };
    let task = match first.to_str() {
        Some("bench") => {
            let rest: Vec<String> = rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            return bench::parse_options(&rest).map(Task::Bench);
        }
        Some("chaos") => {
            let rest: Vec<String> = rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            return chaos::parse_options(&rest).map(Task::Chaos);
        }
        Some("demo") => {
            let rest: Vec<String> = rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            return demo::parse_options(&rest).map(Task::Demo);
        }
        Some("ci") => Task::Ci,
        Some("help" | "-h" | "--help") => Task::Help,
        _ => return Err(format!("unknown command `{}`", first.to_string_lossy())),
    };
    if let Some(extra) = rest.first() {
        return Err(format!(
            "`{}` takes no arguments, got `{}`",
            first.to_string_lossy(),
            extra.to_string_lossy()
        ));
    }
    Ok(task)
}

/// The workspace root: xtask always lives at `<root>/xtask`.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
        .to_path_buf()
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match parse_args(&args) {
        Ok(Task::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Task::Demo(opts)) => match demo::run(&project_root(), &opts) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(message) => {
                eprintln!("xtask demo: {message}");
                ExitCode::FAILURE
            }
        },
        Ok(Task::Bench(opts)) => match bench::run(&project_root(), &opts) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(message) => {
                eprintln!("xtask bench: {message}");
                ExitCode::FAILURE
            }
        },
        Ok(Task::Chaos(opts)) => match chaos::run(&project_root(), &opts) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(message) => {
                eprintln!("xtask chaos: {message}");
                ExitCode::FAILURE
            }
        },
        Ok(Task::Ci) => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut exec = ci::ProcessExec::new(cargo, project_root());
            match ci::run(ci::STEPS, &mut exec, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(failure) => {
                    eprintln!("xtask ci: {failure}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn ci_and_help_are_recognised() {
        assert_eq!(parse_args(&args(&["ci"])), Ok(Task::Ci));
        for help in ["help", "-h", "--help"] {
            assert_eq!(parse_args(&args(&[help])), Ok(Task::Help));
        }
    }

    #[test]
    fn bench_takes_its_options() {
        match parse_args(&args(&["bench", "--quick", "alarms"])) {
            Ok(Task::Bench(o)) => {
                assert!(o.quick);
                assert_eq!(o.scenarios, vec!["alarms".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        let err = parse_args(&args(&["bench", "nope"])).unwrap_err();
        assert!(err.contains("valid scenarios"), "{err}");
    }

    #[test]
    fn chaos_takes_its_options() {
        match parse_args(&args(&["chaos", "--seed", "3", "--quick"])) {
            Ok(Task::Chaos(o)) => assert_eq!(o.args, ["--seed", "3", "--quick"]),
            other => panic!("{other:?}"),
        }
        assert!(parse_args(&args(&["chaos", "--nope"])).is_err());
    }

    #[test]
    fn missing_command_is_a_usage_error() {
        assert_eq!(parse_args(&[]), Err("no command given".to_owned()));
    }

    #[test]
    fn unknown_commands_are_named_in_the_error() {
        for name in ["benchmark", "CI", ""] {
            let err = parse_args(&args(&[name])).unwrap_err();
            assert_eq!(err, format!("unknown command `{name}`"));
        }
    }

    #[test]
    fn extra_arguments_are_refused() {
        let err = parse_args(&args(&["ci", "--fast"])).unwrap_err();
        assert!(err.contains("`ci` takes no arguments"), "{err}");
        assert!(err.contains("--fast"), "{err}");
    }

    #[test]
    fn project_root_holds_the_workspace_manifest() {
        let root = project_root();
        assert!(root.join("Cargo.toml").is_file(), "{}", root.display());
        assert!(root.join("xtask").join("Cargo.toml").is_file());
    }
}
