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
//!
//! The runtime knows nothing about SQL or connectors: those crates build a
//! [`Dataflow`] and hand it to [`exec::execute`].

pub mod dataflow;
pub mod exec;
pub mod operator;
pub mod source;
pub mod watermark;

pub use dataflow::{Chain, Dataflow, Partitioning, SourceStage, Stage};
pub use operator::{Operator, Output};
pub use source::SourceReader;
