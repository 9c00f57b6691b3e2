//! `datagen`: synthetic rows with Flink's options — the demo and benchmark source.
//!
//! - 'rows-per-second' (default 10000): total rate over all subtasks.
//! - 'number-of-rows': stop after this many rows (default: unbounded, unless a
//!   sequence field bounds it).
//! - 'fields.<f>.kind' = 'random' (default) | 'sequence'.
//! - random numbers: 'fields.<f>.min' / 'max' (defaults 0 / 1000);
//!   random strings: 'fields.<f>.length' (default 100).
//! - sequences: 'fields.<f>.start' / 'end' (row r gets `start + r`; the source ends after
//!   `end`). Timestamps are generated as epoch milliseconds.
//!
//! Rows are numbered globally; subtask i of p makes blocks i, i+p, i+2p, ... so that
//! sequence fields (typically event time) advance together on every subtask.

mod source;

pub use source::DatagenSource;

use crate::registry::Connector;

/// Registry entry.
pub const CONNECTOR: Connector = Connector {
    name: "datagen",
    description: "synthetic rows (random or sequence fields), optionally rate-limited",
    options: &["rows-per-second", "number-of-rows"],
    prefixes: &["fields."],
    source: Some(source::create),
    sink: None,
};
