//! Planning a source table: connector readers, computed columns, watermark, WHERE.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::expressions::Column;
use sqlparser::ast::Expr;
use tidewater_connectors::TableOptions;
use tidewater_connectors::registry::{SourceContext, connector, create_source, dead_letters_for};
use tidewater_core::Result;
use tidewater_runtime::watermark::WatermarkGenerator;
use tidewater_runtime::{Chain, Operator, SourceReader};

use super::PlanContext;
use super::SourceTable;
use crate::operators::{FilterOperator, ProjectOperator};
use crate::parse::ColumnKind;
use crate::types::sql_name;

/// A planned source: readers and the chain each subtask runs after its reader.
pub(crate) struct SourcePlan {
    pub name: String,
    pub readers: Vec<Box<dyn SourceReader>>,
    pub chains: Vec<Chain>,
    /// The table's columns (physical and computed) as the chain emits them.
    pub schema: SchemaRef,
    /// The event-time column, if the table declares a watermark.
    pub time_column: Option<(usize, String)>,
    pub notes: Vec<String>,
    /// The table as a runtime of its own (Kafka's partition tasks) needs it.
    pub table: SourceTable,
}

pub(crate) fn plan_source(
    ctx: &PlanContext<'_>,
    table: &str,
    selection: Option<&Expr>,
) -> Result<SourcePlan> {
    let loc = ctx.loc;
    let table = table.trim_matches('`');
    let def = ctx.job.table(table).ok_or_else(|| {
        let names = ctx
            .job
            .tables
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        loc.error(format!("unknown table '{table}'; declared tables: {names}"))
    })?;
    let options = TableOptions::new(&def.name, def.options.clone());
    let c = connector(&options)?;
    if c.source.is_none() {
        return Err(options.error(
            "connector",
            format!("connector '{}' cannot be read; it is a sink", c.name),
        ));
    }

    let physical: Vec<Field> = def
        .columns
        .iter()
        .filter_map(|c| match &c.kind {
            ColumnKind::Physical(t) => Some(Field::new(&c.name, t.clone(), true)),
            ColumnKind::Computed(_) => None,
        })
        .collect();
    let physical = Arc::new(Schema::new(physical));

    // Computed columns are evaluated over the physical ones, in declared order.
    let mut exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let mut fields = Vec::new();
    let mut computed = false;
    for col in &def.columns {
        match &col.kind {
            ColumnKind::Physical(t) => {
                let idx = physical.index_of(&col.name)?;
                exprs.push(Arc::new(Column::new(&col.name, idx)));
                fields.push(Field::new(&col.name, t.clone(), true));
            }
            ColumnKind::Computed(e) => {
                computed = true;
                let (p, t) = ctx.provider.compile(e, &physical, None, col.loc)?;
                exprs.push(p);
                fields.push(Field::new(&col.name, t, true));
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));

    let mut notes = vec![format!(
        "Source  '{}' connector {} {:?}",
        def.name, c.name, options
    )];
    let time_column = match &def.watermark {
        Some(w) => {
            let idx = schema.index_of(&w.column)?;
            let t = schema.field(idx).data_type();
            if !matches!(t, DataType::Timestamp(TimeUnit::Millisecond, _)) {
                return Err(w.loc.error(format!(
                    "WATERMARK FOR {}: the column is {}, but event time must be TIMESTAMP(3) or TIMESTAMP_LTZ(3) (e.g. {} AS TO_TIMESTAMP_LTZ(epoch_millis, 3))",
                    w.column,
                    sql_name(t),
                    w.column
                )));
            }
            notes.push(format!(
                "        event time '{}', watermark = max seen - {} ms, per source subtask",
                w.column, w.delay_ms
            ));
            Some((idx, w.column.clone(), w.delay_ms))
        }
        None => None,
    };

    let filter = match selection {
        Some(e) => {
            let (p, t) = ctx.provider.compile(e, &schema, None, loc)?;
            if t != DataType::Boolean && t != DataType::Null {
                return Err(crate::parse::Loc::of(e, loc).error(format!(
                    "WHERE {e} is {}, not a boolean condition",
                    sql_name(&t)
                )));
            }
            Some((p, e.to_string()))
        }
        None => None,
    };

    let dead_letters = dead_letters_for(&options)?;
    let readers = create_source(&SourceContext {
        options: &options,
        schema: physical.clone(),
        parallelism: ctx.parallelism,
        metrics: ctx.opts.metrics.clone(),
        dead_letters: dead_letters.clone(),
    })?;
    let chains = (0..readers.len())
        .map(|_| {
            let mut chain: Chain = Vec::new();
            if computed {
                chain.push(Box::new(ProjectOperator::new(
                    exprs.clone(),
                    schema.clone(),
                    "computed columns",
                )) as Box<dyn Operator>);
            }
            if let Some((idx, _, delay)) = &time_column {
                chain.push(Box::new(
                    WatermarkGenerator::new(*idx, *delay)
                        .with_dead_letters(dead_letters.clone(), ctx.opts.metrics.clone()),
                ));
            }
            if let Some((p, text)) = &filter {
                chain.push(Box::new(FilterOperator::new(p.clone(), text.clone())));
            }
            chain
        })
        .collect();
    Ok(SourcePlan {
        name: def.name.clone(),
        readers,
        chains,
        schema,
        time_column: time_column.map(|(i, n, _)| (i, n)),
        notes,
        table: SourceTable {
            options,
            physical,
            dead_letters,
        },
    })
}
