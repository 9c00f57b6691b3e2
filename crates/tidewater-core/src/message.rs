//! What flows through the channels between subtasks.

use arrow::record_batch::RecordBatch;

use crate::time::Watermark;

/// One element of a stream. Watermarks travel in the same channel as the data they
/// follow, so an operator never sees a watermark before the rows it covers.
#[derive(Debug, Clone)]
pub enum Message {
    /// A batch of rows (a few thousand, never one at a time).
    Data(RecordBatch),
    /// Event time has reached this point on this channel.
    Watermark(Watermark),
    /// The upstream subtask has no more data (bounded input).
    EndOfStream,
}
