//! # Tidewater — event-time windowed aggregation over unbounded streams
//!
//! The library behind the `tidewater` binary. Load a Flink SQL job file, or build the
//! same plan in code, and run it in-process.
//!
//! Layout (one crate per layer, see `ARCHITECTURE.md`):
//! - [`core`] (`tidewater-core`): time, messages, key groups, metrics, errors.
//! - [`runtime`] (`tidewater-runtime`): the `Operator` trait, channels, the executor.
//! - [`window`] (`tidewater-window`): window assigners, slicing, aggregate state.
//! - [`connectors`] (`tidewater-connectors`): filesystem, stdin, datagen, print, blackhole,
//!   kafka (with the partition-task runtime that scales Kafka jobs out).
//! - [`sql`] (`tidewater-sql`): job files → plans; [`JobBuilder`] for plans in code.
//! - this crate: [`Job`], the front door, and the CLI (`src/main.rs`).
//!
//! ```no_run
//! use tidewater::{Job, JobOptions};
//!
//! let job = Job::from_file("examples/sliding_sum.sql", &JobOptions::default())?;
//! println!("{}", job.explain());
//! let report = job.run()?;
//! println!("{} events in, {} results out", report.metrics.records_in, report.metrics.records_out);
//! # Ok::<(), tidewater::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use tidewater_connectors as connectors;
pub use tidewater_core as core;
pub use tidewater_core::metrics::{JobMetrics, MetricsSnapshot};
pub use tidewater_core::{Error, Result};
pub use tidewater_runtime as runtime;
pub use tidewater_sql as sql;
pub use tidewater_sql::builder::JobBuilder;
pub use tidewater_sql::planner::Plan;
pub use tidewater_state as state;
pub use tidewater_window as window;

/// The status page and Prometheus metrics of a running job (`tidewater run --http`).
pub mod http;

/// How to run a job, besides what its SQL says.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// Subtasks per operator; overrides `SET 'parallelism.default'`. Default: the cores.
    pub parallelism: Option<usize>,
    /// The job's name; default: the job file's stem, or "job".
    pub name: Option<String>,
    /// Checkpoint interval; overrides `SET 'execution.checkpointing.interval'`
    /// (zero turns checkpointing off). Default: the job file's setting, else off.
    pub checkpoint_interval: Option<Duration>,
    /// Checkpoint directory; overrides `SET 'state.checkpoints.dir'`.
    /// Default: `./tidewater-state/<job name>`.
    pub checkpoint_dir: Option<PathBuf>,
    /// Ignore and delete existing checkpoints instead of resuming from them.
    pub from_scratch: bool,
}

/// A planned job, ready to run.
#[derive(Debug)]
pub struct Job {
    plan: Plan,
    /// The job file and planner options, for jobs that plan a chain per task (Kafka).
    sql: Option<(tidewater_sql::JobFile, tidewater_sql::PlanOptions)>,
    checkpoint_dir: Option<PathBuf>,
    from_scratch: bool,
    stop: Arc<AtomicBool>,
}

/// Stops a running job gracefully (see [`Job::stop_handle`]).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the job to stop: sources stop reading; with checkpoints a last checkpoint is
    /// taken and committed (a rerun resumes from it), without them the input ends where
    /// it is (open windows fire, sinks commit). `Job::run` then returns normally.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What a finished job did.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// Counters at the end.
    pub metrics: MetricsSnapshot,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Checkpoints: what was restored, how many were taken.
    pub exec: tidewater_runtime::ExecReport,
    /// Emit latency (p50, p99 as bucket bounds in ms; number of firings), if any window
    /// fired.
    pub emit_latency_ms: Option<(u64, u64, u64)>,
    /// What the partition tasks of a Kafka job did.
    pub kafka: Option<tidewater_connectors::kafka::KafkaReport>,
}

impl JobReport {
    /// Input events per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.metrics.records_in as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Job {
    /// Plans a job from the text of a job file.
    pub fn from_sql(sql: &str, options: &JobOptions) -> Result<Self> {
        let file = tidewater_sql::parse_job(sql)?;
        let opts = tidewater_sql::PlanOptions {
            parallelism: options.parallelism,
            name: options.name.clone().unwrap_or_else(|| "job".into()),
            checkpoint_interval: options.checkpoint_interval,
            ..Default::default()
        };
        Ok(Self {
            plan: tidewater_sql::plan_job(&file, &opts)?,
            sql: Some((file, opts)),
            checkpoint_dir: options.checkpoint_dir.clone(),
            from_scratch: options.from_scratch,
            stop: Arc::default(),
        })
    }

