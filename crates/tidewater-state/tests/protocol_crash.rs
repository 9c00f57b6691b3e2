#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The checkpoint protocol under crashes: a small simulated job runs the pure
//! [`Coordinator`] against a [`MemoryStore`] wrapped so that it "crashes" after any
//! number of operations, then recovers the way the runtime does (list → candidates →
//! load the newest that verifies → cleanup) and runs to the end. The output of a model
//! exactly-once sink must then equal that of an uninterrupted run, whatever the crash
//! point — after a snapshot file, after the manifest, after the sink commit, in the
//! middle of retention or recovery deletes — and whatever damage the store holds.

mod common;

use std::sync::Arc;

use tidewater_core::{Error, Result};
use tidewater_state::protocol::{
    Listing, cleanup_after_restore, restore_candidates, retained_after_restore,
};
use tidewater_state::recovery;
use tidewater_state::{Ack, CheckpointStore, Coordinator, Manifest, MemoryStore, Step, TaskId};

use common::sim::{
    CrashingStore, EVENTS, Job, KEEP, MANIFEST, Op, Plan, Sink, apply_recovery, assert_injected,
    input, last_epoch, plan_recovery, recover_and_run, run, shape, tasks,
};

// ---------------------------------------------------------------------------------
// The uninterrupted run, and what every recovered run must end up equal to
// ---------------------------------------------------------------------------------

/// Everything in the store: per epoch its manifest and the files the manifest names.
type Snapshot = Vec<(u64, Option<Vec<u8>>, Vec<(String, Vec<u8>)>)>;

