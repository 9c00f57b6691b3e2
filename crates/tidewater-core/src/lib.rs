//! # tidewater-core — the vocabulary every layer shares
//!
//! Layout:
//! - [`time`]: event time in epoch milliseconds, [`Watermark`], timestamp formatting.
//! - [`key`]: deterministic key hashing and the key-group → subtask mapping that shards state.
//! - [`metrics`]: the job-wide counters the summary (and later `/metrics`) reads.
//! - [`dead_letter`]: where records that cannot be used go, with reason and position.
//! - [`error`]: the typed [`Error`] and the [`Result`] alias.
//!
//! Nothing here does I/O or spawns threads; the runtime, window and connector crates
//! build on these types.

pub mod dead_letter;
pub mod error;
pub mod key;
pub mod metrics;
pub mod time;

pub use error::{Error, Result};
pub use time::{Timestamp, Watermark};
