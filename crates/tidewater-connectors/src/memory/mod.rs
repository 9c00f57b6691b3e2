//! In-process batches: a source over a `Vec<RecordBatch>` and a sink that collects into
//! shared memory. Used by the Rust API ([`JobBuilder`] in the `tidewater` crate) and tests;
//! not reachable from SQL, which has no way to name process memory.

use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::{Operator, Output, SourceReader};

/// Yields its share of a list of batches.
#[derive(Debug)]
pub struct MemorySource {
    batches: Vec<RecordBatch>,
    next: usize,
    index: usize,
    metrics: Arc<JobMetrics>,
}

impl MemorySource {
    /// Splits `batches` round-robin over `parallelism` readers, so that event time
    /// advances together on all of them.
    pub fn split(
        batches: Vec<RecordBatch>,
        parallelism: usize,
        metrics: Arc<JobMetrics>,
    ) -> Vec<Box<dyn SourceReader>> {
        let n = parallelism.max(1);
        let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        for (i, b) in batches.into_iter().enumerate() {
            parts[i % n].push(b);
        }
        parts
            .into_iter()
            .enumerate()
            .map(|(index, p)| {
                Box::new(MemorySource {
                    batches: p,
                    next: 0,
                    index,
                    metrics: metrics.clone(),
                }) as Box<dyn SourceReader>
            })
            .collect()
    }
}

impl SourceReader for MemorySource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let b = self.batches.get(self.next).cloned();
        if let Some(b) = &b {
            self.next += 1;
            JobMetrics::add(&self.metrics.records_in, b.num_rows() as u64);
        }
        Ok(b)
    }

    fn replayable(&self) -> bool {
        true
    }

    fn snapshot(&mut self, _epoch: u64) -> Result<serde_json::Value> {
        Ok(serde_json::json!({ "next": self.next }))
    }

    /// Positions are per reader: the parallelism must be the one checkpointed.
    fn restore(&mut self, positions: &[serde_json::Value]) -> Result<()> {
        let me = positions
            .get(self.index)
            .and_then(|p| p["next"].as_u64())
            .ok_or_else(|| {
                Error::Checkpoint("memory source: no position for this reader".into())
            })?;
        self.next = me as usize;
        Ok(())
    }
}

/// Batches collected by a [`CollectSink`].
pub type Collected = Arc<Mutex<Vec<RecordBatch>>>;

/// Appends every batch to shared memory.
#[derive(Debug)]
pub struct CollectSink {
    into: Collected,
    metrics: Arc<JobMetrics>,
}

impl CollectSink {
    /// `parallelism` sinks all collecting into `into`.
    pub fn create(
        into: &Collected,
        parallelism: usize,
        metrics: Arc<JobMetrics>,
    ) -> Vec<Box<dyn Operator>> {
        (0..parallelism.max(1))
            .map(|_| {
                Box::new(CollectSink {
                    into: into.clone(),
                    metrics: metrics.clone(),
                }) as Box<dyn Operator>
            })
            .collect()
    }
}

impl Operator for CollectSink {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        JobMetrics::add(&self.metrics.records_out, batch.num_rows() as u64);
        self.into
            .lock()
            .map_err(|_| Error::runtime("collect sink poisoned"))?
            .push(batch);
        Ok(())
    }

    fn name(&self) -> String {
        "CollectSink".into()
    }
}
