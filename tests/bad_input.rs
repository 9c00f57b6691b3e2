//! Bad input end to end: a CSV mixing good rows with every kind of bad row (wrong field
//! counts, non-numbers in BIGINT columns, empty lines, invalid UTF-8, a 10 MB line) is
//! run through the classic job (HOP 2 s / 10 s, SUM and COUNT per key) by the binary,
//! with 'dead-letter.path' set.
//!
//! Expected (ARCHITECTURE.md, "Bad input"): the job succeeds; the windows are exactly
//! those of the good rows (computed by the naive oracle of `tidewater-window`); every
//! bad row is one JSON line in the dead-letter file with its 1-based line number (the
//! header is line 1), its raw text (and `raw_hex` when it is not UTF-8) and a reason;
//! the summary counts one dead letter per bad row.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "../crates/tidewater-window/tests/common/oracle.rs"]
mod oracle;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oracle::{Agg, AggFn, AggValue, ArgType, Event, KeyValue, ResultRow, Window};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_tidewater");
const BASE_TS: i64 = 1_700_000_000_000;

/// A generated input file: the bytes, its good events and its bad lines.
struct Input {
    bytes: Vec<u8>,
    good: Vec<Event>,
    /// 1-based line number -> raw bytes of the line (without the newline).
    bad: BTreeMap<u64, Vec<u8>>,
    /// 1-based line number of a bad line -> a word its reason should contain.
    hints: BTreeMap<u64, &'static str>,
}

/// Good rows in event-time order, with every kind of bad row mixed in.
fn generate() -> Input {
    let mut rng = StdRng::seed_from_u64(0x71de);
    let huge: Vec<u8> = {
        let mut v = b"k3,".to_vec();
        let pattern = b"0123456789abcdefghij";
        while v.len() < 10 * 1024 * 1024 {
            v.extend_from_slice(pattern);
        }
        v.extend_from_slice(b",1700000004000");
        v
    };
    // Each bad row, with a word its reason should contain (case-insensitive).
    let bad_kinds: Vec<(Vec<u8>, &'static str)> = vec![
        (b"k1,5".to_vec(), "fields"),                     // too few fields
        (b"k1".to_vec(), "fields"),                       // one field only
        (b"k1,5,1700000001000,extra".to_vec(), "fields"), // too many fields
        (b"k2,abc,1700000002000".to_vec(), "value"),      // non-numeric BIGINT
        (b"k2,12x,1700000002000".to_vec(), "value"),      // number, then junk
        (b"k2,5,noon".to_vec(), "ts_ms"),                 // non-numeric BIGINT
        (b"k1,99999999999999999999,1700000003000".to_vec(), "value"), // overflow
        (b"".to_vec(), "empty"),                          // empty line
        (b"   ".to_vec(), "empty"),                       // blank line
        (b"k\xff\xfe,5,1700000003000".to_vec(), "UTF-8"), // bad UTF-8 key
        (b"k1,\xc3\x28,1700000003000".to_vec(), "UTF-8"), // bad UTF-8 value
        (huge, "value"),                                  // 10 MB, non-numeric
    ];
    let n_good = 400;
    // Where each bad row goes: after good row number `slot`.
    let mut slots: Vec<(usize, (Vec<u8>, &str))> = bad_kinds
        .into_iter()
        .map(|b| (rng.random_range(1..n_good), b))
        .collect();
    slots.sort_by_key(|(s, _)| *s);

    let mut bytes = b"key,value,ts_ms\n".to_vec();
    let mut line = 1u64;
    let mut good = Vec::new();
    let mut bad = BTreeMap::new();
    let mut hints = BTreeMap::new();
    let mut ts = BASE_TS;
    let mut next_bad = slots.into_iter().peekable();
    for i in 0..n_good {
        ts += rng.random_range(0..250);
        let key = format!("k{}", rng.random_range(0..5));
        let value: i64 = rng.random_range(-100..1000);
        bytes.extend_from_slice(format!("{key},{value},{ts}\n").as_bytes());
        line += 1;
        good.push(Event {
            keys: vec![KeyValue::Str(key)],
            ts,
            value: Some(value),
        });
        while let Some((_, (raw, hint))) = next_bad.next_if(|(s, _)| *s == i) {
            bytes.extend_from_slice(&raw);
            bytes.push(b'\n');
            line += 1;
            bad.insert(line, raw);
            hints.insert(line, hint);
        }
    }
    Input {
        bytes,
        good,
        bad,
        hints,
    }
}

