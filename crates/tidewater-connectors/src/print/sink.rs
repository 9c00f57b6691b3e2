//! The print sink.

use std::io::Write;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::{Operator, Output};

use crate::format::RowFormatter;
use crate::registry::SinkContext;

/// One subtask of the print sink.
#[derive(Debug)]
pub struct PrintSink {
    prefix: String,
    metrics: Arc<JobMetrics>,
    text: String,
}

impl Operator for PrintSink {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        self.text.clear();
        RowFormatter.write_rows(&batch, &self.prefix, &mut self.text)?;
        // One locked write per batch keeps lines of different subtasks whole.
        let mut out = std::io::stdout().lock();
        out.write_all(self.text.as_bytes())
            .map_err(|e| Error::runtime(format!("cannot write to stdout: {e}")))?;
        JobMetrics::add(&self.metrics.records_out, batch.num_rows() as u64);
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> Result<()> {
        std::io::stdout()
            .flush()
            .map_err(|e| Error::runtime(format!("cannot write to stdout: {e}")))
    }

    fn name(&self) -> String {
        "PrintSink".into()
    }
}

pub(super) fn create(ctx: &SinkContext<'_>) -> Result<Vec<Box<dyn Operator>>> {
    let id = ctx
        .options
        .get("print-identifier")
        .map(|s| format!("{s}:"))
        .unwrap_or_default();
    let n = ctx.parallelism.max(1);
    Ok((0..n)
        .map(|i| {
            let prefix = if n > 1 {
                format!("{id}{}> ", i + 1)
            } else if id.is_empty() {
                String::new()
            } else {
                format!("{id}> ")
            };
            Box::new(PrintSink {
                prefix,
                metrics: ctx.metrics.clone(),
                text: String::new(),
            }) as Box<dyn Operator>
        })
        .collect())
}
