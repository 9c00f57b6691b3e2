//! `stdin`: CSV or JSON lines from standard input, one source subtask.

mod source;

pub use source::StdinSource;

use crate::registry::Connector;

/// Registry entry.
pub const CONNECTOR: Connector = Connector {
    name: "stdin",
    description: "CSV / JSON lines from standard input",
    options: &[
        "format",
        "csv.field-delimiter",
        "csv.header",
        "dead-letter.path",
    ],
    prefixes: &[],
    source: Some(source::create),
    sink: None,
};
