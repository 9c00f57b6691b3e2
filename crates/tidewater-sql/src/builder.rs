//! Building a windowed job in code instead of SQL — the same plan shape the SQL planner
//! makes: source → watermark → `[keys, ts, args]` → hash by key → window → sink.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use tidewater_connectors::TableOptions;
use tidewater_connectors::memory::{CollectSink, Collected, MemorySource};
use tidewater_connectors::registry::{
    SinkContext, SourceContext, create_sink, create_source, dead_letters_for,
};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::watermark::WatermarkGenerator;
use tidewater_runtime::{
    Chain, Dataflow, Operator, Partitioning, SourceReader, SourceStage, Stage,
};
use tidewater_window::{
    AggKind, AggSpec, SessionWindowOperator, SlicedWindowOperator, WindowInput, WindowSpec,
};

use crate::planner::{CheckpointSettings, Plan, SourceTable};
use tidewater_connectors::dead_letter::DiscardDeadLetters;

enum SourceDef {
    Batches(SchemaRef, Vec<RecordBatch>),
    Connector(SchemaRef, BTreeMap<String, String>),
}

enum SinkDef {
    Collect(Collected),
    Connector(BTreeMap<String, String>),
}

/// Builds a windowed aggregation job in code.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
/// use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
/// use arrow::record_batch::RecordBatch;
/// use tidewater_sql::builder::JobBuilder;
/// use tidewater_window::{AggKind, WindowSpec};
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("key", DataType::Utf8, true),
///     Field::new("value", DataType::Int64, true),
///     Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
/// ]));
/// let batch = RecordBatch::try_new(schema.clone(), vec![
///     Arc::new(StringArray::from(vec!["a", "b", "a"])),
///     Arc::new(Int64Array::from(vec![1, 2, 3])),
///     Arc::new(TimestampMillisecondArray::from(vec![0, 500, 1_500])),
/// ])?;
/// let out = Default::default();
/// let plan = JobBuilder::new()
///     .parallelism(2)
///     .source_batches(schema, vec![batch])
///     .event_time("ts", 0)
///     .key("key")
///     .window(WindowSpec::Tumble { size: 1_000 })
///     .aggregate(AggKind::Sum, Some("value"))
///     .collect_into(&out)
///     .build()?;
/// tidewater_runtime::exec::execute(plan.dataflow)?;
/// let rows: usize = out.lock().map(|b| b.iter().map(|b| b.num_rows()).sum()).unwrap_or(0);
/// assert_eq!(rows, 3); // a@[0,1s), b@[0,1s), a@[1s,2s)
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct JobBuilder {
    name: Option<String>,
    parallelism: Option<usize>,
    source: Option<SourceDef>,
    event_time: Option<(String, i64)>,
    keys: Vec<String>,
    window: Option<WindowSpec>,
    aggs: Vec<(AggKind, Option<String>)>,
    sink: Option<SinkDef>,
    metrics: Arc<JobMetrics>,
    checkpoint: CheckpointSettings,
}

