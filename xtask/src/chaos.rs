//! `cargo xtask chaos [--seed N] [--schedules K] [--schedule I] [--quick] [--keep]
//! [--no-malformed]`: builds the `worker` binary and the `francis-chaos` suite (debug builds:
//! the suite measures correctness, not speed), then runs the suite from the workspace root,
//! streaming its output; its exit status is passed through.
//!
//! The options are checked here only for shape (which take a value); `francis-chaos` checks
//! the values and prints its own usage.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Options that take a value.
const WITH_VALUE: &[&str] = &["--seed", "--schedules", "--schedule"];
/// Options that take none.
const FLAGS: &[&str] = &["--quick", "--keep", "--no-malformed"];

/// What `cargo xtask chaos` was asked to do: the arguments passed on to `francis-chaos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosOptions {
    /// Passed on as they are.
    pub args: Vec<String>,
}

/// Parses `chaos`'s arguments; unknown options and missing values are errors.
pub fn parse_options(args: &[String]) -> Result<ChaosOptions, String> {
    let mut it = args.iter();
    let mut out = Vec::new();
    while let Some(arg) = it.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            match it.next() {
                Some(v) if !v.is_empty() && !v.starts_with("--") => {
                    out.push(arg.clone());
                    out.push(v.clone());
                }
                _ => return Err(format!("`{arg}` needs a value")),
            }
        } else if FLAGS.contains(&arg.as_str()) {
            out.push(arg.clone());
        } else {
            return Err(format!(
                "unknown argument `{arg}` for `chaos`; valid: {} N, {}",
                WITH_VALUE.join(" N, "),
                FLAGS.join(", ")
            ));
        }
    }
    Ok(ChaosOptions { args: out })
}

/// Where cargo puts its build output: `CARGO_TARGET_DIR`, else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// The arguments given to `francis-chaos`.
pub fn chaos_args(root: &Path, opts: &ChaosOptions) -> Vec<String> {
    let worker = target_dir(root).join("debug").join("worker");
    let mut args = vec![
        "--worker".to_owned(),
        worker.to_string_lossy().into_owned(),
        "--out".to_owned(),
        target_dir(root)
            .join("chaos")
            .to_string_lossy()
            .into_owned(),
    ];
    args.extend(opts.args.iter().cloned());
    args
}

/// Builds both binaries, then runs the suite; returns its exit status.
pub fn run(root: &Path, opts: &ChaosOptions) -> Result<i32, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(crate::bench::set_by_cargo_run) {
            build.env_remove(&name);
        }
    }
    let status = build
        .args(["build", "-p", "worker", "-p", "francis-chaos"])
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !status.success() {
        return Err(format!(
            "building worker and francis-chaos failed: {status}"
        ));
    }
    let binary = target_dir(root).join("debug").join("francis-chaos");
    let status = Command::new(&binary)
        .args(chaos_args(root, opts))
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_are_passed_on_after_the_binaries_and_output() {
        let o = parse_options(&strings(&["--seed", "7", "--schedules", "20", "--quick"])).unwrap();
        let args = chaos_args(Path::new("/r"), &o);
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            assert_eq!(
                &args[..4],
                &strings(&[
                    "--worker",
                    "/r/target/debug/worker",
                    "--out",
                    "/r/target/chaos"
                ])[..]
            );
        }
        assert_eq!(
            &args[4..],
            &strings(&["--seed", "7", "--schedules", "20", "--quick"])[..]
        );
        assert!(parse_options(&[]).unwrap().args.is_empty());
    }

    #[test]
    fn bad_options_are_refused() {
        assert_eq!(
            parse_options(&strings(&["--seed"])).unwrap_err(),
            "`--seed` needs a value"
        );
        assert_eq!(
            parse_options(&strings(&["--schedules", "--quick"])).unwrap_err(),
            "`--schedules` needs a value"
        );
        let err = parse_options(&strings(&["--fast"])).unwrap_err();
        assert!(
            err.contains("`--fast`") && err.contains("--schedules"),
            "{err}"
        );
    }
}
