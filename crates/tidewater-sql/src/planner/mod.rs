//! From a parsed job file to a runnable [`Plan`].
//!
//! Two shapes of query are planned:
//! - stateless: `SELECT exprs FROM t [WHERE ..]` — source, filter and projection chained
//!   into the sink on every source subtask;
//! - windowed: `SELECT .. FROM TABLE(<TVF>(TABLE t, DESCRIPTOR(ts), ..)) [WHERE ..]
//!   GROUP BY window_start, window_end, keys` — the source subtasks decode, assign
//!   watermarks, filter and project to `[keys, ts, aggregate args]`; rows are hashed by
//!   key to the window subtasks, which aggregate by slices and project into the sink.

mod source;
mod window;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Field, Schema, SchemaRef};
use sqlparser::ast::{GroupByExpr, SelectItem, SetExpr, TableFactor};
use tidewater_connectors::TableOptions;
use tidewater_connectors::registry::{SinkContext, connector, create_sink};
use tidewater_core::dead_letter::DeadLetterSink;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::{Dataflow, Operator, Partitioning, SourceStage, Stage};

use crate::exprs::Provider;
use crate::operators::ProjectOperator;
use crate::parse::{ColumnKind, JobFile, Loc, TableDef};

/// Settings the planner accepts in `SET` statements.
pub const SETTINGS: &[&str] = &[
    "parallelism.default",
    "pipeline.name",
    "execution.checkpointing.interval",
    "state.checkpoints.dir",
    "state.checkpoints.num-retained",
];

/// Checkpoint settings of a job (Flink's setting names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// 'execution.checkpointing.interval' (or `--checkpoint-interval`); `None`: off.
    pub interval: Option<Duration>,
    /// 'state.checkpoints.dir'; `None`: the caller's default.
    pub dir: Option<PathBuf>,
    /// 'state.checkpoints.num-retained': complete checkpoints kept (default 3).
    pub retained: usize,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            interval: None,
            dir: None,
            retained: 3,
        }
    }
}

pub use tidewater_core::time::parse_duration;

/// Planner inputs that do not come from the job file.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Subtasks per operator; `None` means `SET 'parallelism.default'`, else the cores.
    pub parallelism: Option<usize>,
    /// The job's name unless `SET 'pipeline.name'` says otherwise.
    pub name: String,
    /// Counters shared by the job's operators.
    pub metrics: Arc<JobMetrics>,
    /// Capacity of each channel in batches (default 8).
    pub channel_capacity: usize,
    /// Checkpoint interval from the command line; overrides the job file's setting
    /// (`Some(0)` turns checkpointing off).
    pub checkpoint_interval: Option<Duration>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            parallelism: None,
            name: "job".into(),
            metrics: Arc::default(),
            channel_capacity: 8,
            checkpoint_interval: None,
        }
    }
}

/// The source table of a plan, as a runtime of its own (Kafka's partition tasks)
/// needs it.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// Its `WITH (...)` options.
    pub options: TableOptions,
    /// Its physical columns (what a record decodes to).
    pub physical: SchemaRef,
    /// Where its bad records go.
    pub dead_letters: Arc<dyn DeadLetterSink>,
}

impl SourceTable {
    /// True for a `kafka` table.
    pub fn is_kafka(&self) -> bool {
        is_kafka(&self.options)
    }
}

fn is_kafka(o: &TableOptions) -> bool {
    o.get("connector")
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("kafka"))
}

/// A planned job.
#[derive(Debug)]
pub struct Plan {
    /// The job's name.
    pub name: String,
    /// Subtasks per operator.
    pub parallelism: usize,
    /// What each part of the query became, for `explain`.
    pub notes: Vec<String>,
    /// The graph to execute.
    pub dataflow: Dataflow,
    /// The counters its operators update.
    pub metrics: Arc<JobMetrics>,
    /// Checkpointing as the job file and options say.
    pub checkpoint: CheckpointSettings,
    /// The source table.
    pub source_table: SourceTable,
    /// The sink table's options and columns. With a Kafka source and a Kafka sink the
    /// chains end before the sink: the partition tasks write to it in their
    /// transactions.
    pub sink_table: (TableOptions, SchemaRef),
    /// A Kafka source not keyed by the grouping key: its partition tasks run the source
    /// stage and write to an internal topic keyed by the grouping key, whose tasks run
    /// the window stage.
    pub kafka_repartition: bool,
}

