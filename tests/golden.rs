//! Golden SQL tests: each directory under `tests/golden/<case>/` holds a `job.sql`, its
//! small input file(s) and `expected.csv`, the rows computed by hand (the comment at
//! the top of each `job.sql` shows the arithmetic).
//!
//! The runner substitutes `{{DIR}}` (the case directory) and `{{OUT}}` (a fresh
//! temporary output directory) in `job.sql`, runs `tidewater run job.sql -p N` for
//! N = 1 and 3, reads every part file the filesystem sink wrote, and compares the lines
//! with `expected.csv` as a sorted multiset.
//!
//! Directives in `job.sql` comments:
//! - `-- @parallelism: 1` — the parallelisms to run (default `1 3`);
//! - `-- @summary: events in: N  results out: M  late events: L  dead letters: D` —
//!   the counters the summary line on stderr must show.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tidewater");

/// The counters of the summary line, in the order they are printed.
const COUNTERS: [&str; 4] = ["events in", "results out", "late events", "dead letters"];

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
}

/// One case directory, loaded.
#[derive(Debug)]
struct Case {
    name: String,
    dir: PathBuf,
    sql: String,
    parallelism: Vec<usize>,
    summary: Option<Vec<(String, u64)>>,
    expected: Vec<String>,
}

/// What one run produced.
#[derive(Debug)]
struct Run {
    lines: Vec<String>,
    stderr: String,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The lines of a CSV text, without the final newline.
fn lines_of(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

/// `label: N` pairs for the known counters, in `COUNTERS` order; `None` if one is missing.
fn parse_counters(text: &str) -> Option<Vec<(String, u64)>> {
    COUNTERS
        .iter()
        .map(|label| {
            let at = text.find(&format!("{label}: "))? + label.len() + 2;
            let digits: String = text[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            Some((label.to_string(), digits.parse().ok()?))
        })
        .collect()
}

fn load(name: &str) -> Case {
    let dir = golden_root().join(name);
    let sql = read(&dir.join("job.sql"));
    let mut parallelism = vec![1, 3];
    let mut summary = None;
    for line in sql.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("-- @parallelism:") {
            parallelism = rest
                .split_whitespace()
                .map(|p| {
                    p.parse()
                        .unwrap_or_else(|_| panic!("{name}: bad @parallelism '{p}'"))
                })
                .collect();
        } else if let Some(rest) = line.strip_prefix("-- @summary:") {
            summary = Some(
                parse_counters(rest)
                    .unwrap_or_else(|| panic!("{name}: @summary needs all of {COUNTERS:?}")),
            );
        }
    }
    assert!(!parallelism.is_empty(), "{name}: empty @parallelism");
    let expected = lines_of(&read(&dir.join("expected.csv")));
    Case {
        name: name.to_string(),
        dir,
        sql,
        parallelism,
        summary,
        expected,
    }
}

/// Every line of every part file in `out`; fails on leftovers and unknown files.
fn read_part_files(out: &Path) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(out)
        .map_err(|e| format!("cannot list the sink directory {}: {e}", out.display()))?;
    let mut lines = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") && name.ends_with(".csv") {
            let text = std::fs::read_to_string(entry.path())
                .map_err(|e| format!("cannot read part file {name}: {e}"))?;
            if !text.is_empty() && !text.ends_with('\n') {
                return Err(format!("part file {name} does not end with a newline"));
            }
            lines.extend(lines_of(&text));
        } else {
            return Err(format!(
                "unexpected file '{name}' in the sink directory (in-progress part file left behind?)"
            ));
        }
    }
    Ok(lines)
}

/// Runs the case at parallelism `p` in a fresh temporary directory.
fn run_case_at(case: &Case, p: usize) -> Result<Run, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = tmp.path().join("out");
    let dir = case.dir.to_str().ok_or("case directory is not UTF-8")?;
    let out_s = out.to_str().ok_or("temp directory is not UTF-8")?;
    let sql = case.sql.replace("{{DIR}}", dir).replace("{{OUT}}", out_s);
    if sql.contains("{{") {
        return Err("job.sql has an unknown {{placeholder}}".into());
    }
    let job = tmp.path().join("job.sql");
    std::fs::write(&job, sql).map_err(|e| e.to_string())?;
    let o = Command::new(BIN)
        .arg("run")
        .arg(&job)
        .arg("-p")
        .arg(p.to_string())
        .env_remove("RUST_LOG")
        .output()
        .map_err(|e| format!("cannot start {BIN}: {e}"))?;
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        return Err(format!("tidewater exited with {}:\n{stderr}", o.status));
    }
    if stderr.contains("panicked") || stderr.contains("internal error") {
        return Err(format!("tidewater reported a panic:\n{stderr}"));
    }
    Ok(Run {
        lines: read_part_files(&out)?,
        stderr,
    })
}

