#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Checkpoints that are damaged, half-written, unusable or refused, through the real
//! binary: a job is interrupted (SIGKILL) part way, its checkpoint directory or sink
//! directory is damaged the way a crash or a disk would, and the same command is run
//! again. Recovery must fall back to the newest checkpoint that is whole and the final,
//! committed output must be exactly the uninterrupted job's: fallback to an older
//! checkpoint may neither duplicate nor lose a row.
//!
//! The input is a bounded, paced `datagen` source made of sequences only, so the output
//! does not depend on timing, parallelism or block size and is computed here (see
//! [`expected_rows`]): row `r` has `seq = r`, event time `T0 + r` ms and key `r % 7`.
//! At 20 000 rows/s the 40 000 rows take about 2 s, long enough to interrupt the job
//! after a few of its 100 ms checkpoints, and every checkpoint covers some output.
//!
//! The only waiting is polling the checkpoint directory for the condition a test needs
//! (there is no other signal); nothing is asserted about time.

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
const ROWS: i64 = 40_000;
/// Rows per second of wall time (the source paces itself).
const RATE: i64 = 20_000;
/// Keys: row `r` has key `r % KEYS`.
const KEYS: i64 = 7;
/// Parallelism of every stage.
const PARALLELISM: &str = "2";
/// Complete checkpoints to wait for before interrupting a job (the default retention).
const MIN_COMPLETE: usize = 3;
/// Upper bound on waiting for a condition of the checkpoint directory.
const POLL_LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// The job and its expected output
// ---------------------------------------------------------------------------------------

