//! Dead letters: records the job could not use, kept with the reason and where they came from.

use std::fmt::Debug;

/// Where a bad record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A line of a file (1-based).
    Line {
        /// The file.
        file: String,
        /// 1-based line number.
        line: u64,
    },
    /// A byte offset in a stream (stdin).
    Offset {
        /// Name of the stream.
        stream: String,
        /// 1-based line number in the stream.
        line: u64,
    },
    /// A record of a Kafka partition.
    Kafka {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
    },
    /// Not known (e.g. a late event after decoding).
    Unknown,
}

/// One record that did not make it into the computation.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The raw bytes as read (lossily shown as UTF-8 when written).
    pub raw: Vec<u8>,
    /// Why it was rejected.
    pub reason: String,
    /// Where it came from.
    pub position: Position,
}

/// Receives dead letters. Implementations must be cheap to call from many subtasks.
pub trait DeadLetterSink: Send + Sync + Debug {
    /// Records one dead letter. Errors are reported by the implementation (a dead-letter
    /// sink that cannot write must stop the job rather than lose data).
    fn write(&self, letter: DeadLetter) -> crate::Result<()>;
}

/// Keeps dead letters in memory: for tests, and for programs that embed Tidewater and
/// want them as values.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters(std::sync::Mutex<Vec<DeadLetter>>);

impl MemoryDeadLetters {
    /// The letters so far, in the order they came.
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl DeadLetterSink for MemoryDeadLetters {
    fn write(&self, letter: DeadLetter) -> crate::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(letter);
        Ok(())
    }
}
