//! The command line: `francis-chaos --worker PATH [--seed N] [--schedules K] [--schedule I]
//! [--quick] [--keep] [--no-malformed] [--out DIR]`.

use std::path::PathBuf;

/// Schedules run when `--schedules` is not given.
pub const DEFAULT_SCHEDULES: usize = 20;
/// Schedules run by `--quick` when `--schedules` is not given.
pub const QUICK_SCHEDULES: usize = 3;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The `worker` binary.
    pub worker: PathBuf,
    /// The run's seed (`None`: drawn from the clock, and printed).
    pub seed: Option<u64>,
    /// How many schedules.
    pub schedules: usize,
    /// Run only this schedule of the run (as it was planned within the whole run).
    pub only: Option<usize>,
    /// Shorter loads, fewer schedules, a smaller malformed pass (CI).
    pub quick: bool,
    /// Keep every schedule's directory (failing ones are always kept).
    pub keep: bool,
    /// Skip the malformed-input pass.
    pub malformed: bool,
    /// Where the results and kept directories go.
    pub out: PathBuf,
}

/// What `--help` prints.
pub const USAGE: &str = "\
usage: francis-chaos --worker PATH [--seed N] [--schedules K] [--schedule I] [--quick]
                     [--keep] [--no-malformed] [--out DIR]

Runs K seeded fault-injection schedules (default 20; 3 with --quick) against real worker
clusters, then a malformed-input pass, checks every history and prints a summary; results go
to DIR/chaos-<seed>.json (default target/chaos). Exits non-zero on any violation.

  --seed N       the run's seed (decimal or 0x-hex); a failing run is reproduced by its seed
  --schedule I   run only schedule I of the run (0-based), planned exactly as within the run
  --keep         keep every schedule's worker directories (failing ones are always kept)
";

/// Parses the arguments after the program name; `Ok(None)` means `--help`.
pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut worker = None;
    let mut seed = None;
    let mut schedules = None;
    let mut only = None;
    let mut quick = false;
    let mut keep = false;
    let mut malformed = true;
    let mut out = PathBuf::from("target/chaos");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .filter(|v| !v.starts_with("--"))
                .cloned()
                .ok_or_else(|| format!("`{name}` needs a value"))
        };
        match arg.as_str() {
            "--worker" => worker = Some(PathBuf::from(value("--worker")?)),
            "--seed" => seed = Some(parse_u64(&value("--seed")?)?),
            "--schedules" => {
                let k = parse_u64(&value("--schedules")?)?;
                if k == 0 {
                    return Err("`--schedules` must be at least 1".to_owned());
                }
                schedules = Some(k as usize);
            }
            "--schedule" => only = Some(parse_u64(&value("--schedule")?)? as usize),
            "--out" => out = PathBuf::from(value("--out")?),
            "--quick" => quick = true,
            "--keep" => keep = true,
            "--no-malformed" => malformed = false,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let worker = worker.ok_or("`--worker PATH` is required (cargo xtask chaos passes it)")?;
    let schedules = schedules.unwrap_or(if quick {
        QUICK_SCHEDULES
    } else {
        DEFAULT_SCHEDULES
    });
    if let Some(i) = only
        && i >= schedules
    {
        return Err(format!(
            "`--schedule {i}` is not below `--schedules {schedules}`"
        ));
    }
    Ok(Some(Options {
        worker,
        seed,
        schedules,
        only,
        quick,
        keep,
        malformed,
        out,
    }))
}

fn parse_u64(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("`{text}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_and_options() {
        let o = parse(&args(&["--worker", "w"])).unwrap().unwrap();
        assert_eq!(o.schedules, DEFAULT_SCHEDULES);
        assert_eq!(o.seed, None);
        assert!(o.malformed && !o.quick);
        let o = parse(&args(&["--worker", "w", "--quick", "--seed", "0x10"]))
            .unwrap()
            .unwrap();
        assert_eq!((o.schedules, o.seed), (QUICK_SCHEDULES, Some(16)));
        let o = parse(&args(&[
            "--worker",
            "w",
            "--schedules",
            "5",
            "--schedule",
            "4",
            "--no-malformed",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((o.schedules, o.only, o.malformed), (5, Some(4), false));
        assert_eq!(parse(&args(&["--help"])), Ok(None));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(parse(&args(&[])).unwrap_err().contains("--worker"));
        assert!(
            parse(&args(&["--worker", "w", "--seed"]))
                .unwrap_err()
                .contains("`--seed` needs a value")
        );
        assert!(
            parse(&args(&["--worker", "w", "--schedules", "0"]))
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            parse(&args(&[
                "--worker",
                "w",
                "--schedules",
                "2",
                "--schedule",
                "2"
            ]))
            .unwrap_err()
            .contains("not below")
        );
        assert!(
            parse(&args(&["--worker", "w", "--fast"]))
                .unwrap_err()
                .contains("--fast")
        );
    }
}
