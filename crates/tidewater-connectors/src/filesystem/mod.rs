//! `filesystem`: CSV or JSON-lines files. As a source, 'path' is a file or a directory
//! (its files in name order, hidden files skipped); as a sink, 'path' is a directory of
//! part files.

mod sink;
mod source;

pub use sink::FileSink;
pub use source::FileSource;

use crate::registry::Connector;

/// Registry entry.
pub const CONNECTOR: Connector = Connector {
    name: "filesystem",
    description: "CSV / JSON-lines files: a file or directory to read, a directory of part files to write",
    options: &[
        "path",
        "format",
        "csv.field-delimiter",
        "csv.header",
        "dead-letter.path",
        "source.chunk-size",
    ],
    prefixes: &[],
    source: Some(source::create),
    sink: Some(sink::create),
};
