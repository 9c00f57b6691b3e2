//! The simulated job of `protocol_crash.rs`: a source and a keyed sum over a replayable
//! input, checkpointed by the pure [`Coordinator`] into a store that "crashes" after any
//! number of operations; a model exactly-once sink; and the driver, the runtime's
//! coordinator and recovery loops reduced to their I/O steps.

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
pub const EVENTS: usize = 40;
/// Events covered by each checkpoint epoch (the last epoch gets the 4 left over).
pub const PER_EPOCH: usize = 6;
/// Complete checkpoints retained.
pub const KEEP: usize = 3;
pub const MANIFEST: &str = "_manifest";
pub const INJECTED: &str = "injected crash";
pub const DOWN: &str = "store is down after the injected crash";

pub fn input() -> Vec<i64> {
    (0..EVENTS as i64).map(|i| (i * 37 + 11) % 23 - 9).collect()
}

pub fn last_epoch() -> u64 {
    EVENTS.div_ceil(PER_EPOCH) as u64
}

pub fn shape() -> JobShape {
    JobShape {
        job: "crash-test".into(),
        plan: vec!["source".into(), "sum+count by parity".into()],
        parallelism: vec![1, 2],
    }
}

/// Every subtask of [`shape`], in the order they acknowledge.
pub fn tasks() -> Vec<TaskId> {
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
pub struct Acc {
    pub sum: i64,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Source position: events consumed.
    pub pos: usize,
    /// The last checkpoint (after every event) is taken: nothing is left to do.
    pub finished: bool,
    pub state: BTreeMap<TaskId, Acc>,
}

impl Job {
    pub fn fresh() -> Self {
        Self {
            pos: 0,
            finished: false,
            state: tasks().into_iter().map(|t| (t, Acc::default())).collect(),
        }
    }

    /// The job as an uninterrupted run leaves it right after checkpoint `epoch`.
    pub fn after_epoch(epoch: Option<u64>) -> Self {
        let mut job = Self::fresh();
        for _ in 0..epoch.unwrap_or(0) {
            job.process_epoch();
        }
        job.finished = job.pos == EVENTS;
        job
    }

    /// Consumes the next epoch's events; returns the sink's output for them.
    pub fn process_epoch(&mut self) -> Vec<i64> {
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
    pub fn restore(m: &Manifest, state: &BTreeMap<StateKey, Vec<RecordBatch>>) -> Self {
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
pub struct Sink {
    pub pending: BTreeMap<u64, Vec<i64>>,
    pub committed: BTreeMap<u64, Vec<i64>>,
}

impl Sink {
    /// The barrier of `epoch` passed the sink: its part is written, not yet visible.
    pub fn precommit(&mut self, epoch: u64, rows: Vec<i64>) {
        self.pending.entry(epoch).or_default().extend(rows);
    }

    /// `Step::Commit(epoch)`: parts up to `epoch` become visible.
    pub fn commit(&mut self, epoch: u64) {
        let later = self.pending.split_off(&(epoch + 1));
        for (e, rows) in std::mem::replace(&mut self.pending, later) {
            self.committed.entry(e).or_default().extend(rows);
        }
    }

    /// Restart from checkpoint `restored`: parts it covers are committed (the crash may
    /// have come before the commit), everything later is discarded (it will be
    /// written again).
    pub fn recover(&mut self, restored: Option<u64>) {
        let r = restored.unwrap_or(0);
        self.commit(r);
        self.pending.clear();
        self.committed.retain(|e, _| *e <= r);
    }

    /// Visible output, as a sorted multiset.
    pub fn output(&self) -> Vec<i64> {
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
pub enum Op {
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
pub struct CrashingStore {
    inner: Arc<MemoryStore>,
    crash_after: Option<usize>,
    torn: bool,
    gate: Mutex<Gate>,
}

impl CrashingStore {
    pub fn new(inner: Arc<MemoryStore>, crash_after: Option<usize>, torn: bool) -> Self {
        Self {
            inner,
            crash_after,
            torn,
            gate: Mutex::default(),
        }
    }

    /// The steps performed (the crashing one is not among them).
    pub fn done(&self) -> Vec<Op> {
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
    pub fn step(&self, op: Op) -> Result<()> {
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
pub fn run(
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
pub struct Plan {
    pub listing: BTreeMap<u64, Listing>,
    /// Candidates that failed to load, with the error.
    pub skipped: Vec<(u64, String)>,
    pub restored: Option<u64>,
    pub job: Job,
}

/// Reads the store and decides: list, candidates newest first, load the first that
/// verifies.
pub fn plan_recovery(store: &dyn CheckpointStore) -> Plan {
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
pub fn apply_recovery(store: &CrashingStore, sink: &mut Sink, plan: &Plan) -> Result<Coordinator> {
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
pub fn recover_and_run(store: &CrashingStore, sink: &mut Sink) -> (Plan, Result<()>) {
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

pub fn assert_injected(r: &Result<()>, ctx: &str) {
    match r {
        Err(e) if e.to_string().contains(INJECTED) => {}
        other => panic!("{ctx}: expected the injected crash, got {other:?}"),
    }
}
