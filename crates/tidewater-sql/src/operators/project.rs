//! Computes a new set of columns from expressions.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion_physical_expr::PhysicalExpr;
use tidewater_core::{Error, Result};
use tidewater_runtime::{Operator, Output};

use crate::exprs::df_message;

/// Evaluates one expression per output column.
#[derive(Debug)]
pub struct ProjectOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    label: String,
}

impl ProjectOperator {
    /// A projection producing `schema` from `exprs` (one per field).
    pub fn new(
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
        label: impl Into<String>,
    ) -> Self {
        Self {
            exprs,
            schema,
            label: label.into(),
        }
    }

    /// Applies the projection to one batch.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let cols = self
            .exprs
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::runtime(format!("{}: {}", self.label, df_message(&e))))?;
        let opts = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &opts,
        )?)
    }
}

impl Operator for ProjectOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        out.emit(self.apply(&batch)?);
        Ok(())
    }

    fn name(&self) -> String {
        format!("Project({})", self.label)
    }
}
