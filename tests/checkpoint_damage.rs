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

#[path = "common/checkpointed.rs"]
mod checkpointed;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Output;

use checkpointed::{
    Interrupted, PARALLELISM, ROWS, Scenario, all_committed_rows, all_epochs, assert_exit_2,
    assert_rows_exact, assert_success, committed_rows, complete_epochs, expected_rows, file_names,
    interrupt_with_output, manifest, parse_part, restored_epoch, resume_and_check,
    resume_and_check_except, rows_before, sources, stderr, stdout, summary, tidewater,
};

// ---------------------------------------------------------------------------------------
// Damage
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Resuming after damage
// ---------------------------------------------------------------------------------------

/// A corrupt state file (one byte flipped) in the newest checkpoint: the restart warns
/// naming the file, restores the previous checkpoint and the output is exact. A rerun
/// after the end does nothing.
#[test]
fn corrupt_state_file_falls_back_to_previous_checkpoint() {
    let Interrupted {
        scenario: s,
        newest,
        previous,
        ..
    } = interrupt_with_output();
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
    let Interrupted {
        scenario: s,
        complete,
        newest,
        previous: second,
        ..
    } = interrupt_with_output();
    let third = complete[complete.len() - 3];
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
    let Interrupted {
        scenario: s,
        newest,
        previous,
        ..
    } = interrupt_with_output();
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
    let Interrupted {
        scenario: s,
        newest,
        previous,
        ..
    } = interrupt_with_output();
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
    let Interrupted {
        scenario: s,
        newest,
        previous,
        covered,
        ..
    } = interrupt_with_output();
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
    let Interrupted {
        scenario: s,
        newest,
        covered,
        ..
    } = interrupt_with_output();
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
