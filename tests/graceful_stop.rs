//! SIGTERM stops a running job gracefully: with checkpoints on, a last checkpoint is
//! taken and committed, the summary printed, exit status 0; the same command then
//! resumes from that checkpoint and the output is exactly the uninterrupted run's.
//! Without checkpoints the input ends where it is and the output is committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/classic.rs"]
mod classic;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn job(input: &Path, out: &Path, state: Option<&Path>) -> String {
    let settings = state.map_or(String::new(), |s| {
        format!(
            "SET 'execution.checkpointing.interval' = '30s'; SET 'state.checkpoints.dir' = '{}';",
            s.display()
        )
    });
    classic::classic_job(&settings, input, out)
}

use classic::committed_rows;

/// 2 000 000 classic events: long enough to be interrupted.
fn write_input(dir: &Path) -> std::path::PathBuf {
    let input = dir.join("events.csv");
    std::fs::write(
        &input,
        classic::classic_csv(&classic::classic_events(2_000_000, 1_000, 9), true),
    )
    .unwrap();
    input
}

fn spawn(job: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .arg("run")
        .arg(job)
        .args(["-p", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the job's start line, lets it run a moment (a point to interrupt, not a
/// synchronisation), sends SIGTERM, and returns the exit status and all of stderr.
fn terminate_mid_run(mut child: Child) -> (std::process::ExitStatus, String) {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("started") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the job ended before the signal: {log}"
    );
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    (child.wait().unwrap(), log)
}

#[test]
fn sigterm_takes_a_last_checkpoint_and_the_rerun_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = write_input(dir);
    let reference = dir.join("reference.sql");
    std::fs::write(&reference, job(&input, &dir.join("ref-out"), None)).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["run", reference.to_str().unwrap(), "-p", "2", "-q"])
        .status()
        .unwrap();
    assert!(status.success());
    let want = committed_rows(&dir.join("ref-out"));

    let out = dir.join("out");
    let state = dir.join("state");
    let job_file = dir.join("job.sql");
    std::fs::write(&job_file, job(&input, &out, Some(&state))).unwrap();
    let (status, log) = terminate_mid_run(spawn(&job_file));
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(log.contains("stopping"), "{log}");
    assert!(log.contains("events in:"), "no summary: {log}");
    // The 30 s interval never came round: the one checkpoint is the stop's.
    assert!(log.contains("checkpoint 1 complete"), "{log}");
    let partial = committed_rows(&out);
    assert!(
        !partial.is_empty() && partial.len() < want.len(),
        "{} of {}",
        partial.len(),
        want.len()
    );

    let rerun = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["run", job_file.to_str().unwrap(), "-p", "2"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{log}");
    assert!(log.contains("restored checkpoint 1"), "{log}");
    assert_eq!(
        committed_rows(&out),
        want,
        "resumed output differs from the uninterrupted run"
    );
}

#[test]
fn sigterm_without_checkpoints_ends_the_input_where_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = write_input(dir);
    let out = dir.join("out");
    let job_file = dir.join("job.sql");
    std::fs::write(&job_file, job(&input, &out, None)).unwrap();
    let (status, log) = terminate_mid_run(spawn(&job_file));
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(log.contains("events in:"), "no summary: {log}");
    let events_in: u64 = log
        .split("events in: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(events_in > 0 && events_in < 2_000_000, "read {events_in}");
    // What was read was committed: no hidden in-progress part is left.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("part-")), "{names:?}");
    assert!(!committed_rows(&out).is_empty());
}
