//! The query of the differential and checkpoint tests (key layout, window, aggregates):
//! its Arrow input and output, the window operator that runs it, and the plumbing of a
//! test dataflow around it (a source that replays batches, the hash exchange, the rows
//! a run emitted).

use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use arrow::record_batch::RecordBatch;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Result as TwResult, Watermark};
use tidewater_runtime::exec::execute;
use tidewater_runtime::{
    Barrier, Chain, Dataflow, Operator, Output, Partitioning, RestoredState, SourceReader,
    SourceStage, Stage, StateWriter,
};
use tidewater_window::{
    AggKind, AggSpec, SessionWindowOperator, SlicedWindowOperator, WindowInput, WindowSpec,
};

use super::oracle::{self, Agg, AggFn, AggValue, ArgType, Event, KeyValue, ResultRow, Window};

// ---------------------------------------------------------------------------------------
// The query and its Arrow layout.
// ---------------------------------------------------------------------------------------

/// The query: key layout, window, aggregates.
#[derive(Debug, Clone)]
pub struct Query {
    pub two_keys: bool,
    pub window: Window,
    pub aggs: Vec<Agg>,
}

impl Query {
    pub fn key_columns(&self) -> usize {
        if self.two_keys { 2 } else { 1 }
    }

    /// The names of the key columns: `k0` (and `k1`).
    pub fn key_names(&self) -> Vec<String> {
        (0..self.key_columns()).map(|c| format!("k{c}")).collect()
    }

    /// `[k0: STRING, (k1: BIGINT), ts, v: BIGINT, vf: DOUBLE]`.
    pub fn input_schema(&self) -> SchemaRef {
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

    pub fn window_input(&self, metrics: &Arc<JobMetrics>) -> WindowInput {
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

    /// A window operator for the query; a sliced one records its state size into
    /// `leftovers` once input has ended.
    pub fn window_operator(&self, metrics: &Arc<JobMetrics>, leftovers: &Leftovers) -> WindowOp {
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

    pub fn batch(&self, events: &[Event]) -> RecordBatch {
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

    /// The oracle's verdict on `events` cut into batches of `batch_sizes`, read by one
    /// source subtask whose watermark is `delay_ms` behind.
    pub fn evaluate_with_watermarks(
        &self,
        events: &[Event],
        batch_sizes: &[usize],
        delay_ms: i64,
    ) -> oracle::LateOutcome {
        oracle::evaluate_with_watermarks(
            &chunks(events, batch_sizes),
            &self.window,
            &self.aggs,
            delay_ms,
        )
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

fn agg_value(col: &ArrayRef, i: usize) -> AggValue {
    if col.is_null(i) {
        return AggValue::Null;
    }
    match col.data_type() {
        DataType::Int64 => AggValue::Int(col.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => AggValue::Float(col.as_primitive::<Float64Type>().value(i)),
        other => panic!("unexpected aggregate type {other}"),
    }
}

/// The rows of an output batch of the window operator.
pub fn rows_of(batch: &RecordBatch, query: &Query) -> Vec<ResultRow> {
    let k = query.key_columns();
    let starts = batch.column(0).as_primitive::<TimestampMillisecondType>();
    let ends = batch.column(1).as_primitive::<TimestampMillisecondType>();
    (0..batch.num_rows())
        .map(|i| ResultRow {
            window_start: starts.value(i),
            window_end: ends.value(i),
            keys: (0..k).map(|c| key_value(batch.column(2 + c), i)).collect(),
            aggs: (0..query.aggs.len())
                .map(|a| agg_value(batch.column(2 + k + a), i))
                .collect(),
        })
        .collect()
}

/// The rows of every output batch, sorted; checks each batch's schema.
pub fn collected_rows(
    batches: &[RecordBatch],
    query: &Query,
    metrics: &Arc<JobMetrics>,
) -> Vec<ResultRow> {
    let expected_schema = query.window_input(metrics).output_schema();
    let mut rows = Vec::new();
    for b in batches {
        assert_eq!(b.schema(), expected_schema, "output schema");
        rows.extend(rows_of(b, query));
    }
    rows.sort();
    rows
}

/// Splits `events` into chunks of the given sizes (repeated as needed).
pub fn chunks<'a>(events: &'a [Event], sizes: &[usize]) -> Vec<&'a [Event]> {
    let mut out = Vec::new();
    let mut rest = events;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    out
}

/// Cuts `events` into batches of the given sizes (repeated as needed).
pub fn cut(query: &Query, events: &[Event], sizes: &[usize]) -> Vec<RecordBatch> {
    chunks(events, sizes)
        .into_iter()
        .map(|c| query.batch(c))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Operators and stages of a test dataflow.
// ---------------------------------------------------------------------------------------

/// `(live_keys, live_slices)` of each sliced window subtask after the end of input.
pub type Leftovers = Arc<Mutex<Vec<(usize, usize)>>>;

/// A window operator of either kind; records the state a sliced one holds after the end.
#[derive(Debug)]
pub enum WindowOp {
    Sliced {
        op: SlicedWindowOperator,
        leftovers: Leftovers,
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

/// Yields a pre-assigned list of batches, then ends.
#[derive(Debug)]
pub struct VecReader(std::vec::IntoIter<RecordBatch>);

impl SourceReader for VecReader {
    fn next_batch(&mut self) -> TwResult<Option<RecordBatch>> {
        Ok(self.0.next())
    }
}

/// Deals `batches` out round-robin to `readers` source subtasks.
pub fn deal(batches: Vec<RecordBatch>, readers: usize) -> Vec<Vec<RecordBatch>> {
    let mut shares: Vec<Vec<RecordBatch>> = vec![Vec::new(); readers];
    for (i, b) in batches.into_iter().enumerate() {
        shares[i % readers].push(b);
    }
    shares
}

/// One source reader per share, replaying it.
pub fn vec_readers(shares: Vec<Vec<RecordBatch>>) -> Vec<Box<dyn SourceReader>> {
    shares
        .into_iter()
        .map(|s| Box::new(VecReader(s.into_iter())) as Box<dyn SourceReader>)
        .collect()
}

/// Runs `source` into the window stage, a hash exchange on the query's key columns into
/// `chains`, to completion.
pub fn execute_window_flow(query: &Query, source: SourceStage, chains: Vec<Chain>) {
    let flow = Dataflow {
        source,
        stages: vec![Stage {
            name: "window".into(),
            input: Partitioning::Hash {
                columns: (0..query.key_columns()).collect(),
                names: query.key_names(),
            },
            chains,
        }],
        channel_capacity: 4,
    };
    execute(flow).expect("the dataflow runs to completion");
}
