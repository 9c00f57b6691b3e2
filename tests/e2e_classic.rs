//! End-to-end tests of the `tidewater` binary on the classic workload: job files are
//! written into a temporary directory, the real binary runs them, and the part files it
//! writes are compared, as multisets of rows, with the naive oracle of
//! `crates/tidewater-window/tests/common/oracle.rs`.
//!
//! The input is generated in Rust with a seeded RNG in the shape of
//! `../shared/workload/gen.py` (Zipf-skewed keys, ~1 event per ms of event time, 10 % of
//! events delayed by up to 1 999 ms), so these tests need no Python; one extra test
//! cross-checks with `gen.py` itself when it and `python3` are present.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/classic.rs"]
mod classic;
#[path = "../crates/tidewater-window/tests/common/oracle.rs"]
mod oracle;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::NaiveDateTime;
use classic::{ClassicEvent, MAX_DELAY_MS, T0, classic_csv, classic_events};
use oracle::{Agg, AggFn, AggValue, ArgType, Event, KeyValue, ResultRow, Window};

// ---------------------------------------------------------------------------------------
// The classic workload
// ---------------------------------------------------------------------------------------

const EVENTS: usize = 60_000;
const KEYS: usize = 1_000;

/// Reads a `key,value,ts` CSV with a header (gen.py's output).
fn read_classic_csv(path: &Path) -> Vec<ClassicEvent> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("key,value,ts"), "header of {path:?}");
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 3, "bad line {l:?} in {path:?}");
            ClassicEvent {
                key: f[0].to_string(),
                value: f[1].parse().unwrap(),
                ts: f[2].parse().unwrap(),
            }
        })
        .collect()
}

/// Checks the promise the workload makes: nothing is more than 1 999 ms behind the
/// largest timestamp before it, so a 2 s watermark delay makes no event late.
fn assert_never_late(events: &[ClassicEvent]) {
    let mut max = i64::MIN;
    for (i, e) in events.iter().enumerate() {
        assert!(
            e.ts >= max.saturating_sub(MAX_DELAY_MS),
            "event {i} ({e:?}) is more than {MAX_DELAY_MS} ms behind {max}"
        );
        max = max.max(e.ts);
    }
}

/// The classic job (HOP 2 s / 10 s, SUM and COUNT by key) according to the oracle.
fn classic_oracle(events: &[ClassicEvent]) -> Vec<ResultRow> {
    let evs: Vec<Event> = events
        .iter()
        .map(|e| Event {
            keys: vec![KeyValue::Str(e.key.clone())],
            ts: e.ts,
            value: Some(e.value),
        })
        .collect();
    oracle::evaluate(
        &evs,
        &Window::Hop {
            size: 10_000,
            slide: 2_000,
        },
        &[
            Agg {
                func: AggFn::Sum,
                arg: ArgType::Int,
            },
            Agg {
                func: AggFn::CountStar,
                arg: ArgType::Int,
            },
        ],
    )
}

// ---------------------------------------------------------------------------------------
// Job files
// ---------------------------------------------------------------------------------------

/// A path as a SQL string literal.
fn sql_path(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "''"))
}

/// The classic job reading a table with `source_options` (the inside of `WITH (..)`),
/// writing CSV part files into `out`.
fn classic_job(source_options: &str, out: &Path) -> String {
    format!(
        "-- The classic job (examples/sliding_sum.sql) into a directory of CSV part files.
CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH ({source_options});

CREATE TABLE sums (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  key STRING,
  total BIGINT,
  events BIGINT
) WITH ('connector' = 'filesystem', 'path' = {out}, 'format' = 'csv');

INSERT INTO sums
SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
",
        out = sql_path(out)
    )
}

fn file_source_options(csv: &Path, chunk_size: Option<usize>) -> String {
    let mut s = format!(
        "'connector' = 'filesystem', 'path' = {}, 'format' = 'csv', 'csv.header' = 'true'",
        sql_path(csv)
    );
    if let Some(c) = chunk_size {
        let _ = write!(s, ", 'source.chunk-size' = '{c}'");
    }
    s
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
}