struct Run {
    job: PathBuf,
    input_path: PathBuf,
    out_dir: PathBuf,
    dead_letters: PathBuf,
    output: Output,
    _tmp: tempfile::TempDir,
}

fn job_sql(input: &Path, out: &Path, dead: &Path) -> String {
    format!(
        "CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = '{}',
  'format' = 'csv',
  'csv.header' = 'true',
  'dead-letter.path' = '{}'
);

CREATE TABLE sums (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  key STRING,
  total BIGINT,
  events BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');

INSERT INTO sums
SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
",
        input.display(),
        dead.display(),
        out.display()
    )
}

/// Writes `bytes` as the input and runs the classic job on it at parallelism `p`.
fn run(bytes: &[u8], p: usize) -> Run {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let input_path = tmp.path().join("events.csv");
    let out_dir = tmp.path().join("out");
    let dead_letters = tmp.path().join("dead").join("letters.jsonl");
    std::fs::write(&input_path, bytes).unwrap_or_else(|e| panic!("write input: {e}"));
    let job = tmp.path().join("job.sql");
    std::fs::write(&job, job_sql(&input_path, &out_dir, &dead_letters))
        .unwrap_or_else(|e| panic!("write job: {e}"));
    let output = run_job(&job, p);
    Run {
        job,
        input_path,
        out_dir,
        dead_letters,
        output,
        _tmp: tmp,
    }
}

fn run_job(job: &Path, p: usize) -> Output {
    Command::new(BIN)
        .arg("run")
        .arg(job)
        .arg("-p")
        .arg(p.to_string())
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn stderr(r: &Run) -> String {
    String::from_utf8_lossy(&r.output.stderr).into_owned()
}

fn assert_succeeded(r: &Run) {
    let err = stderr(r);
    assert!(
        r.output.status.success(),
        "tidewater failed ({}):\n{err}",
        r.output.status
    );
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "panic on stderr:\n{err}"
    );
}

/// One parsed dead letter.
#[derive(Debug)]
struct Letter {
    reason: String,
    file: String,
    raw: String,
    raw_hex: Option<String>,
}

/// The dead-letter file, by line number; fails on malformed JSON or missing fields.
fn read_dead_letters(path: &Path) -> BTreeMap<u64, Vec<Letter>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read dead letters {}: {e}", path.display()));
    let mut out: BTreeMap<u64, Vec<Letter>> = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| {
            panic!(
                "dead letter {} is not JSON ({e}): {}",
                i + 1,
                &l[..l.len().min(200)]
            )
        });
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let line = v
            .get("line")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| panic!("dead letter {} has no line number", i + 1));
        out.entry(line).or_default().push(Letter {
            reason: s("reason").unwrap_or_else(|| panic!("dead letter {} has no reason", i + 1)),
            file: s("file").unwrap_or_else(|| panic!("dead letter {} has no file", i + 1)),
            raw: s("raw").unwrap_or_else(|| panic!("dead letter {} has no raw", i + 1)),
            raw_hex: s("raw_hex"),
        });
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn short(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 60 {
        format!("{}... ({} bytes)", &s[..40], b.len())
    } else {
        format!("{s:?}")
    }
}

/// Every bad row is in the dead-letter file, at its line, with its raw bytes and a reason.
fn check_bad_rows_reported(input: &Input, r: &Run) {
    let letters = read_dead_letters(&r.dead_letters);
    let file = r.input_path.display().to_string();
    for (line, raw) in &input.bad {
        let found = letters
            .get(line)
            .unwrap_or_else(|| panic!("bad line {line} ({}) is not a dead letter", short(raw)));
        assert_eq!(
            found.len(),
            1,
            "line {line} is a dead letter {} times",
            found.len()
        );
        let l = &found[0];
        assert!(!l.reason.trim().is_empty(), "line {line}: empty reason");
        assert_eq!(l.file, file, "line {line}: wrong file");
        assert_eq!(
            l.raw,
            String::from_utf8_lossy(raw),
            "line {line}: raw text differs ({} bytes expected, {} written)",
            raw.len(),
            l.raw.len()
        );
        match std::str::from_utf8(raw) {
            Ok(_) => assert_eq!(l.raw_hex, None, "line {line}: raw_hex on UTF-8 text"),
            Err(_) => assert_eq!(
                l.raw_hex.as_deref(),
                Some(hex(raw).as_str()),
                "line {line}: raw_hex missing or wrong"
            ),
        }
    }
}