fn snapshot(store: &dyn CheckpointStore) -> Snapshot {
    let mut out = Vec::new();
    for epoch in store.epochs().unwrap() {
        let manifest = store.get_manifest(epoch).unwrap();
        let files = manifest
            .as_deref()
            .and_then(|b| Manifest::decode(b).ok())
            .map(|m| {
                m.files
                    .iter()
                    .map(|f| (f.name.clone(), store.get(epoch, &f.name).unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        out.push((epoch, manifest, files));
    }
    out
}

#[derive(Debug)]
struct Reference {
    steps: Vec<Op>,
    sink: Sink,
    store: Snapshot,
}

fn reference() -> Reference {
    let mem = Arc::new(MemoryStore::default());
    let store = CrashingStore::new(mem.clone(), None, false);
    let mut sink = Sink::default();
    let mut job = Job::fresh();
    let mut coord = Coordinator::new(shape(), KEEP, 0, vec![]);
    run(&store, &mut sink, &mut job, &mut coord).unwrap();

    // The uninterrupted run itself is right: every event exactly once, in its epoch.
    let mut events = input();
    events.sort_unstable();
    assert_eq!(sink.output(), events);
    assert!(sink.pending.is_empty());
    assert_eq!(sink.committed.len() as u64, last_epoch());
    let complete: Vec<u64> = store.epochs().unwrap();
    let want: Vec<u64> = (last_epoch() + 1 - KEEP as u64..=last_epoch()).collect();
    assert_eq!(complete, want, "retention keeps the newest {KEEP}");
    assert_eq!(job, Job::after_epoch(Some(last_epoch())));
    assert_eq!(
        job.state[&TaskId {
            stage: 0,
            subtask: 0
        }]
            .count,
        EVENTS as i64
    );

    Reference {
        steps: store.done(),
        sink,
        store: snapshot(&store),
    }
}

/// The end state after recovery and a complete run: exactly the uninterrupted one.
fn assert_final(ctx: &str, reference: &Reference, mem: &MemoryStore, sink: &Sink) {
    // (a) nothing lost, nothing duplicated
    assert_eq!(
        sink.output(),
        reference.sink.output(),
        "{ctx}: committed output (multiset)"
    );
    assert_eq!(sink, &reference.sink, "{ctx}: output parts per epoch");
    // (c) retention: at most KEEP complete, nothing incomplete older than the newest
    let listing = recovery::list(mem).unwrap();
    let complete: Vec<u64> = listing
        .iter()
        .filter(|(_, l)| matches!(l, Listing::Complete(_)))
        .map(|(e, _)| *e)
        .collect();
    assert!(complete.len() <= KEEP, "{ctx}: {complete:?} retained");
    let newest = complete.last().copied().unwrap_or(0);
    for (e, l) in &listing {
        assert!(
            matches!(l, Listing::Complete(_)) || *e > newest,
            "{ctx}: epoch {e} is {l:?}, older than the newest complete {newest}"
        );
    }
    // ... and in fact the store holds exactly what the uninterrupted run left.
    assert_eq!(snapshot(mem), reference.store, "{ctx}: store contents");
}

fn newest_manifest(steps: &[Op]) -> Option<u64> {
    steps
        .iter()
        .filter_map(|op| match op {
            Op::Manifest(e) => Some(*e),
            _ => None,
        })
        .max()
}

/// After a crash: the sink made visible only epochs whose manifest is durable (a
/// commit before its manifest could not be undone by a real sink), and exactly the
/// rows the uninterrupted run commits for them.
fn assert_visible_output_is_safe(
    ctx: &str,
    sink: &Sink,
    durable: Option<u64>,
    reference: &Reference,
) {
    for (e, rows) in &sink.committed {
        assert!(
            Some(*e) <= durable,
            "{ctx}: epoch {e} committed, the newest durable manifest is {durable:?}"
        );
        assert_eq!(
            Some(rows),
            reference.sink.committed.get(e),
            "{ctx}: part {e}"
        );
    }
}

/// The state a crash (or damage) leaves: the store, the sink, and the epoch recovery
/// must restore.
#[derive(Debug)]
struct Crashed {
    mem: Arc<MemoryStore>,
    sink: Sink,
    expect_restored: Option<u64>,
    /// The newest manifest written before the crash (before any damage).
    durable: Option<u64>,
}

/// An uninterrupted start, crashing after `k` steps.
fn crash_at(k: usize, torn: bool, reference: &Reference) -> Crashed {
    let mem = Arc::new(MemoryStore::default());
    let store = CrashingStore::new(mem.clone(), Some(k), torn);
    let mut sink = Sink::default();
    let mut job = Job::fresh();
    let mut coord = Coordinator::new(shape(), KEEP, 0, vec![]);
    let result = run(&store, &mut sink, &mut job, &mut coord);
    let ctx = format!("crash after step {k} (torn: {torn})");
    if k < reference.steps.len() {
        assert_injected(&result, &ctx);
    } else {
        result.unwrap();
    }
    let done = store.done();
    assert_eq!(
        done,
        reference.steps[..k],
        "{ctx}: the run is deterministic"
    );
    Crashed {
        mem,
        sink,
        expect_restored: newest_manifest(&done),
        durable: newest_manifest(&done),
    }
}

/// Recovery restored checkpoint `expect`, and with it the job as the uninterrupted run
/// left it there.
fn assert_restored(plan: &Plan, expect: Option<u64>, ctx: &str) {
    assert_eq!(
        plan.restored, expect,
        "{ctx}: restored epoch ({:?})",
        plan.skipped
    );
    assert_eq!(
        plan.job,
        Job::after_epoch(plan.restored),
        "{ctx}: restored state"
    );
}

/// Recovers `crashed` through a store that crashes again after `second` steps (none:
/// never), and if it does, recovers once more without a crash; then checks the end
/// state. Returns whether the second crash happened (false: `second` is past the end).
fn recover_checked(
    crashed: Crashed,
    second: Option<usize>,
    torn: bool,
    ctx: &str,
    reference: &Reference,
) -> bool {
    let Crashed {
        mem,
        mut sink,
        expect_restored,
        durable,
    } = crashed;
    let store = CrashingStore::new(mem.clone(), second, torn);
    let (plan, result) = recover_and_run(&store, &mut sink);
    // (b) the newest durable manifest is what comes back
    assert_restored(&plan, expect_restored, ctx);
    if result.is_ok() {
        assert_final(ctx, reference, &mem, &sink);
        return false;
    }
    assert_injected(&result, ctx);
    // The second crash: what recovery restores now is the newest manifest written
    // since, or else the same as before.
    let expect = newest_manifest(&store.done()).max(expect_restored);
    let durable = newest_manifest(&store.done()).max(durable);
    assert_visible_output_is_safe(ctx, &sink, durable, reference);
    let again = CrashingStore::new(mem.clone(), None, false);
    let (plan, result) = recover_and_run(&again, &mut sink);
    let ctx = format!("{ctx}, crashed again after {:?}", store.done().last());
    assert_restored(&plan, expect, &ctx);
    result.unwrap();
    assert_final(&ctx, reference, &mem, &sink);
    true
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[test]
fn the_uninterrupted_run_goes_through_every_kind_of_step() {
    let r = reference();
    let e = last_epoch();
    assert_eq!(e, 7);
    let deletes = r
        .steps
        .iter()
        .filter(|s| matches!(s, Op::Delete(_)))
        .count();
    assert_eq!(deletes as u64, e - KEEP as u64);
    // steps per epoch: pre-commit, one file per subtask, manifest, commit (+ delete)
    assert_eq!(
        r.steps.len(),
        e as usize * (1 + tasks().len() + 2) + deletes
    );
    // the order within an epoch, e.g. epoch 5: files, then manifest, commit, delete
    let at = r.steps.iter().position(|s| *s == Op::PreCommit(5)).unwrap();
    assert_eq!(
        r.steps[at..at + 7],
        [
            Op::PreCommit(5),
            Op::Put(5, "s0-t0-op0.arrow".into()),
            Op::Put(5, "s1-t0-op0.arrow".into()),
            Op::Put(5, "s1-t1-op0.arrow".into()),
            Op::Manifest(5),
            Op::Commit(5),
            Op::Delete(2),
        ]
    );
    // the last checkpoint is marked finished
    let m = Manifest::decode(&r.store.last().unwrap().1.clone().unwrap()).unwrap();
    assert!(m.finished);
    assert_eq!(m.sources, vec![serde_json::json!({ "consumed": EVENTS })]);
}

/// A crash between every two consecutive steps of an uninterrupted run (k = 0: before
/// the first; k = total: no crash), then recovery through a fresh view of the store and
/// a run to the end. Also with the interrupted operation left half done.
#[test]
fn a_crash_between_any_two_steps_loses_and_duplicates_nothing() {
    let reference = reference();
    let total = reference.steps.len();
    let mut points = 0;
    for torn in [false, true] {
        for k in 0..=total {
            let ctx = match k.checked_sub(1).map(|i| &reference.steps[i]) {
                Some(after) => format!("crash after step {k} {after:?} (torn: {torn})"),
                None => format!("crash before the first step (torn: {torn})"),
            };
            let crashed = crash_at(k, torn, &reference);
            assert!(!recover_checked(crashed, None, torn, &ctx, &reference));
            points += 1;
        }
    }
    assert_eq!(points, 2 * (total + 1));
}

/// A second crash anywhere in the recovery (sink reset, cleanup deletes) or the resumed
/// run, after a crash at any point: recovering again still ends exactly right.
#[test]
fn a_second_crash_during_recovery_or_the_resumed_run_is_survived_too() {
    let reference = reference();
    let total = reference.steps.len();
    let mut pairs = 0;
    for torn in [false, true] {
        for k in 0..=total {
            for second in 0.. {
                let ctx = format!("crash after step {k}, then after {second} (torn: {torn})");
                let crashed = crash_at(k, torn, &reference);
                pairs += 1;
                if !recover_checked(crashed, Some(second), torn, &ctx, &reference) {
                    break;
                }
                assert!(second <= 2 * total, "{ctx}: the recovered run never ends");
            }
        }
    }
    assert!(pairs > 2 * total * (total / 2), "{pairs} crash pairs");
}

/// Crash right after `op` of an uninterrupted run.
fn crash_after(op: &Op, reference: &Reference) -> Crashed {
    let k = reference.steps.iter().position(|s| s == op).unwrap() + 1;
    crash_at(k, false, reference)
}

/// Recovery of `crashed`, checked once without and then with a second crash at every
/// point of the recovery and the resumed run. Returns the first recovery's plan.
fn recover_everywhere(make: impl Fn() -> Crashed, ctx: &str, reference: &Reference) -> Plan {
    let c = make();
    let plan = plan_recovery(&CrashingStore::new(c.mem.clone(), None, false));
    assert!(!recover_checked(c, None, false, ctx, reference));
    for second in 0.. {
        let ctx = format!("{ctx}, then a crash after {second}");
        if !recover_checked(make(), Some(second), false, &ctx, reference) {
            break;
        }
    }
    plan
}

#[test]
fn a_damaged_state_file_in_the_newest_checkpoint_falls_back_to_the_previous_one() {
    let reference = reference();
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage, &str); 3] = [
        (
            "flipped bit",
            |b| {
                let i = b.len() / 2;
                b[i] ^= 0x10
            },
            "damaged",
        ),
        ("truncated", |b| b.truncate(b.len() - 9), "truncated"),
        ("emptied", |b| b.clear(), "truncated"),
    ];
    for (what, damage, says) in damages {
        // Epoch 5 complete and committed, its retention delete (of 2) not yet done.
        let make = || {
            let mut c = crash_after(&Op::Commit(5), &reference);
            assert_eq!(c.mem.epochs().unwrap(), vec![2, 3, 4, 5]);
            c.mem.tamper(5, "s1-t1-op0.arrow", damage).unwrap();
            c.expect_restored = Some(4);
            c
        };
        assert!(make().sink.committed.contains_key(&5));
        let ctx = format!("{what} state file in checkpoint 5");
        let plan = recover_everywhere(make, &ctx, &reference);
        assert!(
            matches!(plan.listing[&5], Listing::Complete(_)),
            "{ctx}: listing"
        );
        assert_eq!(plan.skipped.len(), 1, "{ctx}: {:?}", plan.skipped);
        let (epoch, why) = &plan.skipped[0];
        assert_eq!(*epoch, 5);
        for part in ["checkpoint 5", "s1-t1-op0.arrow", says] {
            assert!(why.contains(part), "{ctx}: '{why}' should say '{part}'");
        }
        assert_eq!(cleanup_after_restore(&plan.listing, Some(4), KEEP), vec![5]);
        assert_eq!(
            retained_after_restore(&plan.listing, Some(4), KEEP),
            vec![2, 3, 4]
        );
    }
}

#[test]
fn a_truncated_manifest_is_damaged_and_skipped() {
    let reference = reference();
    // Epoch 5's manifest written, the crash before its commit.
    let make = || {
        let mut c = crash_after(&Op::Manifest(5), &reference);
        assert_eq!(c.sink.pending.keys().copied().collect::<Vec<_>>(), vec![5]);
        c.mem
            .tamper(5, MANIFEST, |b| b.truncate(b.len() * 2 / 3))
            .unwrap();
        c.expect_restored = Some(4);
        c
    };
    let plan = recover_everywhere(make, "truncated manifest 5", &reference);
    let Listing::Damaged(why) = &plan.listing[&5] else {
        panic!("a truncated manifest is damaged: {:?}", plan.listing[&5])
    };
    assert!(why.contains("truncated"), "{why}");
    assert_eq!(restore_candidates(&plan.listing), vec![4, 3, 2]);
    assert!(plan.skipped.is_empty());
    assert_eq!(cleanup_after_restore(&plan.listing, Some(4), KEEP), vec![5]);

    // Cut anywhere, even inside the header line: never taken for a checkpoint.
    let bytes = crash_after(&Op::Manifest(5), &reference)
        .mem
        .get_manifest(5)
        .unwrap()
        .unwrap();
    for cut in 0..bytes.len() {
        let mem = MemoryStore::default();
        mem.put_manifest(5, &bytes[..cut]).unwrap();
        let listing = recovery::list(&mem).unwrap();
        assert!(
            matches!(listing[&5], Listing::Damaged(_)),
            "manifest cut at {cut}: {:?}",
            listing[&5]
        );
        assert!(restore_candidates(&listing).is_empty());
        assert_eq!(cleanup_after_restore(&listing, None, KEEP), vec![5]);
    }
}

#[test]
fn a_manifest_naming_another_epoch_is_damaged() {
    let reference = reference();
    // Epoch 5 complete and committed; its manifest replaced by a valid one of epoch 4.
    let make = || {
        let mut c = crash_after(&Op::Commit(5), &reference);
        let four = c.mem.get_manifest(4).unwrap().unwrap();
        c.mem.put_manifest(5, &four).unwrap();
        c.expect_restored = Some(4);
        c
    };
    let plan = recover_everywhere(make, "manifest of 4 in 5", &reference);
    let Listing::Damaged(why) = &plan.listing[&5] else {
        panic!(
            "a manifest of another epoch is damaged: {:?}",
            plan.listing[&5]
        )
    };
    assert!(why.contains("epoch 4"), "{why}");
    assert!(matches!(plan.listing[&4], Listing::Complete(_)));
    assert_eq!(restore_candidates(&plan.listing), vec![4, 3, 2]);
    assert!(plan.skipped.is_empty());
}

#[test]
fn with_no_usable_checkpoint_the_job_starts_over_and_the_output_is_still_exact() {
    let reference = reference();
    // Checkpoints 4, 5, 6 complete (6 committed), 7 interrupted after its first file.
    let make = || {
        let mut c = crash_after(&Op::Put(7, "s0-t0-op0.arrow".into()), &reference);
        assert_eq!(c.mem.epochs().unwrap(), vec![4, 5, 6, 7]);
        let five = c.mem.get_manifest(5).unwrap().unwrap();
        c.mem.put_manifest(4, &five).unwrap(); // 4: names epoch 5
        c.mem
            .tamper(5, MANIFEST, |b| b.truncate(b.len() - 1))
            .unwrap(); // 5: truncated
        c.mem.tamper(6, "s0-t0-op0.arrow", |b| b[0] ^= 1).unwrap(); // 6: a bad file
        c.expect_restored = None;
        c
    };
    let c = make();
    assert_eq!(c.sink.committed.len(), 6);
    assert_eq!(c.sink.pending.keys().copied().collect::<Vec<_>>(), vec![7]);
    let plan = recover_everywhere(make, "no usable checkpoint", &reference);
    assert!(matches!(plan.listing[&4], Listing::Damaged(_)));
    assert!(matches!(plan.listing[&5], Listing::Damaged(_)));
    assert!(matches!(plan.listing[&6], Listing::Complete(_)));
    assert_eq!(plan.listing[&7], Listing::Incomplete);
    assert_eq!(restore_candidates(&plan.listing), vec![6]);
    assert_eq!(
        plan.skipped.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
        vec![6]
    );
    assert_eq!(plan.job, Job::fresh());
    assert_eq!(
        cleanup_after_restore(&plan.listing, None, KEEP),
        vec![4, 5, 6, 7]
    );
    assert!(retained_after_restore(&plan.listing, None, KEEP).is_empty());

    // Right after the recovery (before the new run) the store and the sink are empty.
    let c = make();
    let store = CrashingStore::new(c.mem.clone(), None, false);
    let mut sink = c.sink;
    apply_recovery(&store, &mut sink, &plan_recovery(&store)).unwrap();
    assert!(c.mem.epochs().unwrap().is_empty());
    assert_eq!(sink, Sink::default());
}

/// The model sink itself: a part written twice is visible twice (so the output checks
/// above would catch a duplicate), and recovery keeps exactly the parts up to the
/// restored epoch.
#[test]
fn the_model_sink_shows_duplicates_and_recovers_by_epoch() {
    let mut s = Sink::default();
    s.precommit(1, vec![1, 2]);
    s.precommit(2, vec![3]);
    s.precommit(3, vec![4]);
    s.commit(2);
    assert_eq!(s.output(), vec![1, 2, 3]);
    assert_eq!(s.pending.keys().copied().collect::<Vec<_>>(), vec![3]);
    s.precommit(2, vec![3]);
    s.commit(2);
    assert_eq!(s.output(), vec![1, 2, 3, 3], "a duplicate is visible");
    let mut r = s.clone();
    r.recover(Some(3));
    assert_eq!(r.output(), vec![1, 2, 3, 3, 4]);
    s.recover(Some(1));
    assert_eq!(s.output(), vec![1, 2]);
    assert!(s.pending.is_empty());
    s.recover(None);
    assert_eq!(s, Sink::default());
}

// ---------------------------------------------------------------------------------
// Regression tests of two defects these tests found (both fixed): a rejected duplicate
// ack replaced the accepted one; any read error of a state file counted as damage.
// ---------------------------------------------------------------------------------

fn ack_with_source(task: TaskId, source: i64) -> Ack {
    Ack {
        epoch: 1,
        task,
        files: vec![],
        source: (task.stage == 0).then(|| serde_json::json!({ "consumed": source })),
    }
}

/// `Coordinator::ack` rejects a repeated ack, but only after `BTreeMap::insert` has
/// already replaced the first ack with it: the manifest then carries the rejected
/// ack's files and source position.
#[test]
fn a_rejected_duplicate_ack_leaves_the_first_one_in_force() {
    let mut c = Coordinator::new(shape(), KEEP, 0, vec![]);
    assert_eq!(c.trigger(0, false), Some(1));
    let src = TaskId {
        stage: 0,
        subtask: 0,
    };
    assert_eq!(c.ack(ack_with_source(src, 6), 1).unwrap(), None);
    assert!(c.ack(ack_with_source(src, 999), 1).is_err(), "duplicate");
    let t = |subtask| TaskId { stage: 1, subtask };
    assert_eq!(c.ack(ack_with_source(t(0), 0), 1).unwrap(), None);
    let Some(Step::WriteManifest(m)) = c.ack(ack_with_source(t(1), 0), 1).unwrap() else {
        panic!("expected the manifest")
    };
    assert_eq!(m.sources, vec![serde_json::json!({ "consumed": 6 })]);
}

/// A store whose reads of one checkpoint's state files fail with an I/O error that is
/// not damage (permission denied, a network share gone for a moment).
#[derive(Debug)]
struct UnreadableFiles {
    inner: Arc<MemoryStore>,
    epoch: u64,
}

impl CheckpointStore for UnreadableFiles {
    fn put(&self, epoch: u64, name: &str, bytes: &[u8]) -> Result<()> {
        self.inner.put(epoch, name, bytes)
    }
    fn get(&self, epoch: u64, name: &str) -> Result<Vec<u8>> {
        if epoch == self.epoch {
            let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
            return Err(Error::io("cannot read checkpoint file", name, e));
        }
        self.inner.get(epoch, name)
    }
    fn put_manifest(&self, epoch: u64, bytes: &[u8]) -> Result<()> {
        self.inner.put_manifest(epoch, bytes)
    }
    fn get_manifest(&self, epoch: u64) -> Result<Option<Vec<u8>>> {
        self.inner.get_manifest(epoch)
    }
    fn epochs(&self) -> Result<Vec<u64>> {
        self.inner.epochs()
    }
    fn delete(&self, epoch: u64) -> Result<()> {
        self.inner.delete(epoch)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

/// `recovery::load` reports every error of `store.get` as `Error::Damaged`, so an I/O
/// error that says nothing about the checkpoint (here: permission denied) makes
/// recovery fall back to an older checkpoint — and `cleanup_after_restore` then
/// deletes the newer, intact one. Only a missing, truncated or corrupt file should be
/// `Damaged`; other read errors should stop the restore.
#[test]
fn a_read_error_that_is_not_damage_does_not_discard_the_checkpoint() {
    let reference = reference();
    let c = crash_after(&Op::Commit(5), &reference);
    let store = UnreadableFiles {
        inner: c.mem.clone(),
        epoch: 5,
    };
    let listing = recovery::list(&store).unwrap();
    let Some(Listing::Complete(m)) = listing.get(&5) else {
        panic!("5 is complete")
    };
    let err = recovery::load(&store, m).unwrap_err();
    assert!(
        !matches!(err, Error::Damaged { .. }),
        "checkpoint 5 is intact, yet: {err}"
    );
}
