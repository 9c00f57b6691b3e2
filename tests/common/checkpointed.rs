//! The job of `checkpoint_damage.rs` in a temporary directory, run through the real
//! binary: its SQL and expected output, interrupting it part way and resuming it, and
//! reading its checkpoint and sink directories.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tidewater");

/// Event time of row 0: 2023-11-14T22:13:20Z, a multiple of the 2 s slide.
const T0: i64 = 1_700_000_000_000;
/// Rows of the bounded source.
pub const ROWS: i64 = 40_000;
/// Rows per second of wall time (the source paces itself).
const RATE: i64 = 20_000;
/// Keys: row `r` has key `r % KEYS`.
const KEYS: i64 = 7;
/// Parallelism of every stage.
pub const PARALLELISM: &str = "2";
/// Complete checkpoints to wait for before interrupting a job (the default retention).
const MIN_COMPLETE: usize = 3;
/// Upper bound on waiting for a condition of the checkpoint directory.
const POLL_LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// The job and its expected output
// ---------------------------------------------------------------------------------------

/// One result row: window start and end (epoch ms), key, SUM(seq), COUNT(*).
pub type Row = (i64, i64, i64, i64, i64);

/// A path as a SQL string literal.
fn sql_path(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "''"))
}

/// HOP 2 s / `size_s` s, SUM(seq) and COUNT(*) by key, into CSV part files in `out`.
fn job_sql(out: &Path, size_s: u32) -> String {
    format!(
        "CREATE TABLE gen (
  seq BIGINT,
  ts_ms BIGINT,
  k AS seq % {KEYS},
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '{RATE}',
  'number-of-rows' = '{ROWS}',
  'fields.seq.kind' = 'sequence',
  'fields.seq.start' = '0',
  'fields.ts_ms.kind' = 'sequence',
  'fields.ts_ms.start' = '{T0}'
);

CREATE TABLE sums (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  k BIGINT,
  total BIGINT,
  n BIGINT
) WITH ('connector' = 'filesystem', 'path' = {out}, 'format' = 'csv');

INSERT INTO sums
SELECT window_start, window_end, k, SUM(seq), COUNT(*)
FROM TABLE(HOP(TABLE gen, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '{size_s}' SECOND))
GROUP BY window_start, window_end, k;
",
        out = sql_path(out)
    )
}

/// The job's output computed directly: every (window, key) with its sum and count,
/// sorted.
pub fn expected_rows(size_s: u32) -> Vec<Row> {
    let (slide, size) = (2_000, i64::from(size_s) * 1_000);
    let mut m: BTreeMap<(i64, i64, i64), (i64, i64)> = BTreeMap::new();
    for r in 0..ROWS {
        let ts = T0 + r;
        let mut start = ts.div_euclid(slide) * slide;
        while start > ts - size {
            let e = m.entry((start, start + size, r % KEYS)).or_default();
            e.0 += r;
            e.1 += 1;
            start -= slide;
        }
    }
    m.into_iter()
        .map(|((s, e, k), (sum, n))| (s, e, k, sum, n))
        .collect()
}

/// Rows the source had emitted before the position `sources` (a manifest's source
/// positions): `next_block` blocks of `rows_per_block` per subtask, dealt round-robin.
pub fn rows_before(sources: &[Value]) -> u64 {
    let p = sources.len() as i64;
    let mut n = 0;
    for (s, pos) in sources.iter().enumerate() {
        let next = pos["next_block"]
            .as_i64()
            .unwrap_or_else(|| panic!("no next_block in {pos}"));
        let block = pos["rows_per_block"]
            .as_i64()
            .unwrap_or_else(|| panic!("no rows_per_block in {pos}"));
        for b in 0..next {
            let first = (b * p + s as i64) * block;
            n += (ROWS - first).clamp(0, block);
        }
    }
    n as u64
}

// ---------------------------------------------------------------------------------------
// A job in a temporary directory
// ---------------------------------------------------------------------------------------

/// `job.sql`, its sink directory `out` and its checkpoint directory `ck`, in a fresh
/// temporary directory.
pub struct Scenario {
    pub tmp: tempfile::TempDir,
    pub job: PathBuf,
    pub out: PathBuf,
    pub ck: PathBuf,
}