fn parse_ts(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.3f")
        .unwrap_or_else(|e| panic!("bad timestamp '{s}' in output: {e}"))
        .and_utc()
        .timestamp_millis()
}

/// The sink's rows as oracle rows.
fn read_results(dir: &Path) -> Vec<ResultRow> {
    let mut rows = Vec::new();
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list sink directory {}: {e}", dir.display()));
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with("part-") && name.ends_with(".csv"),
            "unexpected file {name} in the sink directory"
        );
        let text = std::fs::read_to_string(e.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
        for l in text.lines() {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "bad output row '{l}'");
            let int = |s: &str| {
                s.parse::<i64>()
                    .unwrap_or_else(|_| panic!("bad number '{s}' in '{l}'"))
            };
            rows.push(ResultRow {
                window_start: parse_ts(f[0]),
                window_end: parse_ts(f[1]),
                keys: vec![KeyValue::Str(f[2].to_string())],
                aggs: vec![AggValue::Int(int(f[3])), AggValue::Int(int(f[4]))],
            });
        }
    }
    rows
}

fn summary_count(stderr: &str, label: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("events in:"))
        .unwrap_or_else(|| panic!("no summary line on stderr:\n{stderr}"));
    let at = line
        .find(&format!("{label}: "))
        .unwrap_or_else(|| panic!("no '{label}' in summary '{line}'"))
        + label.len()
        + 2;
    line[at..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse '{label}' in summary '{line}'"))
}

#[test]
fn generator_is_sane() {
    let input = generate();
    assert_eq!(input.bad.len(), 12);
    assert_eq!(input.good.len(), 400);
    let total_lines = input.bytes.split(|b| *b == b'\n').count() - 1;
    assert_eq!(total_lines, 1 + 400 + 12);
    assert!(input.bad.values().any(|b| b.len() >= 10 * 1024 * 1024));
    // The first line of the file is the header, so good and bad rows start at line 2.
    assert!(input.bad.keys().all(|l| *l >= 2));
}

/// Exit status 0, no panic, and every bad row reported at its line with a reason.
#[test]
fn bad_rows_become_dead_letters_with_their_line_numbers() {
    let input = generate();
    for p in [1, 3] {
        let r = run(&input.bytes, p);
        assert_succeeded(&r);
        check_bad_rows_reported(&input, &r);
    }
}

/// The good rows still make exactly the windows the oracle computes from them, nothing
/// but the bad rows is a dead letter, and the summary counts them.
#[test]
fn good_rows_are_aggregated_despite_bad_rows() {
    let input = generate();
    let window = Window::Hop {
        size: 10_000,
        slide: 2_000,
    };
    let aggs = [
        Agg {
            func: AggFn::Sum,
            arg: ArgType::Int,
        },
        Agg {
            func: AggFn::CountStar,
            arg: ArgType::Int,
        },
    ];
    let expected = oracle::evaluate(&input.good, &window, &aggs);
    assert!(expected.len() > 100, "the oracle found too few windows");
    for p in [1, 3] {
        let r = run(&input.bytes, p);
        assert_succeeded(&r);
        let letters = read_dead_letters(&r.dead_letters);
        let extra: Vec<u64> = letters
            .keys()
            .filter(|l| !input.bad.contains_key(l))
            .copied()
            .collect();
        assert!(
            extra.is_empty(),
            "-p {p}: {} good lines are dead letters, e.g. lines {:?}",
            extra.len(),
            &extra[..extra.len().min(5)]
        );
        check_bad_rows_reported(&input, &r);
        let err = stderr(&r);
        assert_eq!(
            summary_count(&err, "dead letters"),
            input.bad.len() as u64,
            "-p {p}: summary:\n{err}"
        );
        let actual = read_results(&r.out_dir);
        if let Err(diff) = oracle::compare(&expected, &actual, 0.0) {
            panic!("-p {p}: windows differ from the oracle over the good rows:\n{diff}");
        }
    }
}

/// The smallest input that shows the bug above: one good row and one bad row.
#[test]
fn minimal_good_row_next_to_bad_row() {
    let r = run(b"key,value,ts_ms\na,1,1000\nb,x,2000\n", 1);
    assert_succeeded(&r);
    let letters = read_dead_letters(&r.dead_letters);
    assert_eq!(
        letters.keys().copied().collect::<Vec<_>>(),
        vec![3],
        "only line 3 is bad: {letters:?}"
    );
    assert_eq!(summary_count(&stderr(&r), "dead letters"), 1);
    let rows = read_results(&r.out_dir);
    assert_eq!(rows.len(), 5, "a@1000 is in 5 HOP windows: {rows:?}");
}