    /// Plans a job from a job file.
    pub fn from_file(path: impl AsRef<Path>, options: &JobOptions) -> Result<Self> {
        let path = path.as_ref();
        let sql = std::fs::read_to_string(path)
            .map_err(|e| Error::io("cannot read job file", path, e))?;
        let mut options = options.clone();
        if options.name.is_none() {
            options.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Self::from_sql(&sql, &options)
    }

    /// Wraps a plan built in code ([`JobBuilder`]).
    pub fn from_plan(plan: Plan) -> Self {
        Self {
            plan,
            sql: None,
            checkpoint_dir: None,
            from_scratch: false,
            stop: Arc::default(),
        }
    }

    /// A handle that stops this job gracefully from another thread (a signal handler).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Where this job's checkpoints go when checkpointing is on.
    /// A Kafka job has none: its state is in Kafka.
    pub fn checkpoint_dir(&self) -> Option<PathBuf> {
        self.plan.checkpoint.interval?;
        if self.is_kafka() {
            return None;
        }
        Some(
            self.checkpoint_dir
                .clone()
                .or_else(|| self.plan.checkpoint.dir.clone())
                .unwrap_or_else(|| Path::new("tidewater-state").join(&self.plan.name)),
        )
    }

    /// The plan as text (`tidewater explain`).
    pub fn explain(&self) -> String {
        self.plan.explain()
    }

    /// The job's counters, live while it runs.
    pub fn metrics(&self) -> Arc<JobMetrics> {
        self.plan.metrics.clone()
    }

    /// The dataflow as data: stages, parallelism, operators, edges (the status page).
    pub fn graph(&self) -> serde_json::Value {
        let graph = self.plan.dataflow.graph();
        if !self.is_kafka() {
            return graph;
        }
        let operators = |stages: &[serde_json::Value]| -> Vec<serde_json::Value> {
            stages
                .iter()
                .flat_map(|st| st["operators"].as_array().cloned().unwrap_or_default())
                .collect()
        };
        let stages = graph["stages"].as_array().cloned().unwrap_or_default();
        let table = self.plan.source_table.options.table();
        let tasks = |name: String, ops: Vec<serde_json::Value>, input: serde_json::Value| {
            serde_json::json!({
                "name": name,
                "parallelism": self.plan.parallelism,
                "operators": ops,
                "input": input,
            })
        };
        if self.plan.kafka_repartition && stages.len() > 1 {
            // Input tasks run the source stage; window tasks the rest, behind the
            // repartition topic (parallelism: this instance's group members).
            let (source, rest) = stages.split_at(1);
            let edge = rest
                .first()
                .and_then(|st| st["input"].as_str())
                .map(|e| format!("repartition topic, {e}"));
            return serde_json::json!({ "stages": [
                tasks(format!("input tasks of {table}"), operators(source), serde_json::Value::Null),
                tasks("window tasks".to_string(), operators(rest), edge.into()),
            ]});
        }
        // One stage: each partition task runs every operator on one member thread.
        serde_json::json!({ "stages": [
            tasks(format!("partition tasks of {table}"), operators(&stages), serde_json::Value::Null),
        ]})
    }

    /// The dataflow in Graphviz's dot language (`tidewater explain --format dot`).
    pub fn explain_dot(&self) -> String {
        self.plan.dataflow.to_dot()
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// True when the job reads Kafka: it runs as partition tasks of a consumer group.
    pub fn is_kafka(&self) -> bool {
        self.plan.source_table.is_kafka()
    }

    /// Runs until a bounded input ends (or forever on an unbounded one).
    pub fn run(self) -> Result<JobReport> {
        if self.is_kafka() {
            return self.run_kafka();
        }
        let metrics = self.plan.metrics.clone();
        let started = Instant::now();
        let interval = self.plan.checkpoint.interval;
        tracing::info!(
            job = %self.plan.name,
            parallelism = self.plan.parallelism,
            checkpoint_interval_ms = interval.map(|i| i.as_millis() as u64),
            checkpoint_dir = ?self.checkpoint_dir(),
            "job '{}' started",
            self.plan.name
        );
        let checkpoint = match (self.checkpoint_dir(), self.plan.checkpoint.interval) {
            (Some(dir), Some(interval)) => Some(tidewater_runtime::CheckpointConfig {
                store: Arc::new(tidewater_state::LocalStore::open(dir)?),
                interval,
                retained: self.plan.checkpoint.retained,
                job: self.plan.name.clone(),
                from_scratch: self.from_scratch,
            }),
            _ => None,
        };
        let exec = tidewater_runtime::exec::execute_with(
            self.plan.dataflow,
            &tidewater_runtime::ExecOptions {
                checkpoint,
                metrics: metrics.clone(),
                stop: self.stop.clone(),
            },
        )?;
        let report = JobReport {
            metrics: metrics.snapshot(),
            elapsed: started.elapsed(),
            exec,
            emit_latency_ms: metrics.emit_latency(),
            kafka: None,
        };
        tracing::info!(
            events_in = report.metrics.records_in,
            results_out = report.metrics.records_out,
            checkpoints = report.exec.checkpoints,
            seconds = report.elapsed.as_secs_f64(),
            "job '{}' finished",
            self.plan.name
        );
        Ok(report)
    }

    /// Runs a Kafka job: this instance joins the consumer group with one member per
    /// unit of parallelism until stopped.
    fn run_kafka(self) -> Result<JobReport> {
        use tidewater_connectors::kafka::{
            KafkaJob, KafkaSinkOptions, KafkaSourceOptions, Repartition, TaskSink, tasks,
        };
        let Some((file, opts)) = self.sql else {
            return Err(Error::config(
                "source",
                "kafka jobs are planned from SQL (Job::from_sql / Job::from_file)",
            ));
        };
        let plan = self.plan;
        let table = &plan.source_table;
        let source = KafkaSourceOptions::parse(&table.options, &table.physical)?;
        let (sink_options, sink_schema) = &plan.sink_table;
        let sink = if sink_options
            .get("connector")
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("kafka"))
        {
            TaskSink::Kafka(KafkaSinkOptions::parse(sink_options, sink_schema)?)
        } else {
            TaskSink::InChain
        };
        // A task's chain is the plan at parallelism 1, its stages run one after the
        // other on the member's thread; repartitioning, the source stage runs in the
        // input tasks and the rest in the window tasks.
        let task_opts = Arc::new(tidewater_sql::PlanOptions {
            parallelism: Some(1),
            metrics: plan.metrics.clone(),
            ..opts
        });
        let file = Arc::new(file);
        let split = plan.kafka_repartition;
        let stage = move |window: bool| {
            let (file, task_opts) = (file.clone(), task_opts.clone());
            Box::new(move || -> Result<tidewater_runtime::Chain> {
                let p = tidewater_sql::plan_job(&file, &task_opts)?;
                let mut flow = p.dataflow;
                let mut chain = if window {
                    Vec::new()
                } else {
                    flow.source.chains.pop().unwrap_or_default()
                };
                if window || !split {
                    for mut st in flow.stages {
                        chain.extend(st.chains.pop().unwrap_or_default());
                    }
                }
                Ok(chain)
            }) as Box<dyn Fn() -> Result<tidewater_runtime::Chain> + Send + Sync>
        };
        let repartition = match plan.dataflow.stages.first() {
            Some(st) if split => {
                let tidewater_runtime::Partitioning::Hash { columns, .. } = &st.input else {
                    return Err(Error::runtime("the window stage is not partitioned by key"));
                };
                Some(Repartition {
                    make_window_chain: stage(true),
                    key_columns: columns.clone(),
                })
            }
            _ => None,
        };
        let make_chain = stage(false);
        let metrics = plan.metrics.clone();
        let started = Instant::now();
        let report = tasks::run(KafkaJob {
            name: plan.name.clone(),
            source,
            schema: table.physical.clone(),
            sink,
            make_chain,
            repartition,
            members: plan.parallelism,
            checkpoint_interval: plan.checkpoint.interval.unwrap_or(KAFKA_COMMIT_INTERVAL),
            metrics: metrics.clone(),
            dead_letters: table.dead_letters.clone(),
            stop: self.stop.clone(),
        })?;
        tracing::info!(
            tasks_opened = report.tasks_opened,
            tasks_restored = report.tasks_restored,
            "kafka job '{}' stopped",
            plan.name
        );
        Ok(JobReport {
            metrics: metrics.snapshot(),
            elapsed: started.elapsed(),
            exec: tidewater_runtime::ExecReport {
                restored: None,
                checkpoints: metrics.checkpoints.completed.load(Ordering::Relaxed),
                already_finished: false,
                stopped: true,
            },
            emit_latency_ms: metrics.emit_latency(),
            kafka: Some(report),
        })
    }
}

/// How often the tasks of a Kafka job commit when the job sets no checkpoint interval.
pub const KAFKA_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
