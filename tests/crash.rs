//! Crash test of checkpoints and the exactly-once filesystem sink: the classic job (HOP
//! 2 s / 10 s, SUM and COUNT by key) over a CSV of 600 000 events with a 100 ms
//! checkpoint interval is killed with SIGKILL at random moments, at least 20 times, and
//! restarted each time with the same command; the committed output must equal, as a
//! multiset of rows, the output of an uninterrupted run: no row lost, none duplicated.
//!
//! Environment (for `scripts/soak-crash`): `TIDEWATER_CRASH_KILLS` (minimum number of
//! kills, default 20), `TIDEWATER_CRASH_EVENTS` (default 600 000), `TIDEWATER_CRASH_SEED`.
//! When one job finishes before enough kills, another round starts with fresh
//! directories; every round is checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/classic.rs"]
mod classic;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The classic job; checkpoints every 100 ms into `state`, results into `out`.
fn job(input: &Path, out: &Path, state: &Path) -> String {
    classic::classic_job(
        &format!(
            "SET 'execution.checkpointing.interval' = '100ms';
             SET 'state.checkpoints.dir' = '{}';",
            state.display()
        ),
        input,
        out,
    )
}

use classic::committed_rows;

fn in_progress_parts(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".inprogress"))
                .collect()
        })
        .unwrap_or_default()
}

fn tidewater(job: &Path, stderr: &Path) -> Command {
    tidewater_p(job, stderr, 2)
}

fn tidewater_p(job: &Path, stderr: &Path, parallelism: usize) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidewater"));
    c.arg("run")
        .arg(job)
        .args(["-p", &parallelism.to_string(), "-q"]);
    c.stdout(Stdio::null()).stderr(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr)
            .unwrap(),
    );
    c
}

/// A readable account of how two sorted multisets differ.
fn difference(want: &[String], got: &[String]) -> String {
    let (mut i, mut j) = (0, 0);
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    while i < want.len() || j < got.len() {
        match (want.get(i), got.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                missing.push(a.clone());
                i += 1;
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                extra.push(b.clone());
                j += 1;
            }
            (Some(a), None) => {
                missing.push(a.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    format!(
        "{} rows missing (first: {:?}), {} rows extra (first: {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first()
    )
}

/// Writes `events` classic events under `dir` and runs the job on them uninterrupted
/// (with checkpoints too, into its own directories): the input, the committed rows, and
/// how long the run took.
fn reference_run(dir: &Path, events: usize, seed: u64) -> (PathBuf, Vec<String>, Duration) {
    let input = dir.join("events.csv");
    std::fs::write(
        &input,
        classic::classic_csv(&classic::classic_events(events, 1_000, seed), true),
    )
    .unwrap();
    let ref_job = dir.join("reference.sql");
    std::fs::write(
        &ref_job,
        job(&input, &dir.join("ref-out"), &dir.join("ref-state")),
    )
    .unwrap();
    let started = Instant::now();
    let status = tidewater(&ref_job, &dir.join("ref.log")).status().unwrap();
    let took = started.elapsed();
    assert!(
        status.success(),
        "reference run failed: {}",
        std::fs::read_to_string(dir.join("ref.log")).unwrap_or_default()
    );
    (input, committed_rows(&dir.join("ref-out")), took)
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_uninterrupted_output() {
    let min_kills = env_or("TIDEWATER_CRASH_KILLS", 20);
    let events = env_or("TIDEWATER_CRASH_EVENTS", 600_000) as usize;
    let seed = env_or("TIDEWATER_CRASH_SEED", 11);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, want, full) = reference_run(dir, events, seed);
    assert!(
        want.len() > 100_000,
        "reference output has only {} rows",
        want.len()
    );

    // Kill moments: uniform over a range that lets most runs get past a checkpoint or
    // two, and some die during start-up or restore.
    let hi = (full.as_millis() as u64 / 5).clamp(200, 2_000);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills = 0u64;
    let mut round = 0;
    while kills < min_kills {
        round += 1;
        let out: PathBuf = dir.join(format!("out-{round}"));
        let state = dir.join(format!("state-{round}"));
        let log = dir.join(format!("round-{round}.log"));
        let job_file = dir.join(format!("job-{round}.sql"));
        std::fs::write(&job_file, job(&input, &out, &state)).unwrap();
        let mut runs = 0;
        loop {
            runs += 1;
            assert!(runs < 5_000, "round {round}: the job never finished");
            let mut child = tidewater(&job_file, &log).spawn().unwrap();
            let moment = Duration::from_millis(rng.random_range(10..hi));
            let deadline = Instant::now() + moment;
            // Waiting for a random moment is the point here, not synchronisation: the
            // child is polled so that a run that finishes first is noticed.
            let finished = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            match finished {
                Some(status) => {
                    assert!(
                        status.success(),
                        "round {round} run {runs} failed: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                None => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                }
            }
        }
        let got = committed_rows(&out);
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            got == want,
            "round {round} (seed {seed}, {runs} runs): committed output differs from the \
             uninterrupted run: {}\nlog:\n{log_text}",
            difference(&want, &got)
        );
        assert_eq!(
            in_progress_parts(&out),
            Vec::<String>::new(),
            "round {round}"
        );
        let restores = log_text.matches("restored checkpoint").count();
        eprintln!(
            "round {round}: {runs} runs, {restores} restores, {} rows exact; {kills} kills so far",
            got.len()
        );
        assert!(
            runs < 4 || restores > 0,
            "round {round}: {runs} runs but no restore: the kills never hit after a checkpoint"
        );
    }
    eprintln!("{kills} kills in {round} rounds, every round exact (uninterrupted run {full:?})");
}

/// Complete checkpoints in `state` (directories holding a manifest).
fn complete_checkpoints(state: &Path) -> usize {
    std::fs::read_dir(state)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter(|e| e.path().join("_manifest").exists())
                .count()
        })
        .unwrap_or(0)
}

/// Keyed window state is stored per key group, so a job killed at parallelism 2 resumes
/// at 1 or 3 and still commits exactly the uninterrupted output.
#[test]
fn a_job_killed_at_one_parallelism_resumes_at_another() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (input, want, _) = reference_run(dir, 400_000, 5);

    for (from, to) in [(2, 3), (3, 1)] {
        let out = dir.join(format!("out-{from}-{to}"));
        let state = dir.join(format!("state-{from}-{to}"));
        let log = dir.join(format!("{from}-{to}.log"));
        let job_file = dir.join(format!("job-{from}-{to}.sql"));
        std::fs::write(&job_file, job(&input, &out, &state)).unwrap();
        let mut child = tidewater_p(&job_file, &log, from).spawn().unwrap();
        // No signal exists for "a checkpoint is on disk" but the manifest itself: poll it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let killed = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            if complete_checkpoints(&state) >= 2 {
                child.kill().unwrap();
                child.wait().unwrap();
                break true;
            }
            assert!(Instant::now() < deadline, "no checkpoint within 60 s");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            killed,
            "the job finished before it could be killed; use more input"
        );
        let status = tidewater_p(&job_file, &log, to).status().unwrap();
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "{log_text}");
        assert!(log_text.contains("restored checkpoint"), "{log_text}");
        let got = committed_rows(&out);
        assert!(
            got == want,
            "p {from} -> {to}: {}\n{log_text}",
            difference(&want, &got)
        );
    }
}