impl Scenario {
    pub fn new(size_s: u32) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("job.sql");
        let out = tmp.path().join("out");
        let ck = tmp.path().join("ck");
        let s = Self { tmp, job, out, ck };
        s.write_job(size_s);
        s
    }

    pub fn write_job(&self, size_s: u32) {
        fs::write(&self.job, job_sql(&self.out, size_s)).unwrap();
    }

    /// `tidewater run job.sql -p 2 --checkpoint-interval 100ms --checkpoint-dir ck`
    /// plus `extra`.
    fn command(&self, extra: &[&str]) -> Command {
        let mut c = tidewater();
        c.arg("run")
            .arg(&self.job)
            .args(["-p", PARALLELISM, "--checkpoint-interval", "100ms"])
            .arg("--checkpoint-dir")
            .arg(&self.ck)
            .args(extra)
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs the job (to its end or its failure).
    pub fn run(&self, extra: &[&str]) -> Output {
        self.command(extra).output().expect("run tidewater")
    }

    /// Runs the job and kills it once the checkpoint directory holds `MIN_COMPLETE`
    /// complete checkpoints. Returns the complete epochs left, ascending; none of them
    /// is the final one.
    pub fn interrupt(&self) -> Vec<u64> {
        let log = self.tmp.path().join("interrupted.stderr");
        let mut child = self
            .command(&[])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tidewater");
        let started = Instant::now();
        loop {
            if complete_epochs(&self.ck).len() >= MIN_COMPLETE {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the job ended ({status}) before it had {MIN_COMPLETE} complete \
                     checkpoints; stderr:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if started.elapsed() > POLL_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no {MIN_COMPLETE} complete checkpoints in {:?} after {POLL_LIMIT:?}; \
                     stderr:\n{}",
                    self.ck,
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().expect("kill tidewater");
        child.wait().expect("wait for tidewater");
        let complete = complete_epochs(&self.ck);
        assert!(complete.len() >= MIN_COMPLETE, "complete: {complete:?}");
        for e in &complete {
            assert_eq!(
                manifest(&self.ck, *e)["finished"],
                Value::Bool(false),
                "checkpoint {e} was taken after the input ended: the job was not \
                 interrupted part way (raise ROWS)"
            );
        }
        complete
    }

    pub fn epoch_dir(&self, epoch: u64) -> PathBuf {
        epoch_dir(&self.ck, epoch)
    }
}

pub fn tidewater() -> Command {
    let mut c = Command::new(BIN);
    // INFO lines (restores, warnings) on stderr as by default, without colours; a panic
    // would show its backtrace.
    c.env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "1");
    c
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstderr:\n{}\nstdout:\n{}",
        out.status,
        stderr(out),
        stdout(out)
    );
    assert_no_panic(&stderr(out));
}

fn assert_no_panic(err: &str) {
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "internal error"] {
        assert!(!err.contains(bad), "stderr mentions '{bad}':\n{err}");
    }
}

/// Exit status 2, no panic, and every needle on stderr. Returns stderr.
pub fn assert_exit_2(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit status 2, got {}; stderr:\n{err}",
        out.status
    );
    assert_no_panic(&err);
    for n in needles {
        assert!(err.contains(n), "stderr does not mention '{n}':\n{err}");
    }
    err
}

// ---------------------------------------------------------------------------------------
// The checkpoint directory
// ---------------------------------------------------------------------------------------

fn epoch_dir(ck: &Path, epoch: u64) -> PathBuf {
    ck.join(format!("chk-{epoch:010}"))
}

/// Epochs of every `chk-*` directory, ascending.
pub fn all_epochs(ck: &Path) -> Vec<u64> {
    let Ok(entries) = fs::read_dir(ck) else {
        return Vec::new();
    };
    let mut out: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    out.sort_unstable();
    out
}

/// Epochs whose directory holds a `_manifest`, ascending.
pub fn complete_epochs(ck: &Path) -> Vec<u64> {
    all_epochs(ck)
        .into_iter()
        .filter(|e| epoch_dir(ck, *e).join("_manifest").is_file())
        .collect()
}

