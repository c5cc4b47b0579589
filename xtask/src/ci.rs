//! The CI gate: the steps of `.ci/run`, run in order, stopping at the first failure.
//!
//! The step list is data ([`STEPS`]) and the runner ([`run`]) only sees it through [`Exec`], so
//! the ordering and stop-on-failure rules are tested without spawning cargo.

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One CI step: `cargo <args>`, optionally needing a cargo subcommand that may be missing.
#[derive(Debug)]
pub struct Step {
    /// Short name printed before and after the step (`fmt`, `clippy`, ...).
    pub name: &'static str,
    /// Arguments given to cargo.
    pub args: &'static [&'static str],
    /// A tool the step needs; installed first when its probe fails.
    pub tool: Option<&'static Tool>,
}

/// A cargo subcommand that is installed on demand (a fresh machine does not have it).
#[derive(Debug)]
pub struct Tool {
    /// Name of the install step, printed like any other step.
    pub install_step: &'static str,
    /// `cargo <probe>` succeeds when the tool is present.
    pub probe: &'static [&'static str],
    /// `cargo <install>` installs it.
    pub install: &'static [&'static str],
}

/// cargo-deny; advisories need the network, so only licenses, bans and sources are checked.
pub const CARGO_DENY: Tool = Tool {
    install_step: "deny-install",
    probe: &["deny", "--version"],
    install: &["install", "--locked", "cargo-deny"],
};

/// The gate, cheapest steps first. `.ci/run` lists the same steps (see the sync test below).
pub const STEPS: &[Step] = &[
    Step {
        name: "fmt",
        args: &["fmt", "--all", "--check"],
        tool: None,
    },
    Step {
        name: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        tool: None,
    },
    Step {
        name: "test",
        args: &["test", "--workspace"],
        tool: None,
    },
    // The benchmark harness still runs (small sizes, release build); asserts nothing on speed.
    Step {
        name: "bench-quick",
        args: &["xtask", "bench", "--quick"],
        tool: None,
    },
    // A short fault-injection run: a few seeded schedules over real worker clusters plus the
    // malformed-input pass; any violation fails the gate.
    Step {
        name: "chaos-quick",
        args: &["xtask", "chaos", "--quick"],
        tool: None,
    },
    Step {
        name: "deny",
        args: &["deny", "check", "licenses", "bans", "sources"],
        tool: Some(&CARGO_DENY),
    },
    // Every library crate packages and builds on its own, as crates.io would take it.
    Step {
        name: "publish-dry",
        args: &["publish", "--dry-run", "--workspace"],
        tool: None,
    },
];

/// Runs cargo commands for [`run`].
pub trait Exec {
    /// Runs `cargo <args>` with its output on the terminal; `Err` says why it did not succeed.
    fn run(&mut self, args: &[&str]) -> Result<(), String>;
    /// Whether `cargo <args>` succeeds, with its output discarded.
    fn probe(&mut self, args: &[&str]) -> bool;
}

/// [`Exec`] that spawns the real cargo in the workspace root.
#[derive(Debug)]
pub struct ProcessExec {
    cargo: OsString,
    root: PathBuf,
}

impl ProcessExec {
    /// Runs `cargo` (the given binary) with `root` as the working directory.
    pub fn new(cargo: OsString, root: PathBuf) -> Self {
        Self { cargo, root }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.cargo);
        command.args(args).current_dir(&self.root);
        command
    }
}

impl Exec for ProcessExec {
    fn run(&mut self, args: &[&str]) -> Result<(), String> {
        let status = self
            .command(args)
            .status()
            .map_err(|err| format!("could not start {}: {err}", self.cargo.to_string_lossy()))?;
        if status.success() {
            Ok(())
        } else {
            Err(status.to_string())
        }
    }

    fn probe(&mut self, args: &[&str]) -> bool {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}

/// The first step that failed; the steps after it were not run.
#[derive(Debug)]
pub struct Failure {
    /// Name of the failed step.
    pub step: &'static str,
    /// The cargo command line of the step.
    pub command: String,
    /// Why it failed (exit status, or why it could not start).
    pub reason: String,
    /// How long the step ran.
    pub elapsed: Duration,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step `{}` failed after {} ({}): {}",
            self.step,
            format_duration(self.elapsed),
            self.reason,
            self.command
        )
    }
}

