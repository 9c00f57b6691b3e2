//! What flows through the channels between subtasks.

use std::time::Instant;

use arrow::record_batch::RecordBatch;
use tidewater_core::Watermark;

/// One element of a stream. Watermarks and barriers travel in the same channel as the
/// data they follow, so an operator never sees a watermark before the rows it covers,
/// and a barrier splits the stream exactly into "before checkpoint n" and "after".
#[derive(Debug, Clone)]
pub enum Message {
    /// A batch of rows (a few thousand, never one at a time).
    Data(RecordBatch),
    /// Event time has reached this point on this channel; the instant is when the
    /// watermark was generated (emit latency is measured from it).
    Watermark(Watermark, Instant),
    /// Checkpoint `n`: everything before it on this channel belongs to checkpoint `n`.
    Barrier(Barrier),
    /// The upstream subtask has no more data (bounded input). Barriers may still follow:
    /// the checkpoint taken after the end commits the last output.
    EndOfStream,
}

/// The marker of a checkpoint epoch. Only the runtime mints barriers (sources inject
/// them when the coordinator asks), so an operator cannot forge one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    epoch: u64,
}

impl Barrier {
    pub(crate) fn new(epoch: u64) -> Self {
        Self { epoch }
    }

    /// A barrier for testing operators outside the runtime (feature `testing`, meant for
    /// dev-dependencies only).
    #[cfg(feature = "testing")]
    pub fn for_tests(epoch: u64) -> Self {
        Self { epoch }
    }

    /// The checkpoint this barrier belongs to (1, 2, ...).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}
