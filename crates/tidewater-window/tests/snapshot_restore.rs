#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
//! Checkpoint tests for the window operators: a run cut by snapshots and resumed from
//! them — at other parallelisms, with the state split by key group as the runtime does —
//! must emit exactly what one uninterrupted run emits (and so what the naive oracle in
//! `common/oracle.rs` computes), no window twice, with the same late events; a restored
//! state must snapshot to an equivalent state; and taking checkpoints must not change
//! what a run emits.
//!
//! How a run is cut: the operators run in a real dataflow (source subtasks with their
//! watermark generators, the runtime's hash exchange on the key columns, window subtasks,
//! each followed by a collector). A run reads the input up to the cut; at its end of input
//! every stateful operator (each watermark generator and each window subtask) writes its
//! state through `on_barrier` instead of flushing. With one source subtask the end of a
//! truncated input reaches each operator exactly where the barrier of a checkpoint taken
//! at that point of the input would (after the batch and the watermark it raised); with
//! several, the window operators' watermark is held at what it would be at an aligned
//! barrier (see [`SnapshotAtEnd`]). The state goes through an Arrow IPC round trip, as in
//! a checkpoint store. The next run reads the following input with fresh operators
//! restored from that state — window subtask `i` of `n` gets the rows of the key groups
//! it owns plus the rows without a key group, as `owned_rows` in the runtime's
//! `checkpoint.rs` does; every generator gets all generator state — while the runtime's
//! exchange routes the rows to the new subtasks.
//!
//! (Operators are not driven by hand because `Output` has no public way to read what an
//! operator emitted; the collector behind each window operator reads it instead.)
//!
//! `PROPTEST_CASES=n` sets the number of random cases (default 64 per property).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
    UInt16Type,
};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use proptest::prelude::*;
use tidewater_core::key::{hash_columns, key_group, subtask_for_key_group};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Result as TwResult, Watermark};
use tidewater_runtime::exec::execute;
use tidewater_runtime::watermark::{WatermarkGenerator, max_event_time};
use tidewater_runtime::{
    Barrier, Chain, Dataflow, KEY_GROUP_COLUMN, Operator, Output, Partitioning, RestoredState,
    SourceReader, SourceStage, Stage, StateWriter,
};
use tidewater_window::{
    AggKind, AggSpec, SessionWindowOperator, SlicedWindowOperator, WindowInput, WindowSpec,
};

use common::oracle::{self, Agg, AggFn, AggValue, ArgType, Event, KeyValue, ResultRow, Window};

// ---------------------------------------------------------------------------------------
// Operators around the window operators.
// ---------------------------------------------------------------------------------------

/// Yields a pre-assigned list of batches, then ends.
#[derive(Debug)]
struct VecReader(std::vec::IntoIter<RecordBatch>);

impl SourceReader for VecReader {
    fn next_batch(&mut self) -> TwResult<Option<RecordBatch>> {
        Ok(self.0.next())
    }
}

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
type Slot = Arc<Mutex<Option<Vec<RecordBatch>>>>;

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
fn snapshot_of(op: &mut dyn Operator, epoch: u64) -> TwResult<Vec<RecordBatch>> {
    let mut w = StateWriter::default();
    op.on_barrier(&Barrier::for_tests(epoch), &mut w)?;
    Ok(w.into_batches())
}

/// A window operator of either kind; records the state a sliced one holds after the end.
#[derive(Debug)]
enum WindowOp {
    Sliced {
        op: SlicedWindowOperator,
        leftovers: Arc<Mutex<Vec<(usize, usize)>>>,
    },
    Session(SessionWindowOperator),
}

impl WindowOp {
    fn inner(&mut self) -> &mut dyn Operator {
        match self {
            WindowOp::Sliced { op, .. } => op,
            WindowOp::Session(op) => op,
        }
    }
}

impl Operator for WindowOp {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> TwResult<()> {
        self.inner().process_batch(batch, out)
    }

    fn on_watermark(&mut self, wm: Watermark, out: &mut Output) -> TwResult<()> {
        self.inner().on_watermark(wm, out)
    }

    fn on_end(&mut self, out: &mut Output) -> TwResult<()> {
        self.inner().on_end(out)?;
        if let WindowOp::Sliced { op, leftovers } = self {
            leftovers
                .lock()
                .expect("leftovers lock")
                .push((op.live_keys(), op.live_slices()));
        }
        Ok(())
    }

    fn on_barrier(&mut self, barrier: &Barrier, state: &mut StateWriter) -> TwResult<()> {
        self.inner().on_barrier(barrier, state)
    }

    fn restore(&mut self, state: RestoredState) -> TwResult<()> {
        self.inner().restore(state)
    }
}

// ---------------------------------------------------------------------------------------
// The query and its Arrow layout (as in engine_vs_oracle.rs).
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Query {
    two_keys: bool,
    window: Window,
    aggs: Vec<Agg>,
}