// ---------------------------------------------------------------------------------------
// Running the binary and reading what it wrote
// ---------------------------------------------------------------------------------------

fn tidewater() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidewater"));
    // Keep stderr to the summary (and errors), whatever the caller's environment says.
    c.env_remove("RUST_LOG");
    c
}

/// Runs `tidewater run job -p p` with `stdin` piped in (empty when `None`) and checks
/// that it succeeded.
fn run_job(job: &Path, p: usize, stdin: Option<&[u8]>) -> Output {
    let mut cmd = tidewater();
    cmd.arg("run")
        .arg(job)
        .arg("-p")
        .arg(p.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = job.parent() {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().expect("start tidewater");
    let mut pipe = child.stdin.take().expect("stdin pipe");
    let data = stdin.unwrap_or_default().to_vec();
    // A writer thread, so a child that writes while we write cannot deadlock us.
    let writer = std::thread::spawn(move || {
        // The child may legitimately stop reading early (it fails); its status says so.
        let _ = pipe.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for tidewater");
    writer.join().expect("stdin writer");
    assert!(
        out.status.success(),
        "tidewater run {job:?} -p {p} failed ({}):\nstderr:\n{}\nstdout:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// The counters of the summary line: `events in: N  results out: N  late events: N ...`.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    events_in: u64,
    results_out: u64,
    late_events: u64,
    dead_letters: u64,
}

fn summary(stderr: &[u8]) -> Summary {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| l.contains("events in:"))
        .unwrap_or_else(|| panic!("no summary on stderr:\n{text}"));
    let counter = |label: &str| -> u64 {
        let at = line
            .find(label)
            .unwrap_or_else(|| panic!("no '{label}' in summary {line:?}"));
        let digits: String = line[at + label.len()..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no number after '{label}' in {line:?}"))
    };
    Summary {
        events_in: counter("events in:"),
        results_out: counter("results out:"),
        late_events: counter("late events:"),
        dead_letters: counter("dead letters:"),
    }
}

/// Every line of the committed `part-*` files of a sink directory. Hidden files (in
/// progress) are not results, but none may be left behind after a successful run.
fn read_parts(dir: &Path) -> Vec<String> {
    let mut names: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {dir:?}: {e}")) {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.'),
            "{dir:?} still holds the hidden file {name:?} after the job ended"
        );
        if name.starts_with("part-") {
            names.push(entry.path());
        }
    }
    names.sort();
    let mut lines = Vec::new();
    for p in names {
        let text = std::fs::read_to_string(&p).unwrap();
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

/// `YYYY-MM-DD HH:MM:SS.sss` (UTC) to epoch milliseconds.
fn parse_ts(s: &str) -> i64 {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.3f")
        .unwrap_or_else(|e| panic!("bad timestamp {s:?}: {e}"))
        .and_utc()
        .timestamp_millis()
}

fn parse_int(s: &str, line: &str) -> i64 {
    s.parse()
        .unwrap_or_else(|_| panic!("bad integer {s:?} in row {line:?}"))
}

/// Rows `window_start,window_end,key,total,events` of the classic sink.
fn parse_classic_rows(lines: &[String]) -> Vec<ResultRow> {
    lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "expected 5 columns in row {l:?}");
            ResultRow {
                window_start: parse_ts(f[0]),
                window_end: parse_ts(f[1]),
                keys: vec![KeyValue::Str(f[2].to_string())],
                aggs: vec![
                    AggValue::Int(parse_int(f[3], l)),
                    AggValue::Int(parse_int(f[4], l)),
                ],
            }
        })
        .collect()
}

/// Runs a classic job file and checks its output and summary against the oracle.
fn check_classic_run(
    job: &Path,
    out_dir: &Path,
    p: usize,
    stdin: Option<&[u8]>,
    expected: &[ResultRow],
    what: &str,
) {
    let out = run_job(job, p, stdin);
    let lines = read_parts(out_dir);
    let rows = parse_classic_rows(&lines);
    if let Err(diff) = oracle::compare(expected, &rows, 0.0) {
        panic!("{what}, -p {p}: the output differs from the oracle: {diff}");
    }
    assert_eq!(
        summary(&out.stderr),
        Summary {
            events_in: EVENTS as u64,
            results_out: rows.len() as u64,
            late_events: 0,
            dead_letters: 0,
        },
        "{what}, -p {p}: summary; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn classic_job_matches_oracle() {
    let tmp = tempfile::tempdir().unwrap();
    let events = classic_events(EVENTS, KEYS, 3);
    assert_never_late(&events);
    let csv = tmp.path().join("ev.csv");
    write_file(&csv, &classic_csv(&events, true));
    let expected = classic_oracle(&events);
    // The data must exercise what it is meant to: many keys, many windows, skew.
    assert!(expected.len() > 10_000, "only {} rows", expected.len());
    let top = events.iter().filter(|e| e.key == "k0").count();
    assert!(top > EVENTS / 20, "k0 has only {top} events: no skew");

    // The default chunk size (1 MiB) reads this file in two chunks; small chunks spread
    // it over every source subtask, whose watermarks then interleave.
    for (p, chunk) in [
        (1, None),
        (2, None),
        (4, None),
        (2, Some(16_384)),
        (4, Some(16_384)),
    ] {
        let tag = format!("p{p}-{}", chunk.map_or("default".into(), |c| c.to_string()));
        let out_dir = tmp.path().join(format!("out-{tag}"));
        let job = tmp.path().join(format!("classic-{tag}.sql"));
        write_file(
            &job,
            &classic_job(&file_source_options(&csv, chunk), &out_dir),
        );
        check_classic_run(
            &job,
            &out_dir,
            p,
            None,
            &expected,
            &format!("file source, chunk size {chunk:?}"),
        );
    }
}

#[test]
fn stdin_source_matches_file_source() {
    let tmp = tempfile::tempdir().unwrap();
    let events = classic_events(EVENTS, KEYS, 3);
    let expected = classic_oracle(&events);
    let data = classic_csv(&events, false);

    // Through standard input (one source subtask, then a hash exchange).
    let stdin_out = tmp.path().join("out-stdin");
    let stdin_job = tmp.path().join("classic-stdin.sql");
    write_file(
        &stdin_job,
        &classic_job("'connector' = 'stdin', 'format' = 'csv'", &stdin_out),
    );
    check_classic_run(
        &stdin_job,
        &stdin_out,
        2,
        Some(data.as_bytes()),
        &expected,
        "stdin source",
    );

    // The same lines from a file: the same rows, row for row.
    let csv = tmp.path().join("ev.csv");
    write_file(&csv, &data);
    let file_out = tmp.path().join("out-file");
    let file_job = tmp.path().join("classic-file.sql");
    write_file(
        &file_job,
        &classic_job(
            &format!(
                "'connector' = 'filesystem', 'path' = {}, 'format' = 'csv'",
                sql_path(&csv)
            ),
            &file_out,
        ),
    );
    run_job(&file_job, 2, None);
    let mut from_stdin = read_parts(&stdin_out);
    let mut from_file = read_parts(&file_out);
    from_stdin.sort();
    from_file.sort();
    assert!(
        from_stdin == from_file,
        "stdin and file sources disagree ({} vs {} rows)",
        from_stdin.len(),
        from_file.len()
    );
}

/// Rows of the datagen job and the window of each sequence row, computed in the test.
const GEN_ROWS: i64 = 25_000;
/// Not a multiple of the window size: the first and last windows are partial.
const GEN_T0: i64 = T0 + 250;
const GEN_IDS: i64 = 5;

fn datagen_source(parallel_note: &str) -> String {
    format!(
        "-- {parallel_note}
CREATE TABLE gen (
  id BIGINT,
  seq BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '1000000000',
  'number-of-rows' = '{GEN_ROWS}',
  'fields.id.min' = '0',
  'fields.id.max' = '{max_id}',
  'fields.seq.kind' = 'sequence',
  'fields.seq.start' = '0',
  'fields.ts_ms.kind' = 'sequence',
  'fields.ts_ms.start' = '{GEN_T0}',
  'fields.ts_ms.end' = '{ts_end}'
);
",
        max_id = GEN_IDS - 1,
        // Larger than 'number-of-rows' needs: the smaller bound wins.
        ts_end = GEN_T0 + 10 * GEN_ROWS,
    )
}

/// Row r has `seq = r` and `ts = GEN_T0 + r`: per 1 s tumbling window, the number of rows
/// and the sum of `seq` over them.
fn datagen_expected() -> BTreeMap<(i64, i64), (i64, i64)> {
    let mut m: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for r in 0..GEN_ROWS {
        let ts = GEN_T0 + r;
        let start = oracle::floor_div(ts, 1_000) * 1_000;
        let e = m.entry((start, start + 1_000)).or_default();
        e.0 += 1;
        e.1 += r;
    }
    m
}

#[test]
fn datagen_sequence_job_counts_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let job = tmp.path().join("datagen.sql");
    write_file(
        &job,
        &format!(
            "{}
CREATE TABLE counts (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  id BIGINT,
  n BIGINT,
  seq_sum BIGINT
) WITH ('connector' = 'filesystem', 'path' = {}, 'format' = 'csv');

INSERT INTO counts
SELECT window_start, window_end, id, COUNT(*), SUM(seq)
FROM TABLE(TUMBLE(TABLE gen, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY window_start, window_end, id;
",
            datagen_source("bounded datagen, keyed by a random id"),
            sql_path(&out_dir)
        ),
    );
    // Three subtasks: blocks of rows are dealt round-robin, so the subtasks end at
    // different times and their event times are far apart.
    let out = run_job(&job, 3, None);
    let lines = read_parts(&out_dir);

    let mut seen = BTreeMap::new();
    let mut per_window: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for l in &lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 5, "expected 5 columns in row {l:?}");
        let (start, end) = (parse_ts(f[0]), parse_ts(f[1]));
        let (id, n, seq_sum) = (parse_int(f[2], l), parse_int(f[3], l), parse_int(f[4], l));
        assert!((0..GEN_IDS).contains(&id), "id out of range in {l:?}");
        assert!(n > 0, "empty group in {l:?}");
        assert!(
            seen.insert((start, end, id), l.clone()).is_none(),
            "window and id emitted twice: {l:?}"
        );
        let w = per_window.entry((start, end)).or_default();
        w.0 += n;
        w.1 += seq_sum;
    }
    let expected = datagen_expected();
    assert_eq!(
        per_window, expected,
        "per 1 s window: (rows, sum of seq) over all ids"
    );
    let total: i64 = per_window.values().map(|v| v.0).sum();
    assert_eq!(total, GEN_ROWS);
    assert_eq!(
        summary(&out.stderr),
        Summary {
            events_in: GEN_ROWS as u64,
            results_out: lines.len() as u64,
            late_events: 0,
            dead_letters: 0,
        },
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GROUP BY window_start, window_end` with no key is valid Flink SQL (one row per
/// window).
#[test]
fn datagen_keyless_tumble_counts_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let job = tmp.path().join("datagen-keyless.sql");
    write_file(
        &job,
        &format!(
            "{}
CREATE TABLE counts (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  n BIGINT,
  seq_sum BIGINT
) WITH ('connector' = 'filesystem', 'path' = {}, 'format' = 'csv');

INSERT INTO counts
SELECT window_start, window_end, COUNT(*), SUM(seq)
FROM TABLE(TUMBLE(TABLE gen, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY window_start, window_end;
",
            datagen_source("bounded datagen, one row per window"),
            sql_path(&out_dir)
        ),
    );
    let out = run_job(&job, 2, None);
    let lines = read_parts(&out_dir);
    let mut got: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for l in &lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 4, "expected 4 columns in row {l:?}");
        let prev = got.insert(
            (parse_ts(f[0]), parse_ts(f[1])),
            (parse_int(f[2], l), parse_int(f[3], l)),
        );
        assert!(prev.is_none(), "window emitted twice: {l:?}");
    }
    assert_eq!(got, datagen_expected());
    let s = summary(&out.stderr);
    assert_eq!(
        (s.events_in, s.results_out),
        (GEN_ROWS as u64, got.len() as u64)
    );
}

#[test]
fn explain_shows_slicing() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("ev.csv");
    write_file(&csv, &classic_csv(&classic_events(100, 10, 3), true));
    let out_dir = tmp.path().join("out");
    let job = tmp.path().join("classic.sql");
    write_file(
        &job,
        &classic_job(&file_source_options(&csv, None), &out_dir),
    );
    for p in [3, 1] {
        let out = tidewater()
            .arg("explain")
            .arg(&job)
            .arg("-p")
            .arg(p.to_string())
            .output()
            .expect("run tidewater explain");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "explain -p {p} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let must = [
            format!("Job 'classic', parallelism {p}"),
            format!("Stage 0  source 'events'  parallelism {p}"),
            "| hash(key) over".to_string(),
            format!("Stage 1  window  parallelism {p}"),
            "HOP size 10000 ms slide 2000 ms".to_string(),
            "slices of 2000 ms".to_string(),
            "each event updates 1 slice".to_string(),
            "each window merges 5 slices".to_string(),
            "watermark = max seen - 2000 ms".to_string(),
            "SUM(`value`), COUNT(*)".to_string(),
        ];
        for m in &must {
            assert!(
                text.contains(m.as_str()),
                "explain -p {p} lacks {m:?}:\n{text}"
            );
        }
        // The hash exchange sits between the source and the window stage.
        let (src, hash, win) = (
            text.find("Stage 0").unwrap(),
            text.find("hash(key)").unwrap(),
            text.find("Stage 1").unwrap(),
        );
        assert!(src < hash && hash < win, "stage order in:\n{text}");
    }
}

/// `explain` only prints the plan; it must not touch the filesystem.
#[test]
fn explain_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("ev.csv");
    write_file(&csv, &classic_csv(&classic_events(100, 10, 3), true));
    let out_dir = tmp.path().join("out");
    let job = tmp.path().join("classic.sql");
    write_file(
        &job,
        &classic_job(&file_source_options(&csv, None), &out_dir),
    );
    let out = tidewater()
        .arg("explain")
        .arg(&job)
        .output()
        .expect("run tidewater explain");
    assert!(out.status.success());
    assert!(
        !out_dir.exists(),
        "explain created the sink directory {out_dir:?}"
    );
}

/// The same check on data from the shared generator itself, when it is next to the repo
/// (`../shared/workload/gen.py`) and python3 runs; otherwise there is nothing to compare.
#[test]
fn classic_job_on_gen_py_data_matches_oracle() {
    let gen_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/workload/gen.py");
    if !gen_py.is_file() {
        eprintln!("skipped: {gen_py:?} is missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("ev.csv");
    let status = Command::new("python3")
        .arg(&gen_py)
        .args(["--events", &EVENTS.to_string()])
        .args(["--keys", &KEYS.to_string()])
        .args(["--seed", "3", "--out"])
        .arg(&csv)
        .status();
    match status {
        Ok(s) => assert!(s.success(), "gen.py failed: {s}"),
        Err(e) => {
            eprintln!("skipped: cannot run python3: {e}");
            return;
        }
    }
    let events = read_classic_csv(&csv);
    assert_eq!(events.len(), EVENTS);
    assert_never_late(&events);
    let expected = classic_oracle(&events);
    let out_dir = tmp.path().join("out");
    let job = tmp.path().join("classic.sql");
    write_file(
        &job,
        &classic_job(&file_source_options(&csv, Some(65_536)), &out_dir),
    );
    check_classic_run(&job, &out_dir, 2, None, &expected, "gen.py data");
}
