//! Column selection and renaming without expressions (used by the code-built plans).

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use tidewater_core::Result;
use tidewater_runtime::{Operator, Output};

/// Keeps the columns at these indices, in this order.
#[derive(Debug)]
pub struct SelectColumns {
    indices: Vec<usize>,
}

impl SelectColumns {
    /// Selects `indices`.
    pub fn new(indices: Vec<usize>) -> Self {
        Self { indices }
    }
}

impl Operator for SelectColumns {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        out.emit(batch.project(&self.indices)?);
        Ok(())
    }
}

/// Gives batches a schema with other field names (same types).
#[derive(Debug)]
pub struct Rename {
    schema: SchemaRef,
}

impl Rename {
    /// Renames to `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        Self { schema }
    }
}

impl Operator for Rename {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        out.emit(RecordBatch::try_new(
            self.schema.clone(),
            batch.columns().to_vec(),
        )?);
        Ok(())
    }
}
