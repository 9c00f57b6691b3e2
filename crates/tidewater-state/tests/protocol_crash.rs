#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The checkpoint protocol under crashes: a small simulated job runs the pure
//! [`Coordinator`] against a [`MemoryStore`] wrapped so that it "crashes" after any
//! number of operations, then recovers the way the runtime does (list → candidates →
//! load the newest that verifies → cleanup) and runs to the end. The output of a model
//! exactly-once sink must then equal that of an uninterrupted run, whatever the crash
//! point — after a snapshot file, after the manifest, after the sink commit, in the
//! middle of retention or recovery deletes — and whatever damage the store holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::record_batch::RecordBatch;
use tidewater_core::{Error, Result};
use tidewater_state::encode::encode_batches;
use tidewater_state::protocol::{
    JobShape, Listing, cleanup_after_restore, restore_candidates, retained_after_restore,
};
use tidewater_state::recovery::{self, StateKey};
use tidewater_state::{
    Ack, CheckpointStore, Coordinator, FileEntry, Manifest, MemoryStore, Step, TaskId,
};

// ---------------------------------------------------------------------------------
// The simulated job
// ---------------------------------------------------------------------------------

/// Events in the (replayable) input.
const EVENTS: usize = 40;
/// Events covered by each checkpoint epoch (the last epoch gets the 4 left over).
const PER_EPOCH: usize = 6;
/// Complete checkpoints retained.
const KEEP: usize = 3;
const MANIFEST: &str = "_manifest";
const INJECTED: &str = "injected crash";
const DOWN: &str = "store is down after the injected crash";

fn input() -> Vec<i64> {
    (0..EVENTS as i64).map(|i| (i * 37 + 11) % 23 - 9).collect()
}

fn last_epoch() -> u64 {
    EVENTS.div_ceil(PER_EPOCH) as u64
}

fn shape() -> JobShape {
    JobShape {
        job: "crash-test".into(),
        plan: vec!["source".into(), "sum+count by parity".into()],
        parallelism: vec![1, 2],
    }
}

/// Every subtask of [`shape`], in the order they acknowledge.
fn tasks() -> Vec<TaskId> {
    let shape = shape();
    let mut out = Vec::new();
    for (stage, p) in shape.parallelism.iter().enumerate() {
        for subtask in 0..*p {
            out.push(TaskId { stage, subtask });
        }
    }
    out
}

fn file_name(t: TaskId) -> String {
    format!("s{}-t{}-op0.arrow", t.stage, t.subtask)
}

/// The subtask of stage 1 that an event goes to.
fn partition(v: i64) -> usize {
    usize::try_from(v.rem_euclid(2)).unwrap()
}

/// Operator state of one subtask: running sum and count of the events it has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Acc {
    sum: i64,
    count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    /// Source position: events consumed.
    pos: usize,
    /// The last checkpoint (after every event) is taken: nothing is left to do.
    finished: bool,
    state: BTreeMap<TaskId, Acc>,
}

impl Job {
    fn fresh() -> Self {
        Self {
            pos: 0,
            finished: false,
            state: tasks().into_iter().map(|t| (t, Acc::default())).collect(),
        }
    }

    /// The job as an uninterrupted run leaves it right after checkpoint `epoch`.
    fn after_epoch(epoch: Option<u64>) -> Self {
        let mut job = Self::fresh();
        for _ in 0..epoch.unwrap_or(0) {
            job.process_epoch();
        }
        job.finished = job.pos == EVENTS;
        job
    }

    /// Consumes the next epoch's events; returns the sink's output for them.
    fn process_epoch(&mut self) -> Vec<i64> {
        let input = input();
        let end = (self.pos + PER_EPOCH).min(EVENTS);
        let rows = input[self.pos..end].to_vec();
        for &v in &rows {
            for t in [
                TaskId {
                    stage: 0,
                    subtask: 0,
                },
                TaskId {
                    stage: 1,
                    subtask: partition(v),
                },
            ] {
                let acc = self.state.get_mut(&t).unwrap();
                acc.sum += v;
                acc.count += 1;
            }
        }
        self.pos = end;
        rows
    }

    /// The job as checkpoint `m` (with its verified state files) describes it.
    fn restore(m: &Manifest, state: &BTreeMap<StateKey, Vec<RecordBatch>>) -> Self {
        assert_eq!(m.parallelism, shape().parallelism);
        assert_eq!(m.plan, shape().plan);
        assert_eq!(m.sources.len(), 1, "one source subtask: {:?}", m.sources);
        let pos = m.sources[0]["consumed"]
            .as_u64()
            .unwrap_or_else(|| panic!("source position in {:?}", m.sources[0]));
        let keys: Vec<StateKey> = tasks().iter().map(|t| (t.stage, t.subtask, 0)).collect();
        assert_eq!(
            state.keys().copied().collect::<Vec<_>>(),
            keys,
            "state of checkpoint {}",
            m.epoch
        );
        let state = tasks()
            .into_iter()
            .map(|t| (t, acc_from(&state[&(t.stage, t.subtask, 0)])))
            .collect();
        Self {
            pos: usize::try_from(pos).unwrap(),
            finished: m.finished,
            state,
        }
    }
}

