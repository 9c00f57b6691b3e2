//! The one list of connectors.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use tidewater_core::dead_letter::DeadLetterSink;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::{Operator, SourceReader};

use crate::dead_letter::{DiscardDeadLetters, FileDeadLetters};
use crate::options::suggest;
use crate::{TableOptions, blackhole, datagen, filesystem, kafka, print, stdio};

/// What a source factory gets.
#[derive(Debug)]
pub struct SourceContext<'a> {
    /// The table's options.
    pub options: &'a TableOptions,
    /// The physical columns (computed columns excluded).
    pub schema: SchemaRef,
    /// Requested number of source subtasks (a source may return fewer).
    pub parallelism: usize,
    /// Job counters.
    pub metrics: Arc<JobMetrics>,
    /// Where bad records go.
    pub dead_letters: Arc<dyn DeadLetterSink>,
}

/// What a sink factory gets.
#[derive(Debug)]
pub struct SinkContext<'a> {
    /// The table's options.
    pub options: &'a TableOptions,
    /// The columns written.
    pub schema: SchemaRef,
    /// Number of sink subtasks to create.
    pub parallelism: usize,
    /// Job counters.
    pub metrics: Arc<JobMetrics>,
    /// Checkpointing is on: sinks that take part make output visible only when the
    /// checkpoint covering it completes, instead of at the end of input.
    pub checkpointing: bool,
}

type SourceFactory = fn(&SourceContext<'_>) -> Result<Vec<Box<dyn SourceReader>>>;
type SinkFactory = fn(&SinkContext<'_>) -> Result<Vec<Box<dyn Operator>>>;

/// A connector: its name, the options it accepts, and its factories.
#[derive(Debug)]
pub struct Connector {
    /// The value of 'connector'.
    pub name: &'static str,
    /// One line for `--help` and errors.
    pub description: &'static str,
    /// Accepted option names (besides 'connector').
    pub options: &'static [&'static str],
    /// Accepted option name prefixes (e.g. `fields.` for datagen).
    pub prefixes: &'static [&'static str],
    /// Builds the source readers, if the connector can be read.
    pub source: Option<SourceFactory>,
    /// Builds the sink operators, if the connector can be written.
    pub sink: Option<SinkFactory>,
}

static REGISTRY: &[Connector] = &[
    filesystem::CONNECTOR,
    datagen::CONNECTOR,
    stdio::CONNECTOR,
    print::CONNECTOR,
    blackhole::CONNECTOR,
    kafka::CONNECTOR,
];

/// All connectors.
pub fn registry() -> &'static [Connector] {
    REGISTRY
}

/// The connector named by a table's 'connector' option, after checking every option
/// name against what it accepts.
pub fn connector(options: &TableOptions) -> Result<&'static Connector> {
    let name = options.required("connector")?.trim().to_ascii_lowercase();
    let known: Vec<&str> = REGISTRY.iter().map(|c| c.name).collect();
    let Some(c) = REGISTRY.iter().find(|c| c.name == name) else {
        let hint = suggest(&name, known.iter().copied())
            .map(|s| format!("did you mean '{s}'? "))
            .unwrap_or_default();
        return Err(options.error(
            "connector",
            format!(
                "unknown connector '{name}'; {hint}available: {}",
                known.join(", ")
            ),
        ));
    };
    for key in options.keys() {
        if key == "connector"
            || c.options.contains(&key)
            || c.prefixes.iter().any(|p| key.starts_with(p))
        {
            continue;
        }
        let hint = suggest(key, c.options.iter().copied())
            .map(|s| format!("did you mean '{s}'? "))
            .unwrap_or_default();
        return Err(options.error(
            key,
            format!(
                "unknown option for connector '{}'; {hint}accepted: {}",
                c.name,
                c.options.join(", ")
            ),
        ));
    }
    Ok(c)
}

/// The dead-letter sink of a source table: 'dead-letter.path' or counting only.
pub fn dead_letters_for(options: &TableOptions) -> Result<Arc<dyn DeadLetterSink>> {
    Ok(match options.get("dead-letter.path") {
        // A Kafka job's tasks come and go with rebalances and restarts: append.
        Some(p) if options.get("connector") == Some("kafka") => {
            Arc::new(FileDeadLetters::append(std::path::Path::new(p))?)
        }
        Some(p) => Arc::new(FileDeadLetters::create(std::path::Path::new(p))?),
        None => Arc::new(DiscardDeadLetters),
    })
}

/// Builds the readers of a source table.
pub fn create_source(ctx: &SourceContext<'_>) -> Result<Vec<Box<dyn SourceReader>>> {
    let c = connector(ctx.options)?;
    let f = c.source.ok_or_else(|| {
        ctx.options.error(
            "connector",
            format!("connector '{}' can only be written to, not read", c.name),
        )
    })?;
    let readers = f(ctx)?;
    if readers.is_empty() {
        return Err(Error::runtime(format!(
            "source '{}' has no readers",
            ctx.options.table()
        )));
    }
    Ok(readers)
}

/// Builds the sink operators of a sink table.
pub fn create_sink(ctx: &SinkContext<'_>) -> Result<Vec<Box<dyn Operator>>> {
    let c = connector(ctx.options)?;
    let f = c.sink.ok_or_else(|| {
        ctx.options.error(
            "connector",
            format!("connector '{}' can only be read, not written to", c.name),
        )
    })?;
    f(ctx)
}