/// Compares two multisets of lines; on a difference, lists what is missing and extra.
fn compare_lines(expected: &[String], actual: &[String]) -> Result<(), String> {
    let mut exp = expected.to_vec();
    let mut act = actual.to_vec();
    exp.sort();
    act.sort();
    if exp == act {
        return Ok(());
    }
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < exp.len() || j < act.len() {
        match (exp.get(i), act.get(j)) {
            (Some(e), Some(a)) if e == a => {
                i += 1;
                j += 1;
            }
            (Some(e), Some(a)) if e < a => {
                missing.push(e.clone());
                i += 1;
            }
            (Some(_), Some(a)) | (None, Some(a)) => {
                extra.push(a.clone());
                j += 1;
            }
            (Some(e), None) => {
                missing.push(e.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    Err(format!(
        "{} expected rows, {} actual rows\n  missing:\n    {}\n  unexpected:\n    {}\n  all actual rows (sorted):\n    {}",
        exp.len(),
        act.len(),
        missing.join("\n    "),
        extra.join("\n    "),
        act.join("\n    ")
    ))
}

/// Checks the summary line on stderr against the expected counters.
fn compare_summary(expected: &[(String, u64)], stderr: &str) -> Result<(), String> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("events in:"))
        .ok_or_else(|| format!("no summary line on stderr:\n{stderr}"))?;
    let actual = parse_counters(line).ok_or_else(|| format!("cannot parse summary '{line}'"))?;
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "summary: expected {expected:?}\n  got line: {line}"
        ))
    }
}

fn check(case: &Case, p: usize) -> Result<(), String> {
    let run = run_case_at(case, p)?;
    compare_lines(&case.expected, &run.lines)?;
    if let Some(s) = &case.summary {
        compare_summary(s, &run.stderr)?;
    }
    Ok(())
}

fn run_case(name: &str) {
    let case = load(name);
    let failures: Vec<String> = case
        .parallelism
        .iter()
        .filter_map(|&p| check(&case, p).err().map(|e| format!("-p {p}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "golden case '{}' ({}) failed:\n{}",
        case.name,
        case.dir.display(),
        failures.join("\n\n")
    );
}

macro_rules! golden {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$meta])*
            #[test]
            fn $name() {
                run_case(stringify!($name));
            }
        )*
        /// Every case the macro made a test for.
        const CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

golden! {
    tumble_count_sum,
    hop_2s_10s,
    hop_2s_3s,
    cumulate,
    session_partition_by,
    session_single_key,
    min_max_avg,
    count_distinct,
    global_window_no_key,
    window_where_exprs,
    stateless_filter,
    scalar_exprs,
    csv_semicolon,
    json_lines,
    directory_of_files,
    late_event,
    hop_late_slice,
}

/// A case directory without a test would silently never run.
#[test]
fn every_case_directory_has_a_test() {
    let mut dirs: Vec<String> = std::fs::read_dir(golden_root())
        .unwrap_or_else(|e| panic!("cannot list tests/golden: {e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    for d in &dirs {
        assert!(
            CASES.contains(&d.as_str()),
            "tests/golden/{d} has no test in tests/golden.rs"
        );
        let dir = golden_root().join(d);
        for f in ["job.sql", "expected.csv"] {
            assert!(dir.join(f).is_file(), "tests/golden/{d}/{f} is missing");
        }
    }
    for c in CASES {
        assert!(dirs.iter().any(|d| d == c), "no directory tests/golden/{c}");
    }
}

/// The runner itself must notice wrong rows and wrong counters.
#[test]
fn runner_detects_differences() {
    let mut case = load("tumble_count_sum");
    let run = run_case_at(&case, 1).unwrap_or_else(|e| panic!("{e}"));
    assert!(compare_lines(&case.expected, &run.lines).is_ok());

    // A changed value, a missing row and an extra row are all reported.
    let mut wrong = case.expected.clone();
    wrong[0] = wrong[0].replace(",3,8", ",3,9");
    wrong.pop();
    let err = compare_lines(&wrong, &run.lines).err().unwrap_or_default();
    assert!(err.contains(",3,9") && err.contains(",3,8"), "{err}");
    assert!(
        err.contains(case.expected.last().map_or("", String::as_str)),
        "{err}"
    );

    // The same rows twice are not the same multiset.
    let doubled: Vec<String> = run.lines.iter().chain(&run.lines).cloned().collect();
    assert!(compare_lines(&case.expected, &doubled).is_err());

    // A wrong counter in the summary is reported.
    let wrong_summary =
        parse_counters("events in: 11  results out: 8  late events: 1  dead letters: 0");
    case.summary = wrong_summary;
    assert!(check(&case, 1).is_err());
}