/// Runs `steps` in order, printing each step's name, command and duration to `out`, installing
/// a step's tool first when its probe fails. Stops at the first failure and returns it.
pub fn run(steps: &[Step], exec: &mut dyn Exec, out: &mut dyn Write) -> Result<(), Failure> {
    let mut done: Vec<(&'static str, Duration)> = Vec::new();
    for step in steps {
        if let Some(tool) = step.tool
            && !exec.probe(tool.probe)
        {
            done.push(run_one(tool.install_step, tool.install, exec, out)?);
        }
        done.push(run_one(step.name, step.args, exec, out)?);
    }
    say(out, "==> all steps passed");
    for (name, elapsed) in done {
        say(out, &format!("    {name:<14} {}", format_duration(elapsed)));
    }
    Ok(())
}

fn run_one(
    name: &'static str,
    args: &[&str],
    exec: &mut dyn Exec,
    out: &mut dyn Write,
) -> Result<(&'static str, Duration), Failure> {
    let command = command_line(args);
    say(out, &format!("==> {name}: {command}"));
    let started = Instant::now();
    let result = exec.run(args);
    let elapsed = started.elapsed();
    match result {
        Ok(()) => {
            say(
                out,
                &format!("<== {name} passed in {}", format_duration(elapsed)),
            );
            Ok((name, elapsed))
        }
        Err(reason) => Err(Failure {
            step: name,
            command,
            reason,
            elapsed,
        }),
    }
}

/// Progress output is best effort: a closed stdout must not change the gate's verdict.
fn say(out: &mut dyn Write, line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn command_line(args: &[&str]) -> String {
    let mut line = String::from("cargo");
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

/// `12.3s` under a minute, `4m05.2s` above.
pub fn format_duration(elapsed: Duration) -> String {
    let tenths = elapsed.as_millis() / 100;
    let (minutes, tenths) = (tenths / 600, tenths % 600);
    let (seconds, tenth) = (tenths / 10, tenths % 10);
    if minutes == 0 {
        format!("{seconds}.{tenth}s")
    } else {
        format!("{minutes}m{seconds:02}.{tenth}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::Path;

    /// Records every command; fails the ones listed in `failing`, reports `missing` tools absent.
    #[derive(Default)]
    struct FakeExec {
        ran: Vec<String>,
        probed: Vec<String>,
        failing: HashSet<String>,
        missing: HashSet<String>,
    }

    impl Exec for FakeExec {
        fn run(&mut self, args: &[&str]) -> Result<(), String> {
            let line = command_line(args);
            self.ran.push(line.clone());
            if self.failing.contains(&line) {
                Err("exit status: 101".to_owned())
            } else {
                Ok(())
            }
        }

        fn probe(&mut self, args: &[&str]) -> bool {
            let line = command_line(args);
            self.probed.push(line.clone());
            !self.missing.contains(&line)
        }
    }

    fn all_commands() -> Vec<String> {
        STEPS.iter().map(|step| command_line(step.args)).collect()
    }

    #[test]
    fn runs_every_step_in_order_when_all_pass() {
        let mut exec = FakeExec::default();
        let mut out = Vec::new();
        run(STEPS, &mut exec, &mut out).expect("all steps pass");
        assert_eq!(exec.ran, all_commands());
        assert_eq!(exec.probed, ["cargo deny --version"]);
        let out = String::from_utf8(out).unwrap();
        for step in STEPS {
            assert!(out.contains(&format!("==> {}: ", step.name)), "{out}");
            assert!(
                out.contains(&format!("<== {} passed in ", step.name)),
                "{out}"
            );
        }
        assert!(out.contains("all steps passed"), "{out}");
    }

    #[test]
    fn stops_at_the_first_failure_and_names_it() {
        let mut exec = FakeExec::default();
        exec.failing
            .insert("cargo clippy --workspace --all-targets -- -D warnings".to_owned());
        let mut out = Vec::new();
        let failure = run(STEPS, &mut exec, &mut out).unwrap_err();
        assert_eq!(failure.step, "clippy");
        assert_eq!(exec.ran, all_commands()[..2]);
        assert!(exec.probed.is_empty(), "deny was never reached");
        let message = failure.to_string();
        assert!(
            message.starts_with("step `clippy` failed after "),
            "{message}"
        );
        assert!(message.contains("exit status: 101"), "{message}");
        assert!(message.ends_with("cargo clippy --workspace --all-targets -- -D warnings"));
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("all steps passed"), "{out}");
    }

    #[test]
    fn a_failing_last_step_fails_the_gate() {
        let mut exec = FakeExec::default();
        exec.failing
            .insert("cargo publish --dry-run --workspace".to_owned());
        let failure = run(STEPS, &mut exec, &mut Vec::new()).unwrap_err();
        assert_eq!(failure.step, "publish-dry");
        assert_eq!(exec.ran, all_commands());
    }

    #[test]
    fn a_missing_tool_is_installed_before_its_step() {
        let mut exec = FakeExec::default();
        exec.missing.insert("cargo deny --version".to_owned());
        run(STEPS, &mut exec, &mut Vec::new()).expect("install then deny pass");
        let mut expected = all_commands();
        let deny = STEPS.iter().position(|s| s.name == "deny").unwrap();
        expected.insert(deny, "cargo install --locked cargo-deny".to_owned());
        assert_eq!(exec.ran, expected);
    }

    #[test]
    fn a_failed_install_stops_before_the_step_that_needs_it() {
        let mut exec = FakeExec::default();
        exec.missing.insert("cargo deny --version".to_owned());
        exec.failing
            .insert("cargo install --locked cargo-deny".to_owned());
        let failure = run(STEPS, &mut exec, &mut Vec::new()).unwrap_err();
        assert_eq!(failure.step, "deny-install");
        assert_eq!(
            exec.ran.last().unwrap(),
            "cargo install --locked cargo-deny"
        );
        assert!(!exec.ran.iter().any(|line| line.starts_with("cargo deny")));
    }

    #[test]
    fn a_command_that_cannot_start_is_a_failure() {
        let mut exec = ProcessExec::new(
            "/nonexistent/francis-xtask-test/cargo".into(),
            std::env::temp_dir(),
        );
        let err = exec.run(&["--version"]).unwrap_err();
        assert!(err.starts_with("could not start /nonexistent/"), "{err}");
        assert!(!exec.probe(&["--version"]));
    }

    #[test]
    fn durations_are_short_and_readable() {
        assert_eq!(format_duration(Duration::from_millis(0)), "0.0s");
        assert_eq!(format_duration(Duration::from_millis(1_234)), "1.2s");
        assert_eq!(format_duration(Duration::from_millis(59_999)), "59.9s");
        assert_eq!(format_duration(Duration::from_millis(60_000)), "1m00.0s");
        assert_eq!(format_duration(Duration::from_millis(245_250)), "4m05.2s");
        assert_eq!(format_duration(Duration::from_secs(3_600)), "60m00.0s");
    }

    /// `(name, command)` of every `step NAME COMMAND...` line of `.ci/run`, in order.
    fn script_steps(script: &str) -> Vec<(String, String)> {
        script
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("step "))
            .map(|rest| {
                let (name, command) = rest.split_once(' ').expect("step NAME COMMAND...");
                (name.to_owned(), command.trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn ci_run_script_has_the_same_steps_in_the_same_order() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let script = std::fs::read_to_string(root.join(".ci/run")).expect("read .ci/run");

        let mut expected = Vec::new();
        for step in STEPS {
            if let Some(tool) = step.tool {
                expected.push((tool.install_step.to_owned(), command_line(tool.install)));
                let probe = format!("if ! {} >/dev/null 2>&1; then", command_line(tool.probe));
                assert!(script.contains(&probe), ".ci/run lacks `{probe}`");
            }
            expected.push((step.name.to_owned(), command_line(step.args)));
        }
        assert_eq!(script_steps(&script), expected);
    }

    #[test]
    fn script_step_parsing_sees_indented_lines_and_ignores_others() {
        let script =
            "step() {\n  local name=$1\n}\nstep a cargo x\n    step b cargo y --z\n# step c\n";
        assert_eq!(
            script_steps(script),
            [
                ("a".to_owned(), "cargo x".to_owned()),
                ("b".to_owned(), "cargo y --z".to_owned())
            ]
        );
    }

    #[test]
    fn readme_names_the_test_command_ci_runs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).expect("read README.md");
        let test = STEPS.iter().find(|step| step.name == "test").unwrap();
        let command = command_line(test.args);
        assert!(readme.contains(&command), "README.md must show `{command}`");
    }
}
