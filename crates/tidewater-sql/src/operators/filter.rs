//! `WHERE`: keeps the rows whose predicate is true (NULL counts as false, as in SQL).

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use datafusion_physical_expr::PhysicalExpr;
use tidewater_core::{Error, Result};
use tidewater_runtime::{Operator, Output};

use crate::exprs::df_message;

/// Filters rows by a boolean expression.
#[derive(Debug)]
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
    text: String,
}

impl FilterOperator {
    /// A filter by `predicate` (shown as `text` in explain).
    pub fn new(predicate: Arc<dyn PhysicalExpr>, text: String) -> Self {
        Self { predicate, text }
    }
}

impl Operator for FilterOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let mask = self
            .predicate
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| Error::runtime(format!("WHERE {}: {}", self.text, df_message(&e))))?;
        let mask = mask.as_boolean_opt().ok_or_else(|| {
            Error::runtime(format!("WHERE {} is not a boolean condition", self.text))
        })?;
        out.emit(filter_record_batch(&batch, mask)?);
        Ok(())
    }

    fn name(&self) -> String {
        format!("Filter({})", self.text)
    }
}
