//! Runs of a query cut by snapshots and resumed from them, for `snapshot_restore.rs`
//! (whose module documentation describes how a run is cut): the operators that stand in
//! for barriers, the state of a cut run, its redistribution by key group, and the state
//! taken apart for comparison.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Int64Type, UInt16Type};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use proptest::prelude::*;
use tidewater_core::key::{hash_columns, key_group, subtask_for_key_group};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Result as TwResult, Watermark};
use tidewater_runtime::watermark::{WatermarkGenerator, max_event_time};
use tidewater_runtime::{
    Barrier, Chain, KEY_GROUP_COLUMN, Operator, Output, RestoredState, SourceStage, StateWriter,
};

use super::oracle::ResultRow;
use super::query::{Query, collected_rows, deal, execute_window_flow, vec_readers};

// ---------------------------------------------------------------------------------------
// Operators around the window operators.
// ---------------------------------------------------------------------------------------

/// Collects every batch it receives.
#[derive(Debug)]
struct Collect(Arc<Mutex<Vec<RecordBatch>>>);

impl Operator for Collect {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> TwResult<()> {
        self.0.lock().expect("collect lock").push(batch);
        Ok(())
    }
}

/// Where a wrapped operator's state ends up.
pub type Slot = Arc<Mutex<Option<Vec<RecordBatch>>>>;

/// Runs `inner` until the end of input, which plays the barrier: `inner` writes its state
/// into `slot` and is *not* flushed (a checkpointed job goes on; this one is cut here).
///
/// With several source subtasks the end of input is not quite a barrier: once one input
/// has ended, the subtask's watermark jumps to the minimum of the others, beyond what it
/// would be at an aligned barrier. So a window operator gets at most `clamp`, the
/// watermark at the barrier (the minimum over the sources), and gets `clamp` itself just
/// before the snapshot if it has not seen it yet, as after the last watermark before an
/// aligned barrier.
#[derive(Debug)]
struct SnapshotAtEnd {
    inner: Box<dyn Operator>,
    slot: Slot,
    clamp: Option<Watermark>,
    last: Watermark,
}

impl SnapshotAtEnd {
    fn new(inner: Box<dyn Operator>, slot: Slot, clamp: Option<Watermark>) -> Self {
        Self {
            inner,
            slot,
            clamp,
            last: Watermark::MIN,
        }
    }
}

impl Operator for SnapshotAtEnd {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> TwResult<()> {
        self.inner.process_batch(batch, out)
    }

    fn on_watermark(&mut self, wm: Watermark, out: &mut Output) -> TwResult<()> {
        let wm = self.clamp.map_or(wm, |c| wm.min(c));
        if wm > self.last {
            self.last = wm;
            self.inner.on_watermark(wm, out)?;
        }
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> TwResult<()> {
        if let Some(c) = self.clamp
            && c > self.last
        {
            self.last = c;
            self.inner.on_watermark(c, out)?;
        }
        let state = snapshot_of(self.inner.as_mut(), 1)?;
        *self.slot.lock().expect("slot lock") = Some(state);
        Ok(())
    }
}

/// Takes a checkpoint (and throws it away) after every call: checkpoints must not change
/// what an operator does.
#[derive(Debug)]
struct Busy {
    inner: Box<dyn Operator>,
    epoch: u64,
}

impl Busy {
    fn checkpoint(&mut self) -> TwResult<()> {
        self.epoch += 1;
        snapshot_of(self.inner.as_mut(), self.epoch).map(drop)
    }
}

impl Operator for Busy {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> TwResult<()> {
        self.inner.process_batch(batch, out)?;
        self.checkpoint()
    }

    fn on_watermark(&mut self, wm: Watermark, out: &mut Output) -> TwResult<()> {
        self.inner.on_watermark(wm, out)?;
        self.checkpoint()
    }

    fn on_end(&mut self, out: &mut Output) -> TwResult<()> {
        self.inner.on_end(out)?;
        self.checkpoint()
    }
}

/// What `op` writes at barrier `epoch`.
pub fn snapshot_of(op: &mut dyn Operator, epoch: u64) -> TwResult<Vec<RecordBatch>> {
    let mut w = StateWriter::default();
    op.on_barrier(&Barrier::for_tests(epoch), &mut w)?;
    Ok(w.into_batches())
}

// ---------------------------------------------------------------------------------------
// Runs, snapshots, restores.
// ---------------------------------------------------------------------------------------

/// The state of a cut run, as a checkpoint holds it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Each watermark generator's, by source subtask.
    pub source: Vec<Vec<RecordBatch>>,
    /// Each window subtask's, by subtask index.
    pub window: Vec<Vec<RecordBatch>>,
}

/// What one run emitted and counted.
#[derive(Debug)]
pub struct Outcome {
    pub rows: Vec<ResultRow>,
    pub late: u64,
    pub dead_letters: u64,
    /// Only for `Stop::Snapshot`.
    pub snapshot: Option<Snapshot>,
    /// `(live_keys, live_slices)` of each sliced window subtask after the end.
    pub leftovers: Vec<(usize, usize)>,
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// End of input: every window fires.
    Flush,
    /// The same, with a checkpoint (state discarded) after every batch and watermark.
    FlushAfterBarriers,
    /// End of input is the barrier: state is written, nothing is flushed.
    Snapshot,
}

