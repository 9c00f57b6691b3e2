//! The blackhole sink.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use tidewater_core::Result;
use tidewater_core::metrics::JobMetrics;
use tidewater_runtime::{Operator, Output};

use crate::registry::SinkContext;

/// Counts and drops rows.
#[derive(Debug)]
pub struct BlackholeSink {
    metrics: Arc<JobMetrics>,
}

impl Operator for BlackholeSink {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        JobMetrics::add(&self.metrics.records_out, batch.num_rows() as u64);
        Ok(())
    }

    fn name(&self) -> String {
        "BlackholeSink".into()
    }
}

pub(super) fn create(ctx: &SinkContext<'_>) -> Result<Vec<Box<dyn Operator>>> {
    Ok((0..ctx.parallelism.max(1))
        .map(|_| {
            Box::new(BlackholeSink {
                metrics: ctx.metrics.clone(),
            }) as Box<dyn Operator>
        })
        .collect())
}
