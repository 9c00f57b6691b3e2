//! The error type of the library crates. The binary turns it into one short line.

use std::path::PathBuf;

/// Result with Tidewater's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a job. Messages are written for the person who runs the
/// job: they name the field, file or line and what to do instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A SQL statement could not be parsed or planned. `line`/`column` are 1-based.
    #[error("SQL error at line {line}, column {column}: {message}")]
    Sql {
        /// 1-based line in the job file.
        line: u64,
        /// 1-based column in the job file.
        column: u64,
        /// What is wrong and what is supported instead.
        message: String,
    },
    /// A table option or job setting is missing or wrong.
    #[error("{context}: {message}")]
    Config {
        /// Where the setting lives, e.g. `table 'events', option 'path'`.
        context: String,
        /// What is wrong.
        message: String,
    },
    /// A file or directory could not be read or written.
    #[error("{op} '{}': {source}", path.display())]
    Io {
        /// What was being done ("cannot open", "cannot write", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An Arrow kernel failed (a bug unless the message says otherwise).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Something failed while the job ran.
    #[error("{0}")]
    Runtime(String),
    /// A checkpoint cannot be used: a file fails its checksum, is truncated or is
    /// missing. Recovery falls back to the previous complete checkpoint.
    #[error("checkpoint {epoch} cannot be used: {reason}")]
    Damaged {
        /// The checkpoint's epoch.
        epoch: u64,
        /// Which file and what is wrong with it.
        reason: String,
    },
    /// Checkpoints exist but cannot be resumed from (the plan changed, none is usable).
    #[error("{0}")]
    Checkpoint(String),
}

impl Error {
    /// A configuration error for `context` (e.g. a table option).
    pub fn config(context: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            context: context.into(),
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A checkpoint that cannot be used (see [`Error::Damaged`]).
    pub fn damaged(epoch: u64, reason: impl Into<String>) -> Self {
        Error::Damaged {
            epoch,
            reason: reason.into(),
        }
    }

    /// A runtime failure.
    pub fn runtime(message: impl Into<String>) -> Self {
        Error::Runtime(message.into())
    }
}