/// Through an Arrow IPC stream and back, as a checkpoint store keeps state.
pub fn ipc_round_trip(batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
    let Some(first) = batches.first() else {
        return batches;
    };
    let mut w = StreamWriter::try_new(Vec::new(), &first.schema()).expect("ipc writer");
    for b in &batches {
        w.write(b).expect("ipc write");
    }
    w.finish().expect("ipc finish");
    let bytes = w.into_inner().expect("ipc bytes");
    StreamReader::try_new(bytes.as_slice(), None)
        .expect("ipc reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("ipc read")
}

/// The rows of state batch `b` that subtask `i` of `n` owns (the runtime's `owned_rows`):
/// rows of its key groups and rows without a key group; all rows of unkeyed state.
pub fn owned_rows(b: &RecordBatch, i: usize, n: usize) -> Option<RecordBatch> {
    let Some(col) = b.column_by_name(KEY_GROUP_COLUMN) else {
        return Some(b.clone());
    };
    let kg = col
        .as_primitive_opt::<UInt16Type>()
        .expect("key group column is UInt16");
    let mask: BooleanArray = kg
        .iter()
        .map(|g| Some(g.is_none_or(|g| subtask_for_key_group(u32::from(g), n) == i)))
        .collect();
    let out = filter_record_batch(b, &mask).expect("filter");
    (out.num_rows() > 0).then_some(out)
}

/// The largest event time restored watermark generators start from: the smallest of the
/// old subtasks' (none if one had seen nothing), as `WatermarkGenerator::restore` takes it.
pub fn generator_max_seen(per_subtask: &[Vec<RecordBatch>]) -> Option<i64> {
    let mut min: Option<Option<i64>> = None;
    for b in per_subtask.iter().flatten() {
        let col = b
            .column_by_name("max_seen")
            .expect("watermark generator state has 'max_seen'")
            .as_primitive::<Int64Type>();
        for i in 0..col.len() {
            let v = col.is_valid(i).then(|| col.value(i));
            min = Some(min.map_or(v, |m| m.zip(v).map(|(a, b)| a.min(b))));
        }
    }
    min.flatten()
}

/// What subtask `i` of `n` gets back of the state `per_subtask` (all old subtasks, in
/// order, as the runtime collects it).
pub fn restored_for(per_subtask: &[Vec<RecordBatch>], i: usize, n: usize) -> RestoredState {
    RestoredState {
        epoch: 1,
        subtask: i,
        parallelism: n,
        batches: per_subtask
            .iter()
            .flatten()
            .filter_map(|b| owned_rows(b, i, n))
            .collect(),
    }
}

/// Runs `batches` (dealt round-robin to `readers` source subtasks, each with a watermark
/// generator `delay_ms` behind) through the hash exchange on the key columns into
/// `parallelism` window subtasks, resuming from `restore` (if any) and ending as `stop`
/// says.
pub fn run(
    query: &Query,
    batches: Vec<RecordBatch>,
    delay_ms: i64,
    (readers, parallelism): (usize, usize),
    restore: Option<&Snapshot>,
    stop: Stop,
) -> Outcome {
    let k = query.key_columns();
    let metrics = Arc::new(JobMetrics::default());
    let collected = Arc::new(Mutex::new(Vec::new()));
    let leftovers = Arc::new(Mutex::new(Vec::new()));
    let shares = deal(batches, readers);
    // The window subtasks' watermark at the cut: the minimum over the sources of what
    // each one's generator emitted last in this run (none while one of them has emitted
    // nothing). A restored generator emits only once its input passes the largest event
    // time it restored.
    let restored_max = restore.and_then(|snap| generator_max_seen(&snap.source));
    let at_barrier = shares
        .iter()
        .map(|share| {
            share
                .iter()
                .filter_map(|b| max_event_time(b.column(k).as_ref()).expect("event time"))
                .max()
                .filter(|m| restored_max.is_none_or(|r| *m > r))
                .map(|m| Watermark(m.saturating_sub(delay_ms)))
        })
        .min()
        .flatten()
        .unwrap_or(Watermark::MIN);
    let wrap = |op: Box<dyn Operator>, slot: &Slot, clamp: Option<Watermark>| match stop {
        Stop::Flush => op,
        Stop::FlushAfterBarriers => Box::new(Busy {
            inner: op,
            epoch: 0,
        }) as Box<dyn Operator>,
        Stop::Snapshot => {
            Box::new(SnapshotAtEnd::new(op, slot.clone(), clamp)) as Box<dyn Operator>
        }
    };

    let source_slots: Vec<Slot> = (0..readers).map(|_| Slot::default()).collect();
    let source = SourceStage {
        name: "events".into(),
        readers: vec_readers(shares),
        chains: source_slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let mut generator = WatermarkGenerator::new(k, delay_ms);
                if let Some(snap) = restore {
                    generator
                        .restore(restored_for(&snap.source, i, readers))
                        .expect("restore a watermark generator");
                }
                vec![wrap(Box::new(generator), slot, None)]
            })
            .collect(),
    };

    let window_slots: Vec<Slot> = (0..parallelism).map(|_| Slot::default()).collect();
    let chains: Vec<Chain> = window_slots
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            let mut op = query.window_operator(&metrics, &leftovers);
            if let Some(snap) = restore {
                op.restore(restored_for(&snap.window, i, parallelism))
                    .expect("restore a window subtask");
            }
            vec![
                wrap(Box::new(op), slot, Some(at_barrier)),
                Box::new(Collect(collected.clone())) as Box<dyn Operator>,
            ]
        })
        .collect();
    execute_window_flow(query, source, chains);

    let rows = collected_rows(&collected.lock().expect("collect lock"), query, &metrics);
    let take = |slot: &Slot| {
        let state = slot.lock().expect("slot lock").take();
        ipc_round_trip(state.expect("the operator took its snapshot"))
    };
    let snapshot = (stop == Stop::Snapshot).then(|| Snapshot {
        source: source_slots.iter().map(take).collect(),
        window: window_slots.iter().map(take).collect(),
    });
    let leftovers = std::mem::take(&mut *leftovers.lock().expect("leftovers lock"));
    Outcome {
        rows,
        late: metrics.late_events.load(AtomicOrdering::Relaxed),
        dead_letters: metrics.dead_letters.load(AtomicOrdering::Relaxed),
        snapshot,
        leftovers,
    }
}

