//! # tidewater-runtime — how data moves
//!
//! Layout:
//! - [`operator`]: the [`Operator`] trait (one required method, `process_batch`) and
//!   [`Output`], through which an operator emits batches and watermarks.
//! - [`source`]: the [`SourceReader`] trait a connector implements per source subtask.
//! - [`dataflow`]: the description of a job's graph — a source stage and a line of
//!   stages joined by [`Partitioning`]s — and its `explain` text.
//! - [`exec`]: the executor: one thread per subtask, bounded channels between stages
//!   (backpressure), hash exchange by key group, watermark = min over inputs.
//! - [`watermark`]: the operator that turns an event-time column into watermarks.
//! - [`message`]: what channels carry — batches, watermarks, barriers, end of stream.
//! - [`checkpoint`]: the coordinator (trigger, collect acks, write the manifest, tell
//!   sinks to commit) and restore; the decisions themselves are `tidewater-state`'s.
//! - `task` (private): the subtask loops — sources inject barriers, stages align them.
//! - [`inline`]: a chain driven on the caller's thread, checkpointed when the caller
//!   says (the partition tasks of the Kafka runtime).
//!
//! The runtime knows nothing about SQL or connectors: those crates build a
//! [`Dataflow`] and hand it to [`exec::execute`].

pub mod checkpoint;
pub mod dataflow;
pub mod exec;
pub mod inline;
pub mod message;
pub mod operator;
pub mod source;
mod task;
pub mod watermark;

pub use checkpoint::CheckpointConfig;
pub use dataflow::{Chain, Dataflow, Partitioning, SourceStage, Stage};
pub use exec::{ExecOptions, ExecReport};
pub use inline::InlineChain;
pub use message::{Barrier, Message};
pub use operator::{KEY_GROUP_COLUMN, Operator, Output, RestoredState, StateSize, StateWriter};
pub use source::SourceReader;