/// One result row: window start and end (epoch ms), key, SUM(seq), COUNT(*).
type Row = (i64, i64, i64, i64, i64);

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
fn expected_rows(size_s: u32) -> Vec<Row> {
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
fn rows_before(sources: &[Value]) -> u64 {
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
struct Scenario {
    tmp: tempfile::TempDir,
    job: PathBuf,
    out: PathBuf,
    ck: PathBuf,
}

impl Scenario {
    fn new(size_s: u32) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("job.sql");
        let out = tmp.path().join("out");
        let ck = tmp.path().join("ck");
        let s = Self { tmp, job, out, ck };
        s.write_job(size_s);
        s
    }

    fn write_job(&self, size_s: u32) {
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
    fn run(&self, extra: &[&str]) -> Output {
        self.command(extra).output().expect("run tidewater")
    }

    /// Runs the job and kills it once the checkpoint directory holds `MIN_COMPLETE`
    /// complete checkpoints. Returns the complete epochs left, ascending; none of them
    /// is the final one.
    fn interrupt(&self) -> Vec<u64> {
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

    fn epoch_dir(&self, epoch: u64) -> PathBuf {
        epoch_dir(&self.ck, epoch)
    }
}

fn tidewater() -> Command {
    let mut c = Command::new(BIN);
    // INFO lines (restores, warnings) on stderr as by default, without colours; a panic
    // would show its backtrace.
    c.env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "1");
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_success(out: &Output, what: &str) {
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
fn assert_exit_2(out: &Output, needles: &[&str]) -> String {
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
fn all_epochs(ck: &Path) -> Vec<u64> {
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
fn complete_epochs(ck: &Path) -> Vec<u64> {
    all_epochs(ck)
        .into_iter()
        .filter(|e| epoch_dir(ck, *e).join("_manifest").is_file())
        .collect()
}

/// The JSON body of a checkpoint's manifest (after its header line).
fn manifest(ck: &Path, epoch: u64) -> Value {
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

fn sources(ck: &Path, epoch: u64) -> Vec<Value> {
    manifest(ck, epoch)["sources"].as_array().unwrap().clone()
}

fn flip_byte(path: &Path) {
    let mut b = fs::read(path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"));
    let i = b.len() / 2;
    b[i] ^= 0x5a;
    fs::write(path, b).unwrap();
}

fn truncate_to_half(path: &Path) {
    let b = fs::read(path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"));
    fs::write(path, &b[..b.len() / 2]).unwrap();
}

/// The epoch in `restored checkpoint N in X ms`, if the run restored one.
fn restored_epoch(err: &str) -> Option<u64> {
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
fn file_names(dir: &Path) -> BTreeSet<String> {
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
fn parse_part(name: &str) -> Option<(String, u64, u64)> {
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
fn committed_rows(dir: &Path, names: &BTreeSet<String>) -> Vec<Row> {
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
fn all_committed_rows(dir: &Path) -> Vec<Row> {
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
fn assert_rows_exact(mut got: Vec<Row>, expected: &[Row], what: &str) {
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
fn summary(err: &str) -> (u64, u64, u64) {
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
/// epoch, so that falling back past it must remove that output: the scenario, the
/// complete epochs (ascending) and the newest checkpoint's parts (committed or in
/// progress). Every checkpoint but the first normally covers output; a few attempts
/// make a rare empty one harmless.
fn interrupt_with_output() -> (Scenario, Vec<u64>, Vec<String>) {
    for _ in 0..5 {
        let s = Scenario::new(10);
        let complete = s.interrupt();
        let newest = *complete.last().unwrap();
        let covered: Vec<String> = file_names(&s.out)
            .into_iter()
            .filter(|n| parse_part(n).is_some_and(|(_, _, e)| e == newest))
            .collect();
        if covered.iter().any(|n| !n.starts_with('.')) {
            return (s, complete, covered);
        }
    }
    panic!("in 5 attempts, the newest checkpoint never had committed output");
}

/// Reruns the interrupted job to its end and checks that it restored `restore` (with
/// `warnings` on stderr), read only the input after that checkpoint, and that the
/// committed output is exactly the uninterrupted job's. Returns stderr.
fn resume_and_check(s: &Scenario, restore: u64, warnings: &[String], what: &str) -> String {
    resume_and_check_except(s, restore, warnings, &[], what)
}

/// [`resume_and_check`], leaving the part files `foreign` (not the job's) out of the
/// comparison.
fn resume_and_check_except(
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

/// A corrupt state file (one byte flipped) in the newest checkpoint: the restart warns
/// naming the file, restores the previous checkpoint and the output is exact. A rerun
/// after the end does nothing.
#[test]
fn corrupt_state_file_falls_back_to_previous_checkpoint() {
    let (s, complete, _) = interrupt_with_output();
    let newest = complete[complete.len() - 1];
    let previous = complete[complete.len() - 2];
    let file = "s1-t0-op0.arrow"; // the window state of subtask 0
    flip_byte(&s.epoch_dir(newest).join(file));

    resume_and_check(
        &s,
        previous,
        &[
            format!("checkpoint {newest} cannot be used: state file {file}"),
            "checksum".to_string(),
        ],
        "corrupt state file",
    );

    // The job has finished: the same command again changes nothing.
    let before = file_names(&s.out);
    let again = s.run(&[]);
    assert_success(&again, "rerun after the end");
    let err = stderr(&again);
    assert!(err.contains("the job had already finished"), "{err}");
    assert_eq!(
        file_names(&s.out),
        before,
        "a rerun after the end wrote output"
    );
    let list = tidewater()
        .args(["checkpoints", "list"])
        .arg(&s.ck)
        .output()
        .unwrap();
    assert_success(&list, "checkpoints list");
    let text = stdout(&list);
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.contains("complete (input finished)")),
        "{text}"
    );
    assert!(!text.contains("damaged"), "{text}");
}

/// Damage in the two newest checkpoints (a truncated state file, a missing one): the
/// third newest is restored and the output is exact.
#[test]
fn damage_in_two_checkpoints_falls_back_two() {
    let (s, complete, _) = interrupt_with_output();
    let n = complete.len();
    let (third, second, newest) = (complete[n - 3], complete[n - 2], complete[n - 1]);
    truncate_to_half(&s.epoch_dir(newest).join("s1-t1-op0.arrow"));
    fs::remove_file(s.epoch_dir(second).join("s0-t0-op1.arrow")).unwrap();

    resume_and_check(
        &s,
        third,
        &[
            format!("checkpoint {newest} cannot be used: state file s1-t1-op0.arrow"),
            format!("checkpoint {second} cannot be used: state file s0-t0-op1.arrow is missing"),
        ],
        "truncated and missing state files",
    );
}

/// A truncated manifest makes its checkpoint damaged: warned about, the previous one is
/// restored, the output is exact.
#[test]
fn truncated_manifest_is_ignored() {
    let (s, complete, _) = interrupt_with_output();
    let newest = complete[complete.len() - 1];
    let previous = complete[complete.len() - 2];
    truncate_to_half(&s.epoch_dir(newest).join("_manifest"));

    resume_and_check(
        &s,
        previous,
        &[
            format!("checkpoint {newest} ignored: manifest:"),
            "truncated".to_string(),
        ],
        "truncated manifest",
    );
}

/// A manifest that was being written when the job died (`_manifest.tmp`, no
/// `_manifest`): the checkpoint is incomplete, the previous one is restored, and the
/// output its sink had already committed for the newest epoch is not duplicated.
#[test]
fn half_written_manifest_is_ignored() {
    let (s, complete, _) = interrupt_with_output();
    let newest = complete[complete.len() - 1];
    let previous = complete[complete.len() - 2];
    let dir = s.epoch_dir(newest);
    fs::rename(dir.join("_manifest"), dir.join("_manifest.tmp")).unwrap();
    truncate_to_half(&dir.join("_manifest.tmp"));

    let err = resume_and_check(&s, previous, &[], "half-written manifest");
    assert!(
        !err.contains(&format!("checkpoint {newest} cannot be used")),
        "{err}"
    );
}

/// Deletes a part file the newest checkpoint covers and reruns: that checkpoint must
/// not be used (warned, naming the part), the previous one is. Returns the scenario and
/// the rerun's stderr.
fn missing_part_scenario() -> (Scenario, String) {
    let (s, complete, covered) = interrupt_with_output();
    let newest = complete[complete.len() - 1];
    let previous = complete[complete.len() - 2];
    let victim = &covered[0];
    fs::remove_file(s.out.join(victim)).unwrap();
    let plain = victim
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".inprogress"))
        .unwrap_or(victim);
    let replay = ROWS as u64 - rows_before(&sources(&s.ck, previous));

    let out = s.run(&[]);
    assert_success(&out, "missing part file");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("checkpoint {newest} cannot be used")) && err.contains(plain),
        "the warning does not name checkpoint {newest} and part {plain}:\n{err}"
    );
    assert_eq!(restored_epoch(&err), Some(previous), "stderr:\n{err}");
    assert_eq!(summary(&err), (replay, 0, 0), "stderr:\n{err}");
    // No part is left in progress.
    for n in file_names(&s.out) {
        assert!(!n.starts_with('.'), "hidden file {n:?} left in {:?}", s.out);
    }
    (s, err)
}

/// A missing part file (deleted by hand) that the newest checkpoint covers makes that
/// checkpoint unusable: the previous one is restored and its input replayed.
#[test]
fn missing_part_file_makes_its_checkpoint_unusable() {
    missing_part_scenario();
}

/// The same fallback must also give exactly the uninterrupted output: the sink of
/// subtask 0 reports the missing part before any operator has taken state from that
/// checkpoint (operators are restored last first).
#[test]
fn missing_part_file_fallback_output_is_exact() {
    let (s, _) = missing_part_scenario();
    assert_rows_exact(
        all_committed_rows(&s.out),
        &expected_rows(10),
        "missing part file",
    );
}

/// On a restore, the sink commits the parts the checkpoint covers that are still in
/// progress (a crash between the manifest and the rename), and removes in-progress
/// parts it does not cover (of this run or a crashed one) and this run's committed
/// parts of later epochs. Output exact.
#[test]
fn sink_recovery_commits_covered_parts_and_removes_the_rest() {
    let (s, complete, covered) = interrupt_with_output();
    let newest = complete[complete.len() - 1];
    let (run, _, _) = parse_part(&covered[0]).unwrap();
    // Un-commit the covered parts, as if the job had died right after the manifest.
    for n in covered.iter().filter(|n| !n.starts_with('.')) {
        fs::rename(s.out.join(n), s.out.join(format!(".{n}.inprogress"))).unwrap();
    }
    // Junk the restore must remove: rows that must never show up.
    let junk = "2000-01-01 00:00:00.000,2000-01-01 00:00:10.000,99,1,1\n";
    let later = newest + 1;
    for name in [
        format!(".part-{run}-0-{later}.csv.inprogress"),
        format!("part-{run}-1-{later}.csv"),
        ".part-1-1-0-1.csv.inprogress".to_string(),
    ] {
        fs::write(s.out.join(name), junk).unwrap();
    }
    // Another run's committed output is not this job's to remove.
    let foreign = "part-1-1-0-1.csv";
    fs::write(s.out.join(foreign), junk).unwrap();

    let err = resume_and_check_except(&s, newest, &[], &[foreign], "sink recovery");
    assert!(
        err.contains(&format!("sink recovered to checkpoint {newest}")),
        "{err}"
    );
    assert!(
        s.out.join(foreign).is_file(),
        "another run's part was removed"
    );
}

// ---------------------------------------------------------------------------------------
// A changed plan, --from-scratch
// ---------------------------------------------------------------------------------------

/// Resuming with a different window size is refused (exit 2, naming the change and
/// --from-scratch) without touching anything; with --from-scratch the new job runs and
/// writes exactly its own output.
#[test]
fn changed_plan_is_refused_and_from_scratch_starts_over() {
    let s = Scenario::new(10);
    let complete = s.interrupt();
    let newest = *complete.last().unwrap();
    let out_before = file_names(&s.out);
    let epochs_before = all_epochs(&s.ck);

    s.write_job(20);
    let out = s.run(&[]);
    let err = assert_exit_2(
        &out,
        &[
            &format!("cannot resume from checkpoint {newest}"),
            "plan changed",
            "stage 1 changed",
            "HOP size 10000 ms",
            "HOP size 20000 ms",
            "--from-scratch",
        ],
    );
    assert!(err.lines().count() < 15, "stderr is long:\n{err}");
    assert_eq!(
        file_names(&s.out),
        out_before,
        "the refused run changed the sink"
    );
    assert_eq!(
        all_epochs(&s.ck),
        epochs_before,
        "the refused run changed the checkpoints"
    );

    let out = s.run(&["--from-scratch"]);
    assert_success(&out, "--from-scratch");
    let err = stderr(&out);
    assert_eq!(restored_epoch(&err), None, "{err}");
    assert_eq!(summary(&err), (ROWS as u64, 0, 0), "{err}");
    // The new run's parts (the old run's committed parts stay where they were).
    let new: BTreeSet<String> = file_names(&s.out)
        .difference(&out_before)
        .cloned()
        .collect();
    assert_rows_exact(
        committed_rows(&s.out, &new),
        &expected_rows(20),
        "--from-scratch with a 20 s window",
    );
    // Only the new job's checkpoints are left.
    let left = complete_epochs(&s.ck);
    assert!(!left.is_empty());
    for e in left {
        let plan = manifest(&s.ck, e)["plan"].to_string();
        assert!(plan.contains("HOP size 20000 ms"), "checkpoint {e}: {plan}");
    }
}

/// When every checkpoint is damaged, the job does not start over silently: exit 2
/// suggesting --from-scratch, with nothing deleted or committed.
#[test]
fn no_usable_checkpoint_is_an_error() {
    let s = Scenario::new(10);
    s.interrupt();
    for e in complete_epochs(&s.ck) {
        let f = s.epoch_dir(e).join("s1-t0-op0.arrow");
        if f.is_file() {
            flip_byte(&f);
        }
    }
    let out_before = file_names(&s.out);
    let epochs_before = all_epochs(&s.ck);
    let out = s.run(&[]);
    assert_exit_2(
        &out,
        &[
            "none of the checkpoints",
            &s.ck.display().to_string(),
            "--from-scratch",
        ],
    );
    assert_eq!(
        file_names(&s.out),
        out_before,
        "the failed run changed the sink"
    );
    assert_eq!(
        all_epochs(&s.ck),
        epochs_before,
        "the failed run deleted checkpoints"
    );
}

// ---------------------------------------------------------------------------------------
// tidewater checkpoints list | inspect
// ---------------------------------------------------------------------------------------

/// `size()` of src/checkpoints.rs.
fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn checkpoints(args: &[&str], dir: &Path) -> Output {
    tidewater()
        .arg("checkpoints")
        .arg(args[0])
        .arg(dir)
        .args(&args[1..])
        .output()
        .expect("run tidewater checkpoints")
}

#[test]
fn checkpoints_list_and_inspect() {
    let s = Scenario::new(10);
    let complete = s.interrupt();
    let newest = complete[complete.len() - 1];
    let oldest = complete[complete.len() - 3];

    // list: one line per epoch directory with its size, file count and status.
    let out = checkpoints(&["list"], &s.ck);
    assert_success(&out, "checkpoints list");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("epoch") && lines[0].contains("state"),
        "{text}"
    );
    assert_eq!(lines.len(), 1 + all_epochs(&s.ck).len(), "{text}");
    for e in &complete {
        let m = manifest(&s.ck, *e);
        let files = m["files"].as_array().unwrap();
        let bytes: u64 = files.iter().map(|f| f["bytes"].as_u64().unwrap()).sum();
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(&e.to_string()))
            .unwrap_or_else(|| panic!("no line for checkpoint {e}:\n{text}"));
        assert!(line.contains(&human_size(bytes)), "size {bytes}: {line}");
        assert!(
            line.contains(&format!(" {}  complete", files.len())),
            "{line}"
        );
        assert!(!line.contains("finished"), "{line}");
    }

    // inspect (the newest by default): plan, source positions, state per operator.
    let m = manifest(&s.ck, newest);
    let out = checkpoints(&["inspect"], &s.ck);
    assert_success(&out, "checkpoints inspect");
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("checkpoint {newest} of job 'job'")),
        "{text}"
    );
    assert!(text.contains("finished:    no"), "{text}");
    for line in m["plan"].as_array().unwrap() {
        assert!(text.contains(line.as_str().unwrap()), "{line}:\n{text}");
    }
    let (pos, ops) = text
        .split_once("source positions:")
        .and_then(|(_, rest)| rest.split_once("state per operator:"))
        .unwrap_or_else(|| panic!("no positions or operators:\n{text}"));
    for (i, p) in m["sources"].as_array().unwrap().iter().enumerate() {
        assert!(p["next_block"].as_u64().unwrap() > 0, "{p}");
        assert!(pos.contains(&format!("subtask {i}: {p}")), "{p}:\n{text}");
    }
    for op in [
        "stage 0 op 1 Watermark(max - 1000 ms)",
        "stage 1 op 0 Window[HOP size 10000 ms slide 2000 ms",
        "stage 1 op 2 FileSink(",
    ] {
        let line = ops
            .lines()
            .find(|l| l.contains(op))
            .unwrap_or_else(|| panic!("no state of '{op}':\n{text}"));
        assert!(line.contains(" rows) in 2 files"), "{line}");
    }
    let out = checkpoints(&["inspect", &oldest.to_string()], &s.ck);
    assert_success(&out, "checkpoints inspect OLDEST");
    assert!(
        stdout(&out).starts_with(&format!("checkpoint {oldest} of job")),
        "{}",
        stdout(&out)
    );

    // A damaged and an incomplete checkpoint are listed as such.
    truncate_to_half(&s.epoch_dir(oldest).join("_manifest"));
    let incomplete = newest + 10;
    fs::create_dir(s.epoch_dir(incomplete)).unwrap();
    let out = checkpoints(&["list"], &s.ck);
    assert_success(&out, "checkpoints list after damage");
    let text = stdout(&out);
    let line_of = |e: u64| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(&e.to_string()))
            .unwrap_or_else(|| panic!("no line for {e}:\n{text}"))
            .to_string()
    };
    assert!(line_of(oldest).contains("damaged: manifest:"), "{text}");
    assert!(line_of(incomplete).contains("incomplete"), "{text}");
    assert_exit_2(
        &checkpoints(&["inspect", &oldest.to_string()], &s.ck),
        &["damaged"],
    );
    assert_exit_2(
        &checkpoints(&["inspect", &incomplete.to_string()], &s.ck),
        &["incomplete"],
    );
    assert_exit_2(
        &checkpoints(&["inspect", "999999"], &s.ck),
        &["no checkpoint 999999"],
    );

    // A directory that does not exist: an error naming it, and it is not created.
    let missing = s.tmp.path().join("no-such-dir");
    for cmd in ["list", "inspect"] {
        assert_exit_2(
            &checkpoints(&[cmd], &missing),
            &[&missing.display().to_string(), "does not exist"],
        );
    }
    assert!(!missing.exists(), "checkpoints created {missing:?}");

    // An empty directory holds no checkpoints.
    let empty = s.tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = checkpoints(&["list"], &empty);
    assert_success(&out, "checkpoints list EMPTY");
    assert!(
        stdout(&out).contains("no checkpoints in"),
        "{}",
        stdout(&out)
    );
    assert_exit_2(
        &checkpoints(&["inspect"], &empty),
        &["no complete checkpoint"],
    );
}

// ---------------------------------------------------------------------------------------
// A checkpoint directory that cannot be written
// ---------------------------------------------------------------------------------------

/// A checkpoint directory under a regular file, or a regular file itself: the job does
/// not run unprotected — exit 2 naming the directory, and no output at all.
#[test]
fn unwritable_checkpoint_directory_is_refused() {
    let s = Scenario::new(10);
    let file = s.tmp.path().join("a-file");
    fs::write(&file, "not a directory").unwrap();
    for ck in [file.join("ck"), file.clone()] {
        let out = tidewater()
            .arg("run")
            .arg(&s.job)
            .args(["-p", PARALLELISM, "--checkpoint-interval", "100ms"])
            .arg("--checkpoint-dir")
            .arg(&ck)
            .current_dir(s.tmp.path())
            .output()
            .unwrap();
        let err = assert_exit_2(&out, &["checkpoint directory", &ck.display().to_string()]);
        assert!(err.lines().count() < 10, "stderr is long:\n{err}");
        assert!(
            file_names(&s.out).is_empty(),
            "output was written: {:?}",
            file_names(&s.out)
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), "not a directory");
    }
}
