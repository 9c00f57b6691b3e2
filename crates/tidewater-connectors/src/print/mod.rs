//! `print`: rows to standard output as Flink prints them (`+I[...]`, prefixed with the
//! subtask number when there are several). At-least-once: stdout cannot take part in a
//! checkpoint, so rows printed after the last checkpoint are printed again on recovery.

mod sink;

pub use sink::PrintSink;

use crate::registry::Connector;

/// Registry entry.
pub const CONNECTOR: Connector = Connector {
    name: "print",
    description: "rows to standard output (at-least-once)",
    options: &["print-identifier"],
    prefixes: &[],
    source: None,
    sink: Some(sink::create),
};
