//! The source side of a connector.

use std::fmt::Debug;

use arrow::record_batch::RecordBatch;
use tidewater_core::{Error, Result};

/// Reads one source subtask's share of the input, a batch at a time.
///
/// Readers of one source may share state (e.g. one file handed out in chunks); each
/// reader is driven by its own thread.
///
/// Checkpoints: between two batches the runtime may call [`SourceReader::snapshot`]
/// and then emit a barrier; everything returned before the snapshot belongs to the
/// checkpoint, everything after to the next. A reader that shares its input with other
/// subtasks may return an *empty* batch instead of data when it must not hand out more
/// before this subtask has snapshotted a checkpoint another subtask already started;
/// the runtime then snapshots and asks again.
pub trait SourceReader: Send + Debug {
    /// The next batch, or `None` at the end of a bounded input. Unbounded sources block
    /// until data is available (or return an empty batch now and then, so that the
    /// runtime can take checkpoints and notice a stop). Bad records never surface as
    /// errors here: they go to the dead-letter sink; an error means the source itself
    /// failed.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>>;

    /// True when the reader can resume from a position (files, generators, Kafka):
    /// checkpointing a job whose source cannot is refused. Default: false.
    fn replayable(&self) -> bool {
        false
    }

    /// This subtask's position for checkpoint `epoch`: enough to continue right after
    /// the last batch returned. Default: not replayable.
    fn snapshot(&mut self, epoch: u64) -> Result<serde_json::Value> {
        let _ = epoch;
        Err(Error::Checkpoint(format!(
            "source {self:?} cannot be checkpointed"
        )))
    }

    /// Continues from the positions of every subtask of the checkpoint (`positions[i]`
    /// is what subtask `i` returned from `snapshot`), before the first batch.
    fn restore(&mut self, positions: &[serde_json::Value]) -> Result<()> {
        let _ = positions;
        Err(Error::Checkpoint(format!(
            "source {self:?} cannot resume from a checkpoint"
        )))
    }
}