impl std::fmt::Debug for JobBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobBuilder")
            .field("keys", &self.keys)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl JobBuilder {
    /// An empty builder. Defaults: parallelism = number of cores, name "job".
    pub fn new() -> Self {
        Self::default()
    }

    /// The job's name (default "job").
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Subtasks per operator (default: the number of cores).
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = Some(n.max(1));
        self
    }

    /// Takes a checkpoint every `interval` (default: no checkpoints), into `dir` when
    /// given (else the caller's default).
    pub fn checkpoint_every(
        mut self,
        interval: std::time::Duration,
        dir: Option<std::path::PathBuf>,
    ) -> Self {
        self.checkpoint.interval = Some(interval).filter(|i| !i.is_zero());
        self.checkpoint.dir = dir;
        self
    }

    /// Reads these in-memory batches (all of `schema`).
    pub fn source_batches(mut self, schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        self.source = Some(SourceDef::Batches(schema, batches));
        self
    }

    /// Reads through a connector, with the options a SQL `WITH (...)` would give.
    pub fn source_connector(
        mut self,
        schema: SchemaRef,
        options: BTreeMap<String, String>,
    ) -> Self {
        self.source = Some(SourceDef::Connector(schema, options));
        self
    }

    /// The event-time column (TIMESTAMP(3)) and how far the watermark trails it, in ms.
    pub fn event_time(mut self, column: impl Into<String>, delay_ms: i64) -> Self {
        self.event_time = Some((column.into(), delay_ms));
        self
    }

    /// Adds a grouping key column.
    pub fn key(mut self, column: impl Into<String>) -> Self {
        self.keys.push(column.into());
        self
    }

    /// The window.
    pub fn window(mut self, spec: WindowSpec) -> Self {
        self.window = Some(spec);
        self
    }

    /// Adds an aggregate over `column` (`None` for `COUNT(*)`).
    pub fn aggregate(mut self, kind: AggKind, column: Option<&str>) -> Self {
        self.aggs.push((kind, column.map(str::to_string)));
        self
    }

    /// Collects results into shared memory.
    pub fn collect_into(mut self, out: &Collected) -> Self {
        self.sink = Some(SinkDef::Collect(out.clone()));
        self
    }

    /// Writes results through a connector, with SQL `WITH (...)` options.
    pub fn sink_connector(mut self, options: BTreeMap<String, String>) -> Self {
        self.sink = Some(SinkDef::Connector(options));
        self
    }

    /// The job's counters (share them before `build` to watch the job).
    pub fn metrics(&self) -> Arc<JobMetrics> {
        self.metrics.clone()
    }

    /// Checks the description and builds the plan.
    pub fn build(self) -> Result<Plan> {
        let missing = |what: &str| Error::config("JobBuilder", format!("{what} is required"));
        let p = self.parallelism.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let spec = self.window.ok_or_else(|| missing("window"))?;
        let (ts_name, delay) = self
            .event_time
            .clone()
            .ok_or_else(|| missing("event_time"))?;
        let (schema, readers, source_table) = match self.source {
            Some(SourceDef::Batches(schema, batches)) => {
                let table = SourceTable {
                    options: TableOptions::new(
                        "source",
                        [("connector".to_string(), "memory".to_string())].into(),
                    ),
                    physical: schema.clone(),
                    dead_letters: Arc::new(DiscardDeadLetters),
                };
                let readers = MemorySource::split(batches, p, self.metrics.clone());
                (schema, readers, table)
            }
            Some(SourceDef::Connector(schema, options)) => {
                let o = TableOptions::new("source", options);
                let dead_letters = dead_letters_for(&o)?;
                let readers: Vec<Box<dyn SourceReader>> = create_source(&SourceContext {
                    options: &o,
                    schema: schema.clone(),
                    parallelism: p,
                    metrics: self.metrics.clone(),
                    dead_letters: dead_letters.clone(),
                })?;
                let table = SourceTable {
                    options: o,
                    physical: schema.clone(),
                    dead_letters,
                };
                (schema, readers, table)
            }
            None => return Err(missing("a source")),
        };
        let col = |name: &str| -> Result<(usize, DataType)> {
            let i = schema.index_of(name).map_err(|_| {
                Error::config("JobBuilder", format!("the source has no column '{name}'"))
            })?;
            Ok((i, schema.field(i).data_type().clone()))
        };
        let mut projection = Vec::new();
        let mut key_fields = Vec::new();
        for k in &self.keys {
            let (i, t) = col(k)?;
            projection.push(i);
            key_fields.push(Field::new(k, t, true));
        }
        let (ts_idx, _) = col(&ts_name)?;
        projection.push(ts_idx);
        let mut aggs = Vec::new();
        let mut agg_names = Vec::new();
        for (kind, c) in &self.aggs {
            let spec = match c {
                None => AggSpec {
                    kind: *kind,
                    arg: None,
                    arg_type: DataType::Int64,
                },
                Some(c) => {
                    let (i, t) = col(c)?;
                    projection.push(i);
                    AggSpec {
                        kind: *kind,
                        arg: Some(projection.len() - 1),
                        arg_type: t,
                    }
                }
            };
            spec.validate()?;
            agg_names.push(match c {
                None => "count".to_string(),
                Some(c) => format!("{kind:?}_{c}").to_ascii_lowercase(),
            });
            aggs.push(spec);
        }
        let input = WindowInput {
            key_columns: self.keys.len(),
            key_fields,
            time_column: self.keys.len(),
            aggs,
            metrics: self.metrics.clone(),
        };
        let out_schema = {
            let raw = input.output_schema();
            let mut fields: Vec<Field> = raw.fields().iter().map(|f| f.as_ref().clone()).collect();
            let n = fields.len();
            for (f, name) in fields[n - agg_names.len()..].iter_mut().zip(&agg_names) {
                *f = f.clone().with_name(name);
            }
            Arc::new(Schema::new(fields))
        };
        let mut sink_options = TableOptions::new(
            "sink",
            [("connector".to_string(), "collect".to_string())].into(),
        );
        let sinks: Vec<Box<dyn Operator>> = match self.sink.ok_or_else(|| missing("a sink"))? {
            SinkDef::Collect(c) => CollectSink::create(&c, p, self.metrics.clone()),
            SinkDef::Connector(options) => {
                let o = TableOptions::new("sink", options);
                sink_options = o.clone();
                create_sink(&SinkContext {
                    options: &o,
                    schema: out_schema.clone(),
                    parallelism: p,
                    metrics: self.metrics.clone(),
                    checkpointing: self.checkpoint.interval.is_some(),
                })?
            }
        };
        let chains: Vec<Chain> = readers
            .iter()
            .map(|_| {
                vec![
                    Box::new(WatermarkGenerator::new(ts_idx, delay)) as Box<dyn Operator>,
                    Box::new(crate::operators::SelectColumns::new(projection.clone())),
                ]
            })
            .collect();
        let window_chains = sinks
            .into_iter()
            .map(|sink| -> Result<Chain> {
                let op: Box<dyn Operator> = match spec {
                    WindowSpec::Session { gap } => {
                        Box::new(SessionWindowOperator::new(gap, input.clone())?)
                    }
                    s => Box::new(SlicedWindowOperator::new(s, input.clone())?),
                };
                Ok(vec![
                    op,
                    Box::new(crate::operators::Rename::new(out_schema.clone())),
                    sink,
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        let dataflow = Dataflow {
            source: SourceStage {
                name: "source".into(),
                readers,
                chains,
            },
            stages: vec![Stage {
                name: "window".into(),
                input: Partitioning::Hash {
                    columns: (0..self.keys.len()).collect(),
                    names: self.keys.clone(),
                },
                chains: window_chains,
            }],
            channel_capacity: 8,
        };
        Ok(Plan {
            name: self.name.unwrap_or_else(|| "job".into()),
            parallelism: p,
            notes: vec![format!("Window  {}", spec.describe())],
            dataflow,
            metrics: self.metrics,
            checkpoint: self.checkpoint,
            source_table,
            sink_table: (sink_options, out_schema),
            kafka_repartition: false,
        })
    }
}
