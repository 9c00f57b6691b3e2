//! Dead-letter sinks: a JSON-lines file ('dead-letter.path'), or counting only.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tidewater_core::dead_letter::{DeadLetter, DeadLetterSink, Position};
use tidewater_core::{Error, Result};

/// Writes each dead letter as one JSON object per line:
/// `{"reason": .., "file": .., "line": .., "raw": ..}` (`"stream"` instead of `"file"` for
/// stdin; `"topic"`, `"partition"`, `"offset"` for Kafka). Raw bytes that are not UTF-8 are written lossily and also as `"raw_hex"`.
#[derive(Debug)]
pub struct FileDeadLetters {
    path: PathBuf,
    /// Opened on the first letter, so that planning (`explain`) leaves no trace.
    out: Mutex<Option<BufWriter<File>>>,
    /// Append instead of truncating: for unbounded sources whose tasks (and instances)
    /// write to one file over many runs.
    append: bool,
}

impl FileDeadLetters {
    /// A sink that creates (truncates) the file at `path` — and its parent
    /// directories — when the first dead letter arrives.
    pub fn create(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Err(Error::config(
                "dead-letter.path",
                format!("'{}' is a directory, not a file", path.display()),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            out: Mutex::new(None),
            append: false,
        })
    }

    /// Like [`FileDeadLetters::create`], but appends to the file: each letter is one
    /// `O_APPEND` write of a whole line, so several writers never interleave.
    pub fn append(path: &Path) -> Result<Self> {
        Ok(Self {
            append: true,
            ..Self::create(path)?
        })
    }

    fn open(&self) -> Result<BufWriter<File>> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("cannot create directory", dir, e))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.append)
            .truncate(!self.append)
            .open(&self.path)
            .map_err(|e| Error::io("cannot open dead-letter file", &self.path, e))?;
        Ok(BufWriter::new(f))
    }
}

/// The JSON line for one dead letter.
pub fn to_json(letter: &DeadLetter) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    o.insert("reason".into(), letter.reason.clone().into());
    match &letter.position {
        Position::Line { file, line } => {
            o.insert("file".into(), file.clone().into());
            o.insert("line".into(), (*line).into());
        }
        Position::Offset { stream, line } => {
            o.insert("stream".into(), stream.clone().into());
            o.insert("line".into(), (*line).into());
        }
        Position::Kafka {
            topic,
            partition,
            offset,
        } => {
            o.insert("topic".into(), topic.clone().into());
            o.insert("partition".into(), (*partition).into());
            o.insert("offset".into(), (*offset).into());
        }
        Position::Unknown => {}
    }
    o.insert(
        "raw".into(),
        String::from_utf8_lossy(&letter.raw).into_owned().into(),
    );
    if std::str::from_utf8(&letter.raw).is_err() {
        let hex: String = letter.raw.iter().map(|b| format!("{b:02x}")).collect();
        o.insert("raw_hex".into(), hex.into());
    }
    serde_json::Value::Object(o)
}

impl DeadLetterSink for FileDeadLetters {
    fn write(&self, letter: DeadLetter) -> Result<()> {
        let mut line = to_json(&letter).to_string();
        line.push('\n');
        let mut guard = self
            .out
            .lock()
            .map_err(|_| Error::runtime("dead-letter writer poisoned"))?;
        let out = match guard.as_mut() {
            Some(out) => out,
            None => guard.insert(self.open()?),
        };
        out.write_all(line.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| Error::io("cannot write dead letter to", &self.path, e))
    }
}

/// Counts only (the job metrics already do); used when no 'dead-letter.path' is set.
#[derive(Debug, Default)]
pub struct DiscardDeadLetters;

impl DeadLetterSink for DiscardDeadLetters {
    fn write(&self, letter: DeadLetter) -> Result<()> {
        tracing::debug!(reason = %letter.reason, position = ?letter.position, "dead letter");
        Ok(())
    }
}