impl Plan {
    /// The plan as text: what was chosen, then the dataflow.
    pub fn explain(&self) -> String {
        let mut s = format!("Job '{}', parallelism {}\n", self.name, self.parallelism);
        for n in &self.notes {
            s.push_str(n);
            s.push('\n');
        }
        if self.source_table.is_kafka() {
            s.push_str(&self.explain_kafka());
            return s;
        }
        s.push_str("\nDataflow:\n");
        s.push_str(&self.dataflow.explain());
        s.push('\n');
        s
    }

    /// A Kafka job runs as partition tasks, each the whole chain on one thread.
    fn explain_kafka(&self) -> String {
        let o = &self.source_table.options;
        let group = o.get("properties.group.id").unwrap_or("?");
        let topic = o
            .get("topic")
            .or_else(|| o.get("topic-pattern"))
            .unwrap_or("?");
        let flow = &self.dataflow;
        let stage_names = |chains: Option<&tidewater_runtime::Chain>| -> Vec<String> {
            chains.into_iter().flatten().map(|op| op.name()).collect()
        };
        let source_ops = stage_names(flow.source.chains.first());
        let window_ops: Vec<String> = flow
            .stages
            .iter()
            .flat_map(|st| stage_names(st.chains.first()))
            .collect();
        let sink = match self.sink_table.0.get("connector") {
            Some(c) if c.trim().eq_ignore_ascii_case("kafka") => format!(
                " -> kafka topic '{}' (in the task's transaction)",
                self.sink_table.0.get("topic").unwrap_or("?")
            ),
            _ => String::new(),
        };
        let head = format!(
            "\nPartition tasks (Kafka Streams model):\n  \
             group '{group}', {} member(s) in this instance\n",
            self.parallelism
        );
        if self.kafka_repartition {
            return format!(
                "{head}  \
                 input tasks, one per partition of '{topic}', each with its own watermark: \
                 decode -> {} -> repartition by the grouping key into \
                 '{group}-{topic}-repartition' (with the task's watermark)\n  \
                 window tasks, one per repartition partition, watermark = minimum over the \
                 input partitions: {}{sink}\n  \
                 checkpoint (every task): what it wrote, its state snapshot on a changelog \
                 topic and its input offsets in one Kafka transaction\n",
                source_ops.join(" -> "),
                window_ops.join(" -> ")
            );
        }
        let names: Vec<String> = source_ops.into_iter().chain(window_ops).collect();
        format!(
            "{head}  every partition of '{topic}' is a task with its own watermark and state\n  \
             each task: decode -> {}{sink}\n  \
             checkpoint: output, state snapshot on '{group}-<topic>-changelog' and input \
             offset in one Kafka transaction\n",
            names.join(" -> ")
        )
    }
}