/// The JSON body of a checkpoint's manifest (after its header line).
pub fn manifest(ck: &Path, epoch: u64) -> Value {
    let path = epoch_dir(ck, epoch).join("_manifest");
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"));
    let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
    let header = std::str::from_utf8(&bytes[..nl]).unwrap();
    assert!(
        header.starts_with("tidewater-manifest v1 crc32="),
        "header of {path:?}: {header:?}"
    );
    serde_json::from_slice(&bytes[nl + 1..]).unwrap()
}

pub fn sources(ck: &Path, epoch: u64) -> Vec<Value> {
    manifest(ck, epoch)["sources"].as_array().unwrap().clone()
}

/// The epoch in `restored checkpoint N in X ms`, if the run restored one.
pub fn restored_epoch(err: &str) -> Option<u64> {
    let at = err.find("restored checkpoint ")? + "restored checkpoint ".len();
    err[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// The sink directory
// ---------------------------------------------------------------------------------------

/// Every file name in a sink directory, sorted (none when it does not exist).
pub fn file_names(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A part file name, committed (`part-<run>-<subtask>-<epoch>.csv`) or in progress
/// (`.part-....csv.inprogress`): (run, subtask, epoch).
pub fn parse_part(name: &str) -> Option<(String, u64, u64)> {
    let plain = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".inprogress"))
        .unwrap_or(name);
    let rest = plain.strip_prefix("part-")?.strip_suffix(".csv")?;
    let mut it = rest.rsplitn(3, '-');
    let epoch = it.next()?.parse().ok()?;
    let subtask = it.next()?.parse().ok()?;
    Some((it.next()?.to_string(), subtask, epoch))
}

/// Rows of the committed parts among `names`; no hidden (in-progress) file may be left
/// in the directory.
pub fn committed_rows(dir: &Path, names: &BTreeSet<String>) -> Vec<Row> {
    let all = file_names(dir);
    let hidden: Vec<&String> = all.iter().filter(|n| n.starts_with('.')).collect();
    assert!(
        hidden.is_empty(),
        "{dir:?} still holds hidden files after the job ended: {hidden:?}"
    );
    let mut rows = Vec::new();
    for n in names.iter().filter(|n| n.starts_with("part-")) {
        let text = fs::read_to_string(dir.join(n)).unwrap();
        rows.extend(text.lines().map(parse_row));
    }
    rows
}

/// Rows of every committed part in the sink directory.
pub fn all_committed_rows(dir: &Path) -> Vec<Row> {
    committed_rows(dir, &file_names(dir))
}

fn parse_ts(s: &str) -> i64 {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.3f")
        .unwrap_or_else(|e| panic!("bad timestamp {s:?}: {e}"))
        .and_utc()
        .timestamp_millis()
}

fn parse_row(line: &str) -> Row {
    let f: Vec<&str> = line.split(',').collect();
    assert_eq!(f.len(), 5, "expected 5 columns in row {line:?}");
    let int = |s: &str| -> i64 {
        s.parse()
            .unwrap_or_else(|_| panic!("bad integer {s:?} in row {line:?}"))
    };
    (
        parse_ts(f[0]),
        parse_ts(f[1]),
        int(f[2]),
        int(f[3]),
        int(f[4]),
    )
}

/// The rows as a multiset equal `expected` (sorted); on failure, says which rows are
/// missing and which are extra (duplicates included).
pub fn assert_rows_exact(mut got: Vec<Row>, expected: &[Row], what: &str) {
    got.sort_unstable();
    if got == expected {
        return;
    }
    let mut count: BTreeMap<&Row, i64> = BTreeMap::new();
    for r in expected {
        *count.entry(r).or_default() += 1;
    }
    for r in &got {
        *count.entry(r).or_default() -= 1;
    }
    let missing: Vec<&Row> = count
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(r, _)| *r)
        .collect();
    let extra: Vec<&Row> = count
        .iter()
        .filter(|(_, c)| **c < 0)
        .map(|(r, _)| *r)
        .collect();
    panic!(
        "{what}: the committed output differs from the uninterrupted job's: {} rows, \
         expected {}; {} missing (first: {:?}), {} extra or duplicated (first: {:?})",
        got.len(),
        expected.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
}

/// The counters `events in`, `late events` and `dead letters` of the summary line.
pub fn summary(err: &str) -> (u64, u64, u64) {
    let line = err
        .lines()
        .find(|l| l.contains("events in:"))
        .unwrap_or_else(|| panic!("no summary on stderr:\n{err}"));
    let counter = |label: &str| -> u64 {
        let at = line
            .find(label)
            .unwrap_or_else(|| panic!("no '{label}' in summary {line:?}"));
        line[at + label.len()..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("no number after '{label}' in {line:?}"))
    };
    (
        counter("events in:"),
        counter("late events:"),
        counter("dead letters:"),
    )
}

// ---------------------------------------------------------------------------------------
// Resuming after damage
// ---------------------------------------------------------------------------------------

/// An interrupted job whose newest complete checkpoint has committed output of its own
/// epoch (see [`interrupt_with_output`]).
pub struct Interrupted {
    pub scenario: Scenario,
    /// The complete epochs, ascending.
    pub complete: Vec<u64>,
    /// The newest complete epoch, and the one before it.
    pub newest: u64,
    pub previous: u64,
    /// The newest checkpoint's parts (committed or in progress).
    pub covered: Vec<String>,
}

/// An interrupted job whose newest complete checkpoint has committed output of its own
/// epoch, so that falling back past it must remove that output. Every checkpoint but the
/// first normally covers output; a few attempts make a rare empty one harmless.
pub fn interrupt_with_output() -> Interrupted {
    for _ in 0..5 {
        let s = Scenario::new(10);
        let complete = s.interrupt();
        let newest = *complete.last().unwrap();
        let covered: Vec<String> = file_names(&s.out)
            .into_iter()
            .filter(|n| parse_part(n).is_some_and(|(_, _, e)| e == newest))
            .collect();
        if covered.iter().any(|n| !n.starts_with('.')) {
            return Interrupted {
                scenario: s,
                previous: complete[complete.len() - 2],
                newest,
                complete,
                covered,
            };
        }
    }
    panic!("in 5 attempts, the newest checkpoint never had committed output");
}

/// Reruns the interrupted job to its end and checks that it restored `restore` (with
/// `warnings` on stderr), read only the input after that checkpoint, and that the
/// committed output is exactly the uninterrupted job's. Returns stderr.
pub fn resume_and_check(s: &Scenario, restore: u64, warnings: &[String], what: &str) -> String {
    resume_and_check_except(s, restore, warnings, &[], what)
}

/// [`resume_and_check`], leaving the part files `foreign` (not the job's) out of the
/// comparison.
pub fn resume_and_check_except(
    s: &Scenario,
    restore: u64,
    warnings: &[String],
    foreign: &[&str],
    what: &str,
) -> String {
    let replay = ROWS as u64 - rows_before(&sources(&s.ck, restore));
    let out = s.run(&[]);
    assert_success(&out, what);
    let err = stderr(&out);
    assert_eq!(
        restored_epoch(&err),
        Some(restore),
        "{what}: the restored checkpoint; stderr:\n{err}"
    );
    for w in warnings {
        assert!(
            err.contains(w.as_str()),
            "{what}: stderr does not mention '{w}':\n{err}"
        );
    }
    assert_eq!(
        summary(&err),
        (replay, 0, 0),
        "{what}: (events in, late events, dead letters) after resuming from checkpoint \
         {restore}; stderr:\n{err}"
    );
    let mut names = file_names(&s.out);
    names.retain(|n| !foreign.contains(&n.as_str()));
    assert_rows_exact(committed_rows(&s.out, &names), &expected_rows(10), what);
    // The job ended: its last checkpoint says so, and nothing damaged is left.
    let last = *complete_epochs(&s.ck).last().unwrap();
    assert_eq!(manifest(&s.ck, last)["finished"], Value::Bool(true));
    err
}
