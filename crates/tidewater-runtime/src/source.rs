//! The source side of a connector.

use std::fmt::Debug;

use arrow::record_batch::RecordBatch;
use tidewater_core::Result;

/// Reads one source subtask's share of the input, a batch at a time.
///
/// Readers of one source may share state (e.g. one file handed out in chunks); each
/// reader is driven by its own thread.
pub trait SourceReader: Send + Debug {
    /// The next batch, or `None` at the end of a bounded input. Unbounded sources block
    /// until data is available. Bad records never surface as errors here: they go to the
    /// dead-letter sink; an error means the source itself failed.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>>;
}