fn state_batch(acc: Acc) -> RecordBatch {
    RecordBatch::try_from_iter([
        ("sum", Arc::new(Int64Array::from(vec![acc.sum])) as ArrayRef),
        (
            "count",
            Arc::new(Int64Array::from(vec![acc.count])) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn acc_from(batches: &[RecordBatch]) -> Acc {
    assert_eq!(batches.len(), 1, "one batch of state");
    let col = |name: &str| {
        let a = batches[0]
            .column_by_name(name)
            .unwrap_or_else(|| panic!("state column {name}"));
        let a = a.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(a.len(), 1);
        a.value(0)
    };
    Acc {
        sum: col("sum"),
        count: col("count"),
    }
}

// ---------------------------------------------------------------------------------
// The model exactly-once sink: output parts named by epoch, like the file sink
// ---------------------------------------------------------------------------------

/// Survives crashes (it is the sink's external storage). Parts are appended to, never
/// replaced, so that a part written twice shows up as duplicated output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Sink {
    pending: BTreeMap<u64, Vec<i64>>,
    committed: BTreeMap<u64, Vec<i64>>,
}

impl Sink {
    /// The barrier of `epoch` passed the sink: its part is written, not yet visible.
    fn precommit(&mut self, epoch: u64, rows: Vec<i64>) {
        self.pending.entry(epoch).or_default().extend(rows);
    }

    /// `Step::Commit(epoch)`: parts up to `epoch` become visible.
    fn commit(&mut self, epoch: u64) {
        let later = self.pending.split_off(&(epoch + 1));
        for (e, rows) in std::mem::replace(&mut self.pending, later) {
            self.committed.entry(e).or_default().extend(rows);
        }
    }

    /// Restart from checkpoint `restored`: parts it covers are committed (the crash may
    /// have come before the commit), everything later is discarded (it will be
    /// written again).
    fn recover(&mut self, restored: Option<u64>) {
        let r = restored.unwrap_or(0);
        self.commit(r);
        self.pending.clear();
        self.committed.retain(|e, _| *e <= r);
    }

    /// Visible output, as a sorted multiset.
    fn output(&self) -> Vec<i64> {
        let mut out: Vec<i64> = self.committed.values().flatten().copied().collect();
        out.sort_unstable();
        out
    }
}

// ---------------------------------------------------------------------------------
// A store that crashes after k operations
// ---------------------------------------------------------------------------------

/// One I/O step of the protocol (everything that changes durable state).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// The sink writes the pending part of an epoch.
    PreCommit(u64),
    /// A state file.
    Put(u64, String),
    /// A manifest.
    Manifest(u64),
    /// The sink commits up to an epoch.
    Commit(u64),
    /// A checkpoint is removed.
    Delete(u64),
    /// The sink is reset to a restored epoch.
    SinkRecover(Option<u64>),
}

#[derive(Debug, Default)]
struct Gate {
    done: Vec<Op>,
    crashed: bool,
}

enum Pass {
    Go,
    CrashNow,
    Down,
}

/// A view of a shared [`MemoryStore`] that performs `crash_after` operations, fails the
/// next one with an injected crash and refuses everything after it. The sink's steps
/// go through the same counter. `torn`: the operation the crash interrupts is left
/// half done (a state file half written, a deleted checkpoint's files damaged while
/// its manifest remains — what a crash inside `remove_dir_all` can leave).
#[derive(Debug)]
struct CrashingStore {
    inner: Arc<MemoryStore>,
    crash_after: Option<usize>,
    torn: bool,
    gate: Mutex<Gate>,
}

impl CrashingStore {
    fn new(inner: Arc<MemoryStore>, crash_after: Option<usize>, torn: bool) -> Self {
        Self {
            inner,
            crash_after,
            torn,
            gate: Mutex::default(),
        }
    }

    /// The steps performed (the crashing one is not among them).
    fn done(&self) -> Vec<Op> {
        self.gate.lock().unwrap().done.clone()
    }

    fn crashed(&self) -> bool {
        self.gate.lock().unwrap().crashed
    }

    fn pass(&self, op: Op) -> Pass {
        let mut g = self.gate.lock().unwrap();
        if g.crashed {
            Pass::Down
        } else if self.crash_after == Some(g.done.len()) {
            g.crashed = true;
            Pass::CrashNow
        } else {
            g.done.push(op);
            Pass::Go
        }
    }

    /// A step of the sink (or anything else without store I/O).
    fn step(&self, op: Op) -> Result<()> {
        let what = format!("{op:?}");
        match self.pass(op) {
            Pass::Go => Ok(()),
            Pass::CrashNow => Err(Error::runtime(format!("{INJECTED} at {what}"))),
            Pass::Down => Err(Error::runtime(DOWN)),
        }
    }

    fn read_check(&self) -> Result<()> {
        if self.crashed() {
            Err(Error::runtime(DOWN))
        } else {
            Ok(())
        }
    }
}

impl CheckpointStore for CrashingStore {
    fn put(&self, epoch: u64, name: &str, bytes: &[u8]) -> Result<()> {
        match self.pass(Op::Put(epoch, name.into())) {
            Pass::Go => self.inner.put(epoch, name, bytes),
            Pass::CrashNow => {
                if self.torn {
                    self.inner.put(epoch, name, &bytes[..bytes.len() / 2])?;
                }
                Err(Error::runtime(format!("{INJECTED} writing {epoch}/{name}")))
            }
            Pass::Down => Err(Error::runtime(DOWN)),
        }
    }

    fn get(&self, epoch: u64, name: &str) -> Result<Vec<u8>> {
        self.read_check()?;
        self.inner.get(epoch, name)
    }

    fn put_manifest(&self, epoch: u64, bytes: &[u8]) -> Result<()> {
        // Atomic by contract: a crash leaves it absent (or, as the next step's crash,
        // whole), never torn.
        match self.pass(Op::Manifest(epoch)) {
            Pass::Go => self.inner.put_manifest(epoch, bytes),
            Pass::CrashNow => Err(Error::runtime(format!(
                "{INJECTED} writing manifest {epoch}"
            ))),
            Pass::Down => Err(Error::runtime(DOWN)),
        }
    }

    fn get_manifest(&self, epoch: u64) -> Result<Option<Vec<u8>>> {
        self.read_check()?;
        self.inner.get_manifest(epoch)
    }

    fn epochs(&self) -> Result<Vec<u64>> {
        self.read_check()?;
        self.inner.epochs()
    }

    fn delete(&self, epoch: u64) -> Result<()> {
        match self.pass(Op::Delete(epoch)) {
            Pass::Go => self.inner.delete(epoch),
            Pass::CrashNow => {
                if self.torn {
                    for t in tasks() {
                        self.inner
                            .tamper(epoch, &file_name(t), |b| b.truncate(b.len() / 3))?;
                    }
                }
                Err(Error::runtime(format!("{INJECTED} deleting {epoch}")))
            }
            Pass::Down => Err(Error::runtime(DOWN)),
        }
    }

    fn location(&self) -> String {
        format!("crashing view of {}", self.inner.location())
    }
}

// ---------------------------------------------------------------------------------
// The driver: the runtime's coordinator loop, reduced to its I/O steps
// ---------------------------------------------------------------------------------

/// Runs `job` to its end: per epoch, process the events, trigger, pre-commit the sink,
/// snapshot every subtask (one state file each) and ack, write the manifest, then carry
/// out the steps `manifest_written` returns. Stops at the first failing step.
fn run(
    store: &CrashingStore,
    sink: &mut Sink,
    job: &mut Job,
    coord: &mut Coordinator,
) -> Result<()> {
    while !job.finished {
        let rows = job.process_epoch();
        let finished = job.pos == EVENTS;
        // Deterministic clock, so that a re-run writes byte-identical manifests.
        let now = i64::try_from(job.pos).unwrap() * 10;
        let epoch = coord
            .trigger(now, finished)
            .expect("no checkpoint can be in flight between epochs");
        assert_eq!(
            u64::try_from(job.pos.div_ceil(PER_EPOCH)).unwrap(),
            epoch,
            "epoch numbering follows the source position"
        );
        store.step(Op::PreCommit(epoch))?;
        sink.precommit(epoch, rows);
        let mut write = None;
        for task in tasks() {
            let (bytes, crc32) =
                encode_batches(&[state_batch(job.state[&task])])?.expect("state is never empty");
            let name = file_name(task);
            store.put(epoch, &name, &bytes)?;
            let ack = Ack {
                epoch,
                task,
                files: vec![FileEntry {
                    stage: task.stage,
                    subtask: task.subtask,
                    operator: 0,
                    operator_name: "sum".into(),
                    name,
                    bytes: bytes.len() as u64,
                    rows: 1,
                    crc32,
                }],
                source: (task.stage == 0).then(|| serde_json::json!({ "consumed": job.pos })),
            };
            if let Some(step) = coord.ack(ack, now + 7).expect("a valid ack") {
                assert!(write.is_none(), "two manifests for epoch {epoch}");
                write = Some(step);
            }
        }
        let Some(Step::WriteManifest(m)) = write else {
            panic!("every task acked epoch {epoch}, yet no manifest to write: {write:?}")
        };
        assert_eq!((m.epoch, m.finished), (epoch, finished));
        assert_eq!(m.files.len(), tasks().len());
        store.put_manifest(epoch, &m.encode())?;
        let steps = coord.manifest_written();
        assert_eq!(
            steps.first(),
            Some(&Step::Commit(epoch)),
            "commit comes first"
        );
        for step in steps {
            match step {
                Step::Commit(e) => {
                    store.step(Op::Commit(e))?;
                    sink.commit(e);
                }
                Step::Delete(e) => {
                    assert!(e < epoch, "retention deletes only older checkpoints");
                    store.delete(e)?;
                }
                Step::WriteManifest(_) => panic!("a manifest after manifest_written"),
            }
        }
        job.finished = finished;
    }
    Ok(())
}

/// What recovery decided (before doing any I/O that changes the store).
#[derive(Debug)]
struct Plan {
    listing: BTreeMap<u64, Listing>,
    /// Candidates that failed to load, with the error.
    skipped: Vec<(u64, String)>,
    restored: Option<u64>,
    job: Job,
}

/// Reads the store and decides: list, candidates newest first, load the first that
/// verifies.
fn plan_recovery(store: &dyn CheckpointStore) -> Plan {
    let listing = recovery::list(store).expect("listing a store that is up");
    let mut skipped = Vec::new();
    let mut chosen = None;
    for epoch in restore_candidates(&listing) {
        let Some(Listing::Complete(m)) = listing.get(&epoch) else {
            panic!("candidate {epoch} is not complete in {listing:?}")
        };
        assert_eq!(m.epoch, epoch);
        match recovery::load(store, m) {
            Ok(state) => {
                chosen = Some((epoch, Job::restore(m, &state)));
                break;
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::Damaged { epoch: d, .. } if d == epoch),
                    "a load failure of checkpoint {epoch} is Damaged naming it: {e:?}"
                );
                skipped.push((epoch, e.to_string()));
            }
        }
    }
    let (restored, job) = match chosen {
        Some((e, job)) => (Some(e), job),
        None => (None, Job::fresh()),
    };
    Plan {
        listing,
        skipped,
        restored,
        job,
    }
}

