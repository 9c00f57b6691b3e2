//! The registry's source factory: it checks the options; the partitions themselves are
//! read by the partition tasks ([`super::tasks`]), never by the threaded executor.

use arrow::record_batch::RecordBatch;
use tidewater_core::{Error, Result};
use tidewater_runtime::SourceReader;

use super::options::KafkaSourceOptions;
use crate::registry::SourceContext;

/// Stands in for a Kafka table in a plan; running it is a mistake of the caller.
#[derive(Debug)]
struct ReadByPartitionTasks {
    table: String,
}

impl SourceReader for ReadByPartitionTasks {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        Err(Error::runtime(format!(
            "kafka table '{}' is read by partition tasks (tidewater_connectors::kafka::tasks), \
             not by the threaded executor",
            self.table
        )))
    }

    fn replayable(&self) -> bool {
        true
    }
}

pub(super) fn create(ctx: &SourceContext<'_>) -> Result<Vec<Box<dyn SourceReader>>> {
    let o = KafkaSourceOptions::parse(ctx.options, &ctx.schema)?;
    Ok(vec![Box::new(ReadByPartitionTasks { table: o.table })])
}