impl Query {
    fn key_columns(&self) -> usize {
        if self.two_keys { 2 } else { 1 }
    }

    /// `[k0: STRING, (k1: BIGINT), ts, v: BIGINT, vf: DOUBLE]`.
    fn input_schema(&self) -> SchemaRef {
        let mut fields = vec![Field::new("k0", DataType::Utf8, true)];
        if self.two_keys {
            fields.push(Field::new("k1", DataType::Int64, true));
        }
        fields.push(Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ));
        fields.push(Field::new("v", DataType::Int64, true));
        fields.push(Field::new("vf", DataType::Float64, true));
        Arc::new(Schema::new(fields))
    }

    fn window_input(&self, metrics: &Arc<JobMetrics>) -> WindowInput {
        let k = self.key_columns();
        let schema = self.input_schema();
        let aggs = self
            .aggs
            .iter()
            .map(|a| {
                let kind = match a.func {
                    AggFn::CountStar => AggKind::CountStar,
                    AggFn::Count => AggKind::Count,
                    AggFn::CountDistinct => AggKind::CountDistinct,
                    AggFn::Sum => AggKind::Sum,
                    AggFn::Min => AggKind::Min,
                    AggFn::Max => AggKind::Max,
                    AggFn::Avg => AggKind::Avg,
                };
                let (arg, arg_type) = match (a.func, a.arg) {
                    (AggFn::CountStar, _) => (None, DataType::Int64),
                    (_, ArgType::Int) => (Some(k + 1), DataType::Int64),
                    (_, ArgType::Float) => (Some(k + 2), DataType::Float64),
                };
                AggSpec {
                    kind,
                    arg,
                    arg_type,
                }
            })
            .collect();
        WindowInput {
            key_columns: k,
            key_fields: schema.fields()[..k]
                .iter()
                .map(|f| f.as_ref().clone())
                .collect(),
            time_column: k,
            aggs,
            metrics: metrics.clone(),
        }
    }

    fn window_operator(
        &self,
        metrics: &Arc<JobMetrics>,
        leftovers: &Arc<Mutex<Vec<(usize, usize)>>>,
    ) -> WindowOp {
        let input = self.window_input(metrics);
        let spec = match self.window {
            Window::Tumble { size } => WindowSpec::Tumble { size },
            Window::Hop { size, slide } => WindowSpec::Hop { size, slide },
            Window::Cumulate { step, max_size } => WindowSpec::Cumulate { step, max_size },
            Window::Session { gap } => {
                return WindowOp::Session(
                    SessionWindowOperator::new(gap, input).expect("valid session window"),
                );
            }
        };
        WindowOp::Sliced {
            op: SlicedWindowOperator::new(spec, input).expect("valid sliced window"),
            leftovers: leftovers.clone(),
        }
    }

    fn batch(&self, events: &[Event]) -> RecordBatch {
        let mut cols: Vec<ArrayRef> = Vec::new();
        let key_str = |e: &Event| match &e.keys[0] {
            KeyValue::Str(s) => Some(s.clone()),
            KeyValue::Null => None,
            KeyValue::Int(i) => Some(i.to_string()),
        };
        cols.push(Arc::new(
            events.iter().map(key_str).collect::<StringArray>(),
        ));
        if self.two_keys {
            let key_int = |e: &Event| match &e.keys[1] {
                KeyValue::Int(i) => Some(*i),
                _ => None,
            };
            cols.push(Arc::new(events.iter().map(key_int).collect::<Int64Array>()));
        }
        cols.push(Arc::new(TimestampMillisecondArray::from(
            events.iter().map(|e| e.ts).collect::<Vec<_>>(),
        )));
        cols.push(Arc::new(
            events.iter().map(|e| e.value).collect::<Int64Array>(),
        ));
        cols.push(Arc::new(
            events
                .iter()
                .map(|e| e.value.map(|v| v as f64))
                .collect::<Float64Array>(),
        ));
        RecordBatch::try_new(self.input_schema(), cols).expect("input batch")
    }
}

fn key_value(col: &ArrayRef, i: usize) -> KeyValue {
    if col.is_null(i) {
        return KeyValue::Null;
    }
    match col.data_type() {
        DataType::Utf8 => KeyValue::Str(col.as_string::<i32>().value(i).to_string()),
        DataType::Int64 => KeyValue::Int(col.as_primitive::<Int64Type>().value(i)),
        other => panic!("unexpected key type {other}"),
    }
}