/// Restores fresh window operators at `n` subtasks from `snap` and snapshots them again
/// (no input in between), by subtask.
pub fn restore_and_snapshot(query: &Query, snap: &Snapshot, n: usize) -> Vec<Vec<RecordBatch>> {
    let metrics = Arc::new(JobMetrics::default());
    let leftovers = Arc::new(Mutex::new(Vec::new()));
    (0..n)
        .map(|i| {
            let mut op = query.window_operator(&metrics, &leftovers);
            op.restore(restored_for(&snap.window, i, n))
                .expect("restore a window subtask");
            ipc_round_trip(snapshot_of(&mut op, 2).expect("snapshot"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// State, taken apart generically (no knowledge of the layout beyond the key group).
// ---------------------------------------------------------------------------------------

/// One state row: its key group and every other cell rendered as text; binary cells
/// (encoded partials) as their bytes, or only their length when `binary_len_only` (a
/// COUNT DISTINCT partial encodes a hash map, whose order is not stable).
pub type StateRow = (Option<u16>, Vec<String>);

pub fn state_rows(batches: &[RecordBatch], binary_len_only: bool) -> Vec<StateRow> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let kg_idx = b.schema().index_of(KEY_GROUP_COLUMN).ok();
        let kg = kg_idx.map(|i| b.column(i).as_primitive::<UInt16Type>().clone());
        let cols: Vec<(usize, &ArrayRef)> = b
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != kg_idx)
            .collect();
        for r in 0..b.num_rows() {
            let group = kg.as_ref().and_then(|g| g.is_valid(r).then(|| g.value(r)));
            let cells = cols
                .iter()
                .map(|(_, c)| match c.data_type() {
                    DataType::Binary if binary_len_only => {
                        let bin = c.as_binary::<i32>();
                        if bin.is_null(r) {
                            "NULL".to_string()
                        } else {
                            format!("{} bytes", bin.value(r).len())
                        }
                    }
                    _ => ArrayFormatter::try_new(c.as_ref(), &opts)
                        .expect("formatter")
                        .value(r)
                        .to_string(),
                })
                .collect();
            out.push((group, cells));
        }
    }
    out.sort();
    out
}

/// Checks that every keyed row of `state` (written by subtask `i` of `n`) carries the key
/// group of its key, hashed as the exchange hashes it, and that subtask `i` owns that key
/// group: keyed state lives where the exchange routes its key.
pub fn check_key_groups(
    query: &Query,
    state: &[RecordBatch],
    i: usize,
    n: usize,
) -> Result<(), TestCaseError> {
    for b in state {
        let kg = b
            .column_by_name(KEY_GROUP_COLUMN)
            .expect("window state is keyed")
            .as_primitive::<UInt16Type>();
        let keys: Vec<ArrayRef> = query
            .key_names()
            .iter()
            .map(|name| b.column_by_name(name).expect("key column in state").clone())
            .collect();
        let mut hashes = Vec::new();
        hash_columns(&keys, b.num_rows(), &mut hashes).expect("hash");
        for (r, h) in hashes.iter().enumerate() {
            if kg.is_null(r) {
                continue;
            }
            let want = key_group(*h);
            prop_assert_eq!(
                u32::from(kg.value(r)),
                want,
                "state row {} has the key group of another key",
                r
            );
            prop_assert_eq!(
                subtask_for_key_group(want, n),
                i,
                "subtask {} of {} holds state of key group {}",
                i,
                n,
                want
            );
        }
    }
    Ok(())
}
