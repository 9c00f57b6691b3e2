//! Job-wide counters. Cheap atomics updated once per batch; the CLI summary and progress
//! bar read them while the job runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every subtask of a job.
#[derive(Debug, Default)]
pub struct JobMetrics {
    /// Records read by sources (good and bad).
    pub records_in: AtomicU64,
    /// Bytes read by sources.
    pub bytes_in: AtomicU64,
    /// Rows written by sinks.
    pub records_out: AtomicU64,
    /// Events dropped because their window had already fired.
    pub late_events: AtomicU64,
    /// Records that could not be parsed or converted.
    pub dead_letters: AtomicU64,
    /// Total input size when known (bounded files), for the progress bar.
    pub bytes_total: AtomicU64,
}

impl JobMetrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A consistent-enough copy for display.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            late_events: self.late_events.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
        }
    }
}

/// Plain values of [`JobMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// See [`JobMetrics::records_in`].
    pub records_in: u64,
    /// See [`JobMetrics::bytes_in`].
    pub bytes_in: u64,
    /// See [`JobMetrics::records_out`].
    pub records_out: u64,
    /// See [`JobMetrics::late_events`].
    pub late_events: u64,
    /// See [`JobMetrics::dead_letters`].
    pub dead_letters: u64,
    /// See [`JobMetrics::bytes_total`].
    pub bytes_total: u64,
}
