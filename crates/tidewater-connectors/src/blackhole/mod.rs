//! `blackhole`: discards rows (counting them), as in Flink — for benchmarks.

mod sink;

pub use sink::BlackholeSink;

use crate::registry::Connector;

/// Registry entry.
pub const CONNECTOR: Connector = Connector {
    name: "blackhole",
    description: "discards rows (for benchmarks)",
    options: &[],
    prefixes: &[],
    source: None,
    sink: Some(sink::create),
};