/// Carries out a recovery plan: reset the sink, delete what the restore leaves behind,
/// and return the coordinator to continue with.
fn apply_recovery(store: &CrashingStore, sink: &mut Sink, plan: &Plan) -> Result<Coordinator> {
    store.step(Op::SinkRecover(plan.restored))?;
    sink.recover(plan.restored);
    for e in cleanup_after_restore(&plan.listing, plan.restored, KEEP) {
        store.delete(e)?;
    }
    let retained = retained_after_restore(&plan.listing, plan.restored, KEEP);
    assert!(retained.len() <= KEEP);
    assert_eq!(
        retained.last().copied(),
        plan.restored,
        "the restored one is retained, newest"
    );
    Ok(Coordinator::new(
        shape(),
        KEEP,
        plan.restored.unwrap_or(0),
        retained,
    ))
}

/// Recovery followed by the rest of the job, all through `store`.
fn recover_and_run(store: &CrashingStore, sink: &mut Sink) -> (Plan, Result<()>) {
    let plan = plan_recovery(store);
    let result = apply_recovery(store, sink, &plan).and_then(|mut coord| {
        let mut job = plan.job.clone();
        run(store, sink, &mut job, &mut coord)?;
        assert_eq!(
            job,
            Job::after_epoch(Some(last_epoch())),
            "final operator state"
        );
        Ok(())
    });
    (plan, result)
}

fn assert_injected(r: &Result<()>, ctx: &str) {
    match r {
        Err(e) if e.to_string().contains(INJECTED) => {}
        other => panic!("{ctx}: expected the injected crash, got {other:?}"),
    }
}

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
    assert_eq!(
        plan.restored, expect_restored,
        "{ctx}: restored epoch ({:?})",
        plan.skipped
    );
    assert_eq!(
        plan.job,
        Job::after_epoch(plan.restored),
        "{ctx}: restored state"
    );
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
// Reproducers of library defects found while writing these tests (ignored so that the
// suite stays green until they are fixed; run with `-- --ignored`).
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