fn rows_of(batch: &RecordBatch, query: &Query) -> Vec<ResultRow> {
    let k = query.key_columns();
    let starts = batch.column(0).as_primitive::<TimestampMillisecondType>();
    let ends = batch.column(1).as_primitive::<TimestampMillisecondType>();
    (0..batch.num_rows())
        .map(|i| ResultRow {
            window_start: starts.value(i),
            window_end: ends.value(i),
            keys: (0..k).map(|c| key_value(batch.column(2 + c), i)).collect(),
            aggs: (0..query.aggs.len())
                .map(|a| {
                    let col = batch.column(2 + k + a);
                    if col.is_null(i) {
                        AggValue::Null
                    } else {
                        match col.data_type() {
                            DataType::Int64 => {
                                AggValue::Int(col.as_primitive::<Int64Type>().value(i))
                            }
                            DataType::Float64 => {
                                AggValue::Float(col.as_primitive::<Float64Type>().value(i))
                            }
                            other => panic!("unexpected aggregate type {other}"),
                        }
                    }
                })
                .collect(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Runs, snapshots, restores.
// ---------------------------------------------------------------------------------------

/// The state of a cut run, as a checkpoint holds it.
#[derive(Debug, Clone)]
struct Snapshot {
    /// Each watermark generator's, by source subtask.
    source: Vec<Vec<RecordBatch>>,
    /// Each window subtask's, by subtask index.
    window: Vec<Vec<RecordBatch>>,
}

/// What one run emitted and counted.
#[derive(Debug)]
struct Outcome {
    rows: Vec<ResultRow>,
    late: u64,
    dead_letters: u64,
    /// Only for `Stop::Snapshot`.
    snapshot: Option<Snapshot>,
    /// `(live_keys, live_slices)` of each sliced window subtask after the end.
    leftovers: Vec<(usize, usize)>,
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// End of input: every window fires.
    Flush,
    /// The same, with a checkpoint (state discarded) after every batch and watermark.
    FlushAfterBarriers,
    /// End of input is the barrier: state is written, nothing is flushed.
    Snapshot,
}

/// Through an Arrow IPC stream and back, as a checkpoint store keeps state.
fn ipc_round_trip(batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
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
fn owned_rows(b: &RecordBatch, i: usize, n: usize) -> Option<RecordBatch> {
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
fn generator_max_seen(per_subtask: &[Vec<RecordBatch>]) -> Option<i64> {
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
fn restored_for(per_subtask: &[Vec<RecordBatch>], i: usize, n: usize) -> RestoredState {
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
fn run(
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
    let mut shares: Vec<Vec<RecordBatch>> = vec![Vec::new(); readers];
    for (i, b) in batches.into_iter().enumerate() {
        shares[i % readers].push(b);
    }
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
        readers: shares
            .into_iter()
            .map(|s| Box::new(VecReader(s.into_iter())) as Box<dyn SourceReader>)
            .collect(),
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
    let flow = Dataflow {
        source,
        stages: vec![Stage {
            name: "window".into(),
            input: Partitioning::Hash {
                columns: (0..k).collect(),
                names: (0..k).map(|c| format!("k{c}")).collect(),
            },
            chains,
        }],
        channel_capacity: 4,
    };
    execute(flow).expect("the dataflow runs to completion");

    let expected_schema = query.window_input(&metrics).output_schema();
    let mut rows = Vec::new();
    for b in collected.lock().expect("collect lock").iter() {
        assert_eq!(b.schema(), expected_schema, "output schema");
        rows.extend(rows_of(b, query));
    }
    rows.sort();
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
fn restore_and_snapshot(query: &Query, snap: &Snapshot, n: usize) -> Vec<Vec<RecordBatch>> {
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
type StateRow = (Option<u16>, Vec<String>);

fn state_rows(batches: &[RecordBatch], binary_len_only: bool) -> Vec<StateRow> {
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
fn check_key_groups(
    query: &Query,
    state: &[RecordBatch],
    i: usize,
    n: usize,
) -> Result<(), TestCaseError> {
    let k = query.key_columns();
    let names = ["k0", "k1"];
    for b in state {
        let kg = b
            .column_by_name(KEY_GROUP_COLUMN)
            .expect("window state is keyed")
            .as_primitive::<UInt16Type>();
        let keys: Vec<ArrayRef> = names[..k]
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

// ---------------------------------------------------------------------------------------
// Random cases.
// ---------------------------------------------------------------------------------------

/// One raw event before timestamps are laid out: which key, the BIGINT key, how far event
/// time moves forward, how far this event lags behind the front, its value.
type RawEvent = (usize, Option<i64>, i64, i64, Option<i64>);

fn raw_event() -> impl Strategy<Value = RawEvent> {
    (
        0usize..20,
        prop_oneof![5 => (0i64..3).prop_map(Some), 1 => Just(None)],
        prop_oneof![12 => 0i64..200, 6 => (0i64..4).prop_map(|k| k * 100), 1 => 1_000i64..30_000],
        prop_oneof![1 => Just(0i64), 2 => 0i64..i64::MAX],
        prop_oneof![1 => Just(None), 8 => (-1000i64..1000).prop_map(Some)],
    )
}

/// Every window kind: TUMBLE, HOP (size a multiple of the slide, any size, size < slide,
/// odd lengths), CUMULATE and SESSION.
fn window() -> BoxedStrategy<Window> {
    prop_oneof![
        2 => (1i64..=30).prop_map(|s| Window::Tumble { size: s * 100 }),
        1 => (1i64..3000).prop_map(|size| Window::Tumble { size }),
        2 => (1i64..=20, 1i64..=8).prop_map(|(slide, m)| Window::Hop { size: slide * m * 100, slide: slide * 100 }),
        2 => (1i64..=60, 1i64..=30).prop_map(|(size, slide)| Window::Hop { size: size * 100, slide: slide * 100 }),
        1 => (1i64..=20, 1i64..=20).prop_map(|(size, extra)| Window::Hop { size: size * 100, slide: (size + extra) * 100 }),
        1 => (1i64..4000, 1i64..2000).prop_map(|(size, slide)| Window::Hop { size, slide }),
        2 => (1i64..=20, 1i64..=8).prop_map(|(step, k)| Window::Cumulate { step: step * 100, max_size: step * 100 * k }),
        1 => (1i64..500, 1i64..=8).prop_map(|(step, k)| Window::Cumulate { step, max_size: step * k }),
        3 => (1i64..=30).prop_map(|g| Window::Session { gap: g * 100 }),
        1 => (1i64..3000).prop_map(|gap| Window::Session { gap }),
    ]
    .boxed()
}

fn agg() -> impl Strategy<Value = Agg> {
    (
        prop_oneof![
            Just(AggFn::CountStar),
            Just(AggFn::Count),
            Just(AggFn::CountDistinct),
            Just(AggFn::Sum),
            Just(AggFn::Min),
            Just(AggFn::Max),
            Just(AggFn::Avg),
        ],
        prop_oneof![Just(ArgType::Int), Just(ArgType::Float)],
    )
        .prop_map(|(func, arg)| Agg {
            func,
            arg: if func == AggFn::CountStar {
                ArgType::Int
            } else {
                arg
            },
        })
}

/// Lays out timestamps so that each event is at most `max_lag` behind the largest
/// timestamp before it, and builds the keys and values.
fn lay_out(
    raw: &[RawEvent],
    n_keys: usize,
    two_keys: bool,
    base: i64,
    max_lag: i64,
    huge: bool,
) -> Vec<Event> {
    let mut front = base;
    raw.iter()
        .map(|&(key, k1, step, lag, value)| {
            front += step;
            let mut keys = vec![KeyValue::Str(format!("k{}", key % n_keys))];
            if two_keys {
                keys.push(k1.map_or(KeyValue::Null, KeyValue::Int));
            }
            // Huge values make integer SUM and AVG wrap around.
            let value = if huge {
                value.map(|v| v.wrapping_mul(9_223_372_036_854_775))
            } else {
                value
            };
            Event {
                keys,
                ts: front - lag % (max_lag + 1),
                value,
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Case {
    query: Query,
    events: Vec<Event>,
    batch_sizes: Vec<usize>,
    delay_ms: i64,
    /// Where two cuts fall, in percent of the input (0: before the first batch, 100:
    /// after the last); the first is at or before the second.
    cut_percent: (usize, usize),
    /// Window subtasks before the first cut, between the cuts, after the second.
    before: usize,
    after: usize,
    again: usize,
    /// Source subtasks likewise. More than one only without late events: with several
    /// sources, whether an event is late depends on thread timing.
    sources: (usize, usize, usize),
}

impl Case {
    fn chunks(&self) -> Vec<&[Event]> {
        let mut out = Vec::new();
        let mut rest = self.events.as_slice();
        let mut i = 0;
        while !rest.is_empty() {
            let n = self.batch_sizes[i % self.batch_sizes.len()].clamp(1, rest.len());
            out.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
        }
        out
    }

    fn batches(&self) -> Vec<RecordBatch> {
        self.chunks()
            .into_iter()
            .map(|c| self.query.batch(c))
            .collect()
    }

    /// Number of batches before each cut.
    fn cuts(&self, batches: usize) -> (usize, usize) {
        let at = |percent: usize| (percent * (batches + 1) / 100).min(batches);
        (at(self.cut_percent.0), at(self.cut_percent.1))
    }

    fn oracle(&self) -> oracle::LateOutcome {
        oracle::evaluate_with_watermarks(
            &self.chunks(),
            &self.query.window,
            &self.query.aggs,
            self.delay_ms,
        )
    }
}

/// A cut, often at either end of the input.
fn cut_percent() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 1 => Just(100usize), 6 => 0usize..=100]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            1usize..20,
            any::<bool>(),
            window(),
            prop::collection::vec(agg(), 1..=5),
        ),
        prop_oneof![Just(0i64), Just(1i64), 1i64..3000],
        // Disorder: within the delay (nothing late), or up to a few times the delay plus
        // a fixed amount (late and partially late events).
        prop_oneof![1 => Just(None), 1 => (1i64..4, prop_oneof![Just(500i64), 0i64..10_000]).prop_map(Some)],
        prop_oneof![Just(1_700_000_000_000i64), -100_000i64..100_000],
        prop::collection::vec(raw_event(), 0..300),
        prop::collection::vec(1usize..=50, 1..20),
        (cut_percent(), cut_percent()),
        (1usize..=4, 1usize..=4, 1usize..=4),
        (1usize..=3, 1usize..=3, 1usize..=3),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                (n_keys, two_keys, window, mut aggs),
                delay_ms,
                disorder,
                base,
                raw,
                batch_sizes,
                (cut1, cut2),
                (before, after, again),
                sources,
                huge,
            )| {
                if huge {
                    // Sums of huge doubles depend on the order of addition; keep those exact.
                    for a in &mut aggs {
                        if matches!(a.func, AggFn::Sum | AggFn::Avg) {
                            a.arg = ArgType::Int;
                        }
                    }
                }
                // Nothing is late when every event is less than the delay behind the
                // largest timestamp before it (so a delay of at least 1 ms).
                let (delay_ms, max_lag) = match disorder {
                    None => (delay_ms.max(1), delay_ms.max(1) - 1),
                    Some((factor, extra)) => (delay_ms, delay_ms * factor + extra),
                };
                let events = lay_out(&raw, n_keys, two_keys, base, max_lag, huge);
                Case {
                    query: Query {
                        two_keys,
                        window,
                        aggs,
                    },
                    events,
                    batch_sizes,
                    delay_ms,
                    cut_percent: (cut1.min(cut2), cut1.max(cut2)),
                    before,
                    after,
                    again,
                    sources: if disorder.is_some() {
                        (1, 1, 1)
                    } else {
                        sources
                    },
                }
            },
        )
}

fn config(cases: u32) -> ProptestConfig {
    // `PROPTEST_CASES=n` overrides the count for a longer soak.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Counterexamples are printed (with the seed) rather than written to a file.
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

fn window_keys(rows: &[ResultRow]) -> BTreeMap<(i64, i64, Vec<KeyValue>), usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry((r.window_start, r.window_end, r.keys.clone()))
            .or_default() += 1;
    }
    m
}

/// The property: the uninterrupted run matches the oracle, and so does a run with a
/// (discarded) checkpoint after every batch and watermark; a run cut twice — snapshot,
/// restore at another parallelism, more input, snapshot, restore again, the rest of the
/// input — emits exactly what the uninterrupted run emits, no window twice, with the same
/// late events and no state left after the end.
fn check_cut_and_resume(case: &Case) -> Result<(), TestCaseError> {
    let query = &case.query;
    let batches = case.batches();
    let (cut1, cut2) = case.cuts(batches.len());
    let expected = case.oracle();

    let run_whole = |stop| {
        run(
            query,
            batches.clone(),
            case.delay_ms,
            (case.sources.0, 1),
            None,
            stop,
        )
    };
    let whole = run_whole(Stop::Flush);
    if let Err(diff) = oracle::compare(&expected.rows, &whole.rows, 1e-9) {
        prop_assert!(
            false,
            "the uninterrupted run disagrees with the oracle (not a checkpoint problem): {}",
            diff
        );
    }
    prop_assert_eq!(whole.late, expected.late, "late events, uninterrupted run");
    let busy = run_whole(Stop::FlushAfterBarriers);
    if let Err(diff) = oracle::compare(&whole.rows, &busy.rows, 1e-9) {
        prop_assert!(
            false,
            "taking checkpoints changes the results of a run: {}",
            diff
        );
    }
    prop_assert_eq!(busy.late, whole.late, "late events with checkpoints");

    let first = run(
        query,
        batches[..cut1].to_vec(),
        case.delay_ms,
        (case.sources.0, case.before),
        None,
        Stop::Snapshot,
    );
    let s1 = first.snapshot.clone().expect("snapshot");
    for (i, state) in s1.window.iter().enumerate() {
        check_key_groups(query, state, i, case.before)?;
    }
    let second = run(
        query,
        batches[cut1..cut2].to_vec(),
        case.delay_ms,
        (case.sources.1, case.after),
        Some(&s1),
        Stop::Snapshot,
    );
    let s2 = second.snapshot.clone().expect("snapshot");
    for (i, state) in s2.window.iter().enumerate() {
        check_key_groups(query, state, i, case.after)?;
    }
    let third = run(
        query,
        batches[cut2..].to_vec(),
        case.delay_ms,
        (case.sources.2, case.again),
        Some(&s2),
        Stop::Flush,
    );

    let phases = [&first, &second, &third];
    let mut seen: BTreeMap<(i64, i64, Vec<KeyValue>), usize> = BTreeMap::new();
    for (p, phase) in phases.iter().enumerate() {
        for w in window_keys(&phase.rows).into_keys() {
            if let Some(q) = seen.insert(w.clone(), p) {
                prop_assert!(
                    false,
                    "window {:?} emitted in phase {} and again in phase {} (cuts after {} \
                     and {} of {} batches)",
                    w,
                    q,
                    p,
                    cut1,
                    cut2,
                    batches.len()
                );
            }
        }
    }
    let union: Vec<ResultRow> = phases.iter().flat_map(|p| p.rows.clone()).collect();
    if let Err(diff) = oracle::compare(&whole.rows, &union, 1e-9) {
        prop_assert!(
            false,
            "cuts after {} and {} of {} batches (window subtasks {} -> {} -> {}, sources \
             {:?}): the rows of the three phases ({}, {}, {}) differ from the uninterrupted \
             run: {}",
            cut1,
            cut2,
            batches.len(),
            case.before,
            case.after,
            case.again,
            case.sources,
            first.rows.len(),
            second.rows.len(),
            third.rows.len(),
            diff
        );
    }
    prop_assert_eq!(
        first.late + second.late + third.late,
        whole.late,
        "late events"
    );
    prop_assert_eq!(
        first.dead_letters + second.dead_letters + third.dead_letters,
        0
    );
    for (i, &(keys, slices)) in third.leftovers.iter().enumerate() {
        prop_assert!(
            keys == 0 && slices == 0,
            "restored subtask {} kept {} keys and {} slices after the end",
            i,
            keys,
            slices
        );
    }
    Ok(())
}

/// The property: snapshot → restore (at another parallelism) → snapshot gives the same
/// state, redistributed; and resuming from either state gives identical results.
fn check_restore_then_snapshot(case: &Case) -> Result<(), TestCaseError> {
    let query = &case.query;
    let batches = case.batches();
    let cut = case.cuts(batches.len()).0;
    let distinct = query.aggs.iter().any(|a| a.func == AggFn::CountDistinct);

    let first = run(
        query,
        batches[..cut].to_vec(),
        case.delay_ms,
        (case.sources.0, case.before),
        None,
        Stop::Snapshot,
    );
    let s1 = first.snapshot.expect("snapshot");
    let s2 = Snapshot {
        source: s1.source.clone(),
        window: restore_and_snapshot(query, &s1, case.after),
    };
    for (i, state) in s2.window.iter().enumerate() {
        check_key_groups(query, state, i, case.after)?;
    }

    // Keyed rows: the same, only redistributed. Clock rows: one per subtask, all equal
    // (every subtask saw the same watermarks).
    let split = |snap: &Snapshot| {
        let (keyed, clocks): (Vec<StateRow>, Vec<StateRow>) = snap
            .window
            .iter()
            .flat_map(|s| state_rows(s, distinct))
            .partition(|(g, _)| g.is_some());
        (keyed, clocks)
    };
    let (keyed1, clocks1) = split(&s1);
    let (keyed2, clocks2) = split(&s2);
    prop_assert_eq!(clocks1.len(), case.before, "one clock row per subtask");
    prop_assert_eq!(clocks2.len(), case.after, "one clock row per subtask");
    prop_assert!(
        clocks1.iter().chain(&clocks2).all(|c| *c == clocks1[0]),
        "clock rows differ: before {:?}, after restore {:?}",
        clocks1,
        clocks2
    );
    let mut keyed1 = keyed1;
    let mut keyed2 = keyed2;
    keyed1.sort();
    keyed2.sort();
    prop_assert_eq!(
        keyed1,
        keyed2,
        "keyed state changed through restore and snapshot ({} -> {} subtasks)",
        case.before,
        case.after
    );

    // Resuming from either gives identical results, at a third parallelism.
    let rest = batches[cut..].to_vec();
    let from1 = run(
        query,
        rest.clone(),
        case.delay_ms,
        (case.sources.1, case.again),
        Some(&s1),
        Stop::Flush,
    );
    let from2 = run(
        query,
        rest,
        case.delay_ms,
        (case.sources.1, case.again),
        Some(&s2),
        Stop::Flush,
    );
    prop_assert_eq!(from1.late, from2.late, "late events");
    if from1.rows != from2.rows {
        let diff = oracle::compare(&from1.rows, &from2.rows, 0.0).err();
        prop_assert!(
            false,
            "results after resuming from the snapshot and from its restored re-snapshot \
             differ: {:?}",
            diff
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    /// A run cut at a random point, snapshotted, and resumed at a random new parallelism
    /// emits exactly what an uninterrupted run (and the oracle) emits.
    #[test]
    fn cut_and_resume_matches_uninterrupted_run(case in case()) {
        check_cut_and_resume(&case)?;
    }

    /// Snapshot → restore → snapshot keeps the state, and results after it are identical.
    #[test]
    fn restore_then_snapshot_keeps_the_state(case in case()) {
        check_restore_then_snapshot(&case)?;
    }
}

/// The random cases cover every window kind, both ends of the input as the cut, changes
/// of parallelism up and down, and late and partially late events; checked without
/// running the engine (`-- --nocapture` shows the numbers).
#[test]
fn cases_cover_what_matters() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = case();
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    let n = 500;
    for _ in 0..n {
        let c = strategy.new_tree(&mut runner).expect("case").current();
        let mut count =
            |what: &'static str, yes: bool| *seen.entry(what).or_default() += u32::from(yes);
        let kind = match c.query.window {
            Window::Tumble { .. } => "tumble",
            Window::Hop { size, slide } if size < slide => "hop size < slide",
            Window::Hop { size, slide } if size % slide == 0 => "hop size multiple of slide",
            Window::Hop { .. } => "hop other",
            Window::Cumulate { .. } => "cumulate",
            Window::Session { .. } => "session",
        };
        count(kind, true);
        let batches = c.chunks().len();
        let (cut, cut2) = c.cuts(batches);
        count("cut at the start", cut == 0);
        count("cut at the end", cut2 == batches && batches > 0);
        count("cut inside", cut > 0 && cut < batches);
        count(
            "second cut inside, after the first",
            cut2 > cut && cut2 < batches,
        );
        count("both cuts at the same point", cut2 == cut);
        count("more subtasks after", c.after > c.before);
        count("fewer subtasks after", c.after < c.before);
        count("two key columns", c.query.two_keys);
        count("several sources before", c.sources.0 > 1);
        count("several sources after", c.sources.1 > 1);
        let o = c.oracle();
        count("late events", o.late > 0);
        count("partially late events", o.partially_late > 0);
        for a in &c.query.aggs {
            count(
                match (a.func, a.arg) {
                    (AggFn::CountStar, _) => "COUNT(*)",
                    (AggFn::Count, _) => "COUNT",
                    (AggFn::CountDistinct, _) => "COUNT DISTINCT",
                    (AggFn::Sum, ArgType::Int) => "SUM int",
                    (AggFn::Sum, ArgType::Float) => "SUM float",
                    (AggFn::Min, _) => "MIN",
                    (AggFn::Max, _) => "MAX",
                    (AggFn::Avg, _) => "AVG",
                },
                true,
            );
        }
    }
    eprintln!("of {n} cases: {seen:#?}");
    for (what, min) in [
        ("tumble", 40),
        ("hop size < slide", 20),
        ("hop size multiple of slide", 20),
        ("hop other", 20),
        ("cumulate", 40),
        ("session", 60),
        ("cut at the start", 30),
        ("cut at the end", 30),
        ("cut inside", 200),
        ("second cut inside, after the first", 150),
        ("both cuts at the same point", 50),
        ("more subtasks after", 100),
        ("fewer subtasks after", 100),
        ("late events", 80),
        ("partially late events", 30),
        ("COUNT DISTINCT", 50),
        ("SUM float", 30),
        ("SUM int", 30),
        ("several sources before", 80),
        ("several sources after", 80),
    ] {
        let got = seen.get(what).copied().unwrap_or(0);
        assert!(
            got >= min,
            "{what}: {got} of {n} cases, expected at least {min}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Focused deterministic tests: no window fires twice across a restore.
// ---------------------------------------------------------------------------------------

fn ev(k: &str, ts: i64, v: i64) -> Event {
    Event {
        keys: vec![KeyValue::Str(k.into())],
        ts,
        value: Some(v),
    }
}

const COUNT_SUM: [Agg; 2] = [
    Agg {
        func: AggFn::CountStar,
        arg: ArgType::Int,
    },
    Agg {
        func: AggFn::Sum,
        arg: ArgType::Int,
    },
];

fn row(start: i64, end: i64, k: &str, count: i64, sum: i64) -> ResultRow {
    ResultRow {
        window_start: start,
        window_end: end,
        keys: vec![KeyValue::Str(k.into())],
        aggs: vec![AggValue::Int(count), AggValue::Int(sum)],
    }
}

/// Runs the batches `before` at 1..=3 window subtasks and snapshots, resumes at every
/// parallelism 1..=4 with the batches `after`, and checks the rows on each side and the
/// late events after the restore.
fn cut_and_resume(
    window: Window,
    before: &[&[Event]],
    after: &[&[Event]],
    delay_ms: i64,
    expected_before: &[ResultRow],
    expected_after: &[ResultRow],
    late_after: u64,
) {
    let query = Query {
        two_keys: false,
        window,
        aggs: COUNT_SUM.to_vec(),
    };
    let to_batches = |chunks: &[&[Event]]| -> Vec<RecordBatch> {
        chunks.iter().map(|c| query.batch(c)).collect()
    };
    for p1 in 1..=3 {
        let first = run(
            &query,
            to_batches(before),
            delay_ms,
            (1, p1),
            None,
            Stop::Snapshot,
        );
        assert_eq!(
            first.rows, expected_before,
            "{window:?}: before the snapshot, {p1} subtasks"
        );
        let snap = first.snapshot.expect("snapshot");
        for p2 in 1..=4 {
            let second = run(
                &query,
                to_batches(after),
                delay_ms,
                (1, p2),
                Some(&snap),
                Stop::Flush,
            );
            assert_eq!(
                second.rows, expected_after,
                "{window:?}: after the restore, {p1} -> {p2} subtasks"
            );
            assert_eq!(
                second.late, late_after,
                "{window:?}: late, {p1} -> {p2} subtasks"
            );
            // An idle restored operator emits nothing either.
            let idle = run(
                &query,
                Vec::new(),
                delay_ms,
                (1, p2),
                Some(&snap),
                Stop::Snapshot,
            );
            assert!(idle.rows.is_empty(), "{window:?}: {:?}", idle.rows);
        }
    }
}

#[test]
fn tumble_windows_fired_before_the_snapshot_stay_fired() {
    cut_and_resume(
        Window::Tumble { size: 1000 },
        &[
            &[ev("a", 0, 1), ev("a", 500, 2), ev("b", 1500, 4)],
            &[ev("a", 2500, 8)],
        ],
        &[
            // Late: [0, 1000) and [1000, 2000) fired before the snapshot.
            &[ev("a", 100, 16), ev("b", 1999, 32)],
            &[ev("a", 2000, 64), ev("c", 2999, 128)],
        ],
        0,
        &[row(0, 1000, "a", 2, 3), row(1000, 2000, "b", 1, 4)],
        &[row(2000, 3000, "a", 2, 72), row(2000, 3000, "c", 1, 128)],
        2,
    );
}

/// HOP slide 2 s, size 10 s: at the snapshot (watermark 13000) [2000, 12000) has fired
/// and [4000, 14000) .. [10000, 20000) are open with a@10000 and a@13000 in them; a@11000
/// after the restore counts in the open ones only.
#[test]
fn hop_windows_fired_before_the_snapshot_stay_fired() {
    cut_and_resume(
        Window::Hop {
            size: 10_000,
            slide: 2_000,
        },
        &[&[ev("a", 10_000, 1)], &[ev("a", 13_000, 2)]],
        &[&[ev("a", 11_000, 4)]],
        0,
        &[row(2_000, 12_000, "a", 1, 1)],
        &[
            row(4_000, 14_000, "a", 3, 7),
            row(6_000, 16_000, "a", 3, 7),
            row(8_000, 18_000, "a", 3, 7),
            row(10_000, 20_000, "a", 3, 7),
            row(12_000, 22_000, "a", 1, 2),
        ],
        0,
    );
}

/// HOP slide 1 s, size 2 s: at the snapshot (watermark 1500) [-1000, 1000) has fired
/// while empty. a@500 after the restore must not reopen it: the clock carries how far
/// windows have fired, not only the watermark.
#[test]
fn hop_empty_window_fired_before_the_snapshot_stays_fired() {
    cut_and_resume(
        Window::Hop {
            size: 2000,
            slide: 1000,
        },
        &[&[ev("a", 1500, 1)]],
        &[&[ev("a", 500, 2)]],
        0,
        &[],
        &[row(0, 2000, "a", 2, 3), row(1000, 3000, "a", 1, 1)],
        0,
    );
}

#[test]
fn cumulate_windows_fired_before_the_snapshot_stay_fired() {
    cut_and_resume(
        Window::Cumulate {
            step: 1000,
            max_size: 3000,
        },
        &[&[ev("a", 100, 1), ev("b", 1200, 2)], &[ev("a", 2100, 4)]],
        &[&[ev("a", 1500, 8), ev("b", 2500, 16)], &[ev("a", 3100, 32)]],
        0,
        // Watermark 2100: [0, 1000) and [0, 2000) fired.
        &[
            row(0, 1000, "a", 1, 1),
            row(0, 2000, "a", 1, 1),
            row(0, 2000, "b", 1, 2),
        ],
        // a@1500 is behind [0, 2000) but in [0, 3000).
        &[
            row(0, 3000, "a", 3, 13),
            row(0, 3000, "b", 2, 18),
            row(3000, 4000, "a", 1, 32),
            row(3000, 5000, "a", 1, 32),
            row(3000, 6000, "a", 1, 32),
        ],
        0,
    );
}

#[test]
fn sessions_fired_before_the_snapshot_stay_fired() {
    cut_and_resume(
        Window::Session { gap: 1000 },
        &[&[ev("a", 0, 1)], &[ev("a", 5000, 2), ev("b", 4000, 64)]],
        &[&[
            ev("a", 200, 4),
            ev("a", 5000, 8),
            ev("a", 5500, 16),
            ev("b", 4999, 32),
        ]],
        0,
        // Watermark 5000: [0, 1000) and b's [4000, 5000) have fired.
        &[row(0, 1000, "a", 1, 1), row(4000, 5000, "b", 1, 64)],
        &[row(5000, 6500, "a", 2, 18)],
        3,
    );
}