/// Plans the job's `INSERT INTO`.
pub fn plan_job(job: &JobFile, opts: &PlanOptions) -> Result<Plan> {
    let mut name = opts.name.clone();
    let mut set_parallelism = None;
    let mut checkpoint = CheckpointSettings::default();
    for (k, v, loc) in &job.settings {
        match k.as_str() {
            "execution.checkpointing.interval" => {
                let d = parse_duration(v).map_err(|e| loc.error(format!("'{k}': {e}")))?;
                checkpoint.interval = Some(d);
            }
            "state.checkpoints.dir" => checkpoint.dir = Some(PathBuf::from(v)),
            "state.checkpoints.num-retained" => {
                checkpoint.retained =
                    v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        loc.error(format!("'{k}' must be a positive integer, got '{v}'"))
                    })?;
            }
            "parallelism.default" => {
                let p: usize = v.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                    loc.error(format!(
                        "'parallelism.default' must be a positive integer, got '{v}'"
                    ))
                })?;
                set_parallelism = Some(p);
            }
            "pipeline.name" => name = v.clone(),
            other => {
                let hint = tidewater_connectors::options::suggest(other, SETTINGS.iter().copied())
                    .map(|s| format!("did you mean '{s}'? "))
                    .unwrap_or_default();
                return Err(loc.error(format!(
                    "unknown setting '{other}'; {hint}supported: {}",
                    SETTINGS.join(", ")
                )));
            }
        }
    }
    if let Some(i) = opts.checkpoint_interval {
        checkpoint.interval = Some(i);
    }
    checkpoint.interval = checkpoint.interval.filter(|i| !i.is_zero());
    let checkpointing = checkpoint.interval.is_some();
    let parallelism = opts
        .parallelism
        .or(set_parallelism)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let insert = job.insert.as_ref().ok_or_else(|| {
        Loc { line: 1, column: 1 }
            .error("the job has no INSERT INTO ... SELECT; there is nothing to run")
    })?;
    let declared = || {
        job.tables
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sink_def = job.table(&insert.sink).ok_or_else(|| {
        insert.loc.error(format!(
            "unknown table '{}'; declared tables: {}",
            insert.sink,
            declared()
        ))
    })?;
    let query = &insert.query;
    let loc = insert.loc;
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
    {
        return Err(
            loc.error("WITH, ORDER BY, LIMIT and FETCH are not supported in streaming queries")
        );
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(
            loc.error("only a single SELECT is supported (no UNION, VALUES or nested queries)")
        );
    };
    if select.distinct.is_some() || select.having.is_some() || select.qualify.is_some() {
        return Err(loc.error("SELECT DISTINCT, HAVING and QUALIFY are not supported yet"));
    }
    let [from] = select.from.as_slice() else {
        return Err(
            loc.error("the query must read exactly one table (joins are not supported yet)")
        );
    };
    if !from.joins.is_empty() {
        return Err(loc.error("joins are not supported yet"));
    }
    let items: Vec<(sqlparser::ast::Expr, Option<String>)> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => Ok((e.clone(), None)),
            SelectItem::ExprWithAlias { expr, alias } => {
                Ok((expr.clone(), Some(alias.value.clone())))
            }
            _ => Err(loc.error("SELECT * is not supported; list the columns")),
        })
        .collect::<Result<_>>()?;
    let group_by = match &select.group_by {
        GroupByExpr::Expressions(e, m) if m.is_empty() => e.clone(),
        _ => return Err(loc.error("GROUP BY ALL and grouping modifiers are not supported")),
    };

    let provider = Provider::default();
    let sink_schema = sink_schema(sink_def)?;
    if items.len() != sink_schema.fields().len() {
        return Err(loc.error(format!(
            "INSERT INTO {} has {} columns ({}) but the query produces {}",
            sink_def.name,
            sink_schema.fields().len(),
            sink_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
            items.len()
        )));
    }
    let sink_options = TableOptions::new(&sink_def.name, sink_def.options.clone());
    let sink_connector = connector(&sink_options)?;
    if sink_connector.sink.is_none() {
        return Err(sink_options.error(
            "connector",
            format!("connector '{}' cannot be written to", sink_connector.name),
        ));
    }

    let ctx = PlanContext {
        job,
        provider: &provider,
        opts,
        parallelism,
        loc,
    };
    match &from.relation {
        TableFactor::Table {
            name: table,
            args: None,
            ..
        } => {
            if !group_by.is_empty() {
                return Err(loc.error(
                    "GROUP BY without a window is an updating aggregation, which append-only sinks cannot take; use a window TVF: FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE))",
                ));
            }
            let src = source::plan_source(&ctx, &table.to_string(), select.selection.as_ref())?;
            let n = src.readers.len();
            let exprs = items
                .iter()
                .zip(sink_schema.fields())
                .map(|((e, _), f)| provider.compile_into(e, &src.schema, f, loc).map(|c| c.0))
                .collect::<Result<Vec<_>>>()?;
            if window::contains_aggregate(items.iter().map(|(e, _)| e)) {
                return Err(loc.error("aggregates need a window: FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) ... GROUP BY window_start, window_end"));
            }
            let sinks = sink_ops(
                &sink_options,
                &sink_schema,
                &src.table,
                n,
                opts,
                checkpointing,
            )?;
            let mut notes = src.notes;
            notes.push(format!(
                "Sink    '{}' connector {} {:?}",
                sink_def.name, sink_connector.name, sink_options
            ));
            let chains = src
                .chains
                .into_iter()
                .zip(sinks)
                .map(|(mut c, s)| {
                    c.push(Box::new(ProjectOperator::new(
                        exprs.clone(),
                        sink_schema.clone(),
                        "select",
                    )) as Box<dyn Operator>);
                    c.extend(s);
                    c
                })
                .collect();
            let dataflow = Dataflow {
                source: SourceStage {
                    name: src.name,
                    readers: src.readers,
                    chains,
                },
                stages: Vec::new(),
                channel_capacity: opts.channel_capacity,
            };
            Ok(Plan {
                name,
                parallelism: n,
                notes,
                dataflow,
                metrics: opts.metrics.clone(),
                checkpoint: checkpoint.clone(),
                source_table: src.table,
                sink_table: (sink_options, sink_schema),
                kafka_repartition: false,
            })
        }
        TableFactor::TableFunction { expr, .. } => {
            let w = window::plan_window(
                &ctx,
                expr,
                select.selection.as_ref(),
                &group_by,
                &items,
                &sink_schema,
            )?;
            let kafka_repartition =
                w.table.is_kafka() && !keyed_by_grouping_key(&w.table, &w.key_names)?;
            let sinks = sink_ops(
                &sink_options,
                &sink_schema,
                &w.table,
                parallelism,
                opts,
                checkpointing,
            )?;
            let mut notes = w.notes;
            notes.push(format!(
                "Sink    '{}' connector {} {:?}",
                sink_def.name, sink_connector.name, sink_options
            ));
            let chains = w
                .window_chains
                .into_iter()
                .zip(sinks)
                .map(|(mut c, s)| {
                    c.extend(s);
                    c
                })
                .collect();
            let dataflow = Dataflow {
                source: w.source,
                stages: vec![Stage {
                    name: "window".into(),
                    input: Partitioning::Hash {
                        columns: (0..w.key_count).collect(),
                        names: w.key_names,
                    },
                    chains,
                }],
                channel_capacity: opts.channel_capacity,
            };
            Ok(Plan {
                name,
                parallelism,
                notes,
                dataflow,
                metrics: opts.metrics.clone(),
                checkpoint: checkpoint.clone(),
                source_table: w.table,
                sink_table: (sink_options, sink_schema),
                kafka_repartition,
            })
        }
        other => Err(loc.error(format!(
            "FROM {other} is not supported; read a table or a window TVF"
        ))),
    }
}

