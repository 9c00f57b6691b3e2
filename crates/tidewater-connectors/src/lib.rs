//! # tidewater-connectors — where data comes from and goes to
//!
//! Layout:
//! - [`registry`]: the one list of connectors, their options, and the factories the
//!   planner calls. Unknown or misspelled options are rejected here, before the job starts.
//! - [`options`]: typed access to a table's `WITH (...)` options with errors that name
//!   the table and the option.
//! - [`format`]: CSV and JSON-lines decoding with Arrow; bad lines go to dead letters
//!   with their reason and line number; timestamp formatting for the writers.
//! - [`dead_letter`]: the JSON-lines dead-letter file.
//! - Connectors, each in `<name>/{mod,source,sink}.rs`: [`filesystem`], [`stdio`],
//!   [`datagen`], [`print`], [`blackhole`], [`kafka`] (which also holds the partition-task
//!   runtime of Kafka jobs, repartitioning included), and [`memory`] (in-process batches, for the Rust API and
//!   tests).
//!
//! Connectors depend on the runtime's [`SourceReader`](tidewater_runtime::SourceReader)
//! and [`Operator`](tidewater_runtime::Operator) traits, never the other way round.

pub mod blackhole;
pub mod datagen;
pub mod dead_letter;
pub mod filesystem;
pub mod format;
pub mod kafka;
pub mod memory;
pub mod options;
pub mod print;
pub mod registry;
pub mod stdio;

pub use options::TableOptions;
pub use registry::{SinkContext, SourceContext, connector, registry};