/// Running the same job again must not leave the first run's dead letters behind
/// (`FileDeadLetters::create` says it creates or truncates the file).
#[test]
fn rerun_does_not_duplicate_dead_letters() {
    let mut r = run(b"key,value,ts_ms\nb,x,2000\n", 1);
    assert_succeeded(&r);
    assert_eq!(read_dead_letters(&r.dead_letters).len(), 1);
    r.output = run_job(&r.job, 1);
    assert_succeeded(&r);
    let letters = read_dead_letters(&r.dead_letters);
    assert_eq!(
        letters.get(&2).map(Vec::len),
        Some(1),
        "line 2 after a rerun: {letters:?}"
    );
}

/// A reason says what is wrong with the row, briefly: the column that does not parse,
/// the field count, the empty line, the invalid UTF-8.
#[test]
fn reasons_name_the_problem() {
    let input = generate();
    let r = run(&input.bytes, 1);
    assert_succeeded(&r);
    let letters = read_dead_letters(&r.dead_letters);
    let mut wrong = Vec::new();
    for (line, hint) in &input.hints {
        let Some(l) = letters.get(line).and_then(|v| v.first()) else {
            wrong.push(format!("line {line}: no dead letter"));
            continue;
        };
        if !l.reason.to_lowercase().contains(&hint.to_lowercase()) || l.reason.len() > 500 {
            let shown: String = l.reason.chars().take(120).collect();
            wrong.push(format!(
                "line {line} ({}): reason '{shown}' ({} bytes) should mention '{hint}' in under 500 bytes",
                short(&input.bad[line]),
                l.reason.len()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Runs a stateless copy job (`key`, `value` of every good row) over `input`, read with
/// `format_options`; returns the run, the rows written (sorted) and the dead letters.
fn run_copy(
    input: &[u8],
    format_options: &str,
) -> (Output, Vec<String>, BTreeMap<u64, Vec<Letter>>) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = tmp.path().join("input");
    let out = tmp.path().join("out");
    let dead = tmp.path().join("dead.jsonl");
    std::fs::write(&path, input).unwrap_or_else(|e| panic!("write input: {e}"));
    let sql = format!(
        "CREATE TABLE events (key STRING, `value` BIGINT, ts_ms BIGINT) WITH (
  'connector' = 'filesystem', 'path' = '{}', {format_options}, 'dead-letter.path' = '{}');
CREATE TABLE copy (key STRING, `value` BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
INSERT INTO copy SELECT key, `value` FROM events;
",
        path.display(),
        dead.display(),
        out.display()
    );
    let job = tmp.path().join("job.sql");
    std::fs::write(&job, sql).unwrap_or_else(|e| panic!("write job: {e}"));
    let output = run_job(&job, 1);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "tidewater failed:\n{err}");
    let mut rows = Vec::new();
    for e in std::fs::read_dir(&out).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        rows.extend(text.lines().map(str::to_string));
    }
    rows.sort();
    let letters = if dead.exists() {
        read_dead_letters(&dead)
    } else {
        BTreeMap::new()
    };
    (output, rows, letters)
}

/// JSON lines: a bad line is a dead letter and its neighbours are kept.
#[test]
fn json_bad_line_keeps_its_neighbours() {
    let input = b"{\"key\":\"a\",\"value\":1,\"ts_ms\":1000}
{\"key\":\"b\",\"value\":\"zz\",\"ts_ms\":2000}
{\"key\":\"c\",\"value\":3,\"ts_ms\":3000}
not json at all
{\"ts_ms\":4000,\"value\":4,\"key\":\"d\"}";
    let (_, rows, letters) = run_copy(input, "'format' = 'json'");
    assert_eq!(rows, vec!["a,1", "c,3", "d,4"]);
    assert_eq!(letters.keys().copied().collect::<Vec<_>>(), vec![2, 4]);
    assert!(letters.values().flatten().all(|l| !l.reason.is_empty()));
}

/// A CSV file whose last line has no newline (common for hand-written files).
#[test]
fn csv_last_line_without_newline_is_read() {
    let (_, rows, letters) = run_copy(
        b"key,value,ts_ms\na,1,1000\nb,2,2000",
        "'format' = 'csv', 'csv.header' = 'true'",
    );
    assert_eq!(rows, vec!["a,1", "b,2"], "dead letters: {letters:?}");
    assert!(letters.is_empty(), "{letters:?}");
}