/// What planning needs everywhere.
pub(crate) struct PlanContext<'a> {
    pub job: &'a JobFile,
    pub provider: &'a Provider,
    pub opts: &'a PlanOptions,
    pub parallelism: usize,
    pub loc: Loc,
}

fn sink_schema(t: &TableDef) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    for c in &t.columns {
        match &c.kind {
            ColumnKind::Physical(ty) => fields.push(Field::new(&c.name, ty.clone(), true)),
            ColumnKind::Computed(_) => {
                return Err(c.loc.error(format!(
                    "sink table '{}' cannot have computed column '{}'",
                    t.name, c.name
                )));
            }
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Whether a Kafka source's messages are keyed by the grouping key ('key.fields'), so
/// that each partition task can aggregate its partition alone. When they are not, the
/// job repartitions through an internal topic, which needs one named input topic (the
/// internal topics are named after it and sized by its partitions).
fn keyed_by_grouping_key(table: &SourceTable, group_keys: &[String]) -> Result<bool> {
    let o = &table.options;
    let normal = |s: &str| s.trim().trim_matches('`').to_ascii_lowercase();
    let mut have: Vec<String> = o
        .get("key.fields")
        .unwrap_or_default()
        .split(';')
        .map(normal)
        .filter(|s| !s.is_empty())
        .collect();
    let mut wanted: Vec<String> = group_keys.iter().map(|k| normal(k)).collect();
    wanted.sort();
    have.sort();
    if wanted == have {
        return Ok(true);
    }
    let single = o.get("topic").is_some_and(|t| !t.contains(';'));
    if !single {
        return Err(o.error(
            if o.get("topic").is_some() {
                "topic"
            } else {
                "topic-pattern"
            },
            format!(
                "the messages are not keyed by the grouping key, so the job repartitions \
                 them through an internal topic, which needs one named 'topic'; or declare \
                 'key.format' and 'key.fields' = '{}' if the producers key them so",
                group_keys.join(";")
            ),
        ));
    }
    Ok(false)
}

/// The sink operator of each subtask, or `None` each when the partition tasks of a
/// Kafka source write to a Kafka sink themselves.
fn sink_ops(
    o: &TableOptions,
    schema: &SchemaRef,
    source: &SourceTable,
    n: usize,
    opts: &PlanOptions,
    checkpointing: bool,
) -> Result<Vec<Option<Box<dyn Operator>>>> {
    if source.is_kafka() {
        if is_kafka(o) {
            tidewater_connectors::kafka::KafkaSinkOptions::parse(o, schema)?;
            return Ok((0..n).map(|_| None).collect());
        }
        let c = o.get("connector").unwrap_or_default();
        if !["print", "blackhole"].contains(&c.trim().to_ascii_lowercase().as_str()) {
            return Err(o.error(
                "connector",
                format!(
                    "a job reading kafka writes to 'kafka' (exactly-once), 'print' or \
                     'blackhole'; '{c}' takes part in local checkpoints, which partition \
                     tasks do not use"
                ),
            ));
        }
    }
    let ops = create_sink(&SinkContext {
        options: o,
        schema: schema.clone(),
        parallelism: n,
        metrics: opts.metrics.clone(),
        checkpointing,
    })?;
    if ops.len() != n {
        return Err(Error::runtime(format!(
            "sink '{}' made {} subtasks, expected {n}",
            o.table(),
            ops.len()
        )));
    }
    Ok(ops.into_iter().map(Some).collect())
}
