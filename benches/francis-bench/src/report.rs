//! One row per measured case: the figure, its baseline, the ratio and the target; printed as a
//! table and written as JSON.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::stats::{Measure, Target, ratio};

/// One measured case of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    /// What was measured (e.g. `64 callers`).
    pub case: String,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub baseline: Option<String>,
    pub baseline_ops_per_sec: Option<f64>,
    pub baseline_p50_us: Option<f64>,
    pub baseline_p99_us: Option<f64>,
    /// `ops_per_sec / baseline_ops_per_sec`.
    pub ratio: Option<f64>,
    pub target: String,
    /// The value the target judges (ratio, ops/s, worst lateness in s, or bytes).
    pub judged: Option<f64>,
    pub target_met: Option<bool>,
    /// Anything else worth recording (bytes per actor, lateness, how it was run).
    pub notes: String,
}

impl Row {
    /// A row from a measure and an optional baseline measure; the ratio is of throughputs.
    pub fn new(
        scenario: &str,
        case: &str,
        m: &Measure,
        baseline: Option<(&str, &Measure)>,
        target: Target,
    ) -> Row {
        let ops_per_sec = m.ops_per_sec();
        let b_ops = baseline.and_then(|(_, b)| b.ops_per_sec());
        let r = ratio(ops_per_sec, b_ops);
        let judged = match target {
            Target::RatioAtLeast(_) => r,
            Target::OpsAtLeast(_) => ops_per_sec,
            _ => None,
        };
        let mut notes = String::new();
        if let Some(e) = &m.first_error {
            let _ = write!(notes, "{} errors, first: {e}; ", m.errors);
        }
        if let Some((_, b)) = baseline
            && let Some(e) = &b.first_error
        {
            let _ = write!(notes, "baseline {} errors, first: {e}; ", b.errors);
        }
        Row {
            scenario: scenario.to_owned(),
            case: case.to_owned(),
            ops: m.ops,
            errors: m.errors,
            ops_per_sec,
            p50_us: m.p_us(50.0),
            p99_us: m.p_us(99.0),
            baseline: baseline.map(|(n, _)| n.to_owned()),
            baseline_ops_per_sec: b_ops,
            baseline_p50_us: baseline.and_then(|(_, b)| b.p_us(50.0)),
            baseline_p99_us: baseline.and_then(|(_, b)| b.p_us(99.0)),
            ratio: r,
            target: target.describe(),
            judged,
            target_met: target.met(judged),
            notes,
        }
    }

    /// Sets the judged value (for targets that are not a ratio or a rate).
    pub fn judge(mut self, target: Target, value: Option<f64>) -> Row {
        self.target = target.describe();
        self.judged = value;
        self.target_met = target.met(value);
        self
    }

    /// Appends a note.
    pub fn note(mut self, note: impl AsRef<str>) -> Row {
        self.notes.push_str(note.as_ref());
        self.notes.push_str("; ");
        self
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 1.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "-",
    }
}

/// The rows as an aligned text table, notes below each row.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "case",
        "ops/s",
        "p50 us",
        "p99 us",
        "baseline",
        "base ops/s",
        "base p50",
        "ratio",
        "target",
        "judged",
        "",
    ];
    let cells: Vec<[String; 12]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.case.clone(),
                num(r.ops_per_sec),
                num(r.p50_us),
                num(r.p99_us),
                r.baseline.clone().unwrap_or_else(|| "-".into()),
                num(r.baseline_ops_per_sec),
                num(r.baseline_p50_us),
                num(r.ratio),
                r.target.clone(),
                num(r.judged),
                verdict(r.target_met).to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: &[String]| {
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            let _ = write!(out, "{sep}{c:<w$}");
        }
        out.push('\n');
    };
    line(&mut out, &header.map(String::from));
    for (row, r) in cells.iter().zip(rows) {
        line(&mut out, row);
        if !r.notes.is_empty() {
            let _ = writeln!(out, "    ({})", r.notes.trim_end_matches("; "));
        }
    }
    out
}

/// The whole run, as written to JSON.
#[derive(Debug, Serialize)]
pub struct RunReport<'a> {
    pub date: String,
    pub command: String,
    pub quick: bool,
    pub cores: usize,
    pub rows: &'a [Row],
}

/// Writes the report as pretty JSON, creating the directory.
pub fn write_json(path: &Path, report: &RunReport<'_>) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn measure(ops: u64, secs: u64) -> Measure {
        Measure::new(
            vec![Duration::from_micros(100); ops as usize],
            0,
            None,
            Duration::from_secs(secs),
        )
    }

    #[test]
    fn rows_carry_ratio_and_verdict() {
        let row = Row::new(
            "invoke-local",
            "64 callers",
            &measure(100, 1),
            Some(("mpsc actor", &measure(400, 1))),
            Target::RatioAtLeast(0.5),
        );
        assert_eq!(row.ratio, Some(0.25));
        assert_eq!(row.target_met, Some(false));
        let text = table(&[row]);
        assert!(text.contains("MISSED"), "{text}");
        assert!(text.contains("mpsc actor"), "{text}");
    }

    #[test]
    fn rows_without_a_baseline_have_no_ratio() {
        let row = Row::new(
            "activate",
            "64 callers",
            &measure(20_000, 1),
            None,
            Target::OpsAtLeast(10_000.0),
        );
        assert_eq!(row.ratio, None);
        assert_eq!(row.target_met, Some(true));
        let row = row
            .judge(Target::BytesAtMost(2048.0), Some(4096.0))
            .note("x");
        assert_eq!(row.target_met, Some(false));
        assert_eq!(row.notes, "x; ");
    }

    #[test]
    fn json_is_written_where_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/results.json");
        let rows = vec![Row::new("memory", "n", &measure(1, 1), None, Target::None)];
        let report = RunReport {
            date: "d".into(),
            command: "c".into(),
            quick: true,
            cores: 2,
            rows: &rows,
        };
        write_json(&path, &report).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["rows"][0]["scenario"], "memory");
        assert_eq!(v["quick"], true);
    }
}
