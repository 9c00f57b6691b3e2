//! Job-wide counters. Cheap atomics updated once per batch; the CLI summary, the progress
//! bar, the status page and the Prometheus endpoint read them while the job runs.
//!
//! - [`JobMetrics`]: totals of the job, plus the registry of [`TaskMetrics`] (one per
//!   subtask, registered by the runtime) and [`CheckpointStats`].
//! - [`LatencyHistogram`]: fixed buckets of atomics (emit latency), readable as quantiles.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Checkpoints taken and restored.
    pub checkpoints: CheckpointStats,
    /// The partition tasks of a Kafka job.
    pub partitions: PartitionStats,
    tasks: Mutex<Vec<Arc<TaskMetrics>>>,
    events: Mutex<VecDeque<JobEvent>>,
}

/// The partition tasks of a Kafka job in this instance.
#[derive(Debug, Default)]
pub struct PartitionStats {
    /// Tasks open now.
    pub assigned: AtomicU64,
    /// Tasks opened: assignments, and reopenings after a failed commit.
    pub opened: AtomicU64,
    /// Of those, tasks that restored a committed snapshot.
    pub restored: AtomicU64,
    /// Partition assignments received (each rebalance that gave this instance work).
    pub assignments: AtomicU64,
    /// Partitions revoked or lost.
    pub revocations: AtomicU64,
}

/// Something that happened to the job (for the status page): a checkpoint, a restore,
/// an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    /// Epoch milliseconds.
    pub at_ms: i64,
    /// "info", "warn" or "error".
    pub level: &'static str,
    /// What happened.
    pub message: String,
}

/// How many [`JobEvent`]s are kept.
const EVENTS_KEPT: usize = 50;

/// Checkpoint counters.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    /// Checkpoints completed.
    pub completed: AtomicU64,
    /// Checkpoints that failed (the job stops on a failure).
    pub failed: AtomicU64,
    /// Epoch of the last complete checkpoint.
    pub last_epoch: AtomicU64,
    /// Trigger to durable manifest of the last one, milliseconds.
    pub last_duration_ms: AtomicU64,
    /// State bytes of the last one.
    pub last_bytes: AtomicU64,
    /// Time the restore at start took, milliseconds (0: none).
    pub restore_ms: AtomicU64,
    /// The epoch restored at start (0: none).
    pub restored_epoch: AtomicU64,
}

/// Counters of one subtask: its chain of operators, as the runtime sees it.
#[derive(Debug)]
pub struct TaskMetrics {
    /// The stage's name ("source events", "window").
    pub operator: String,
    /// Subtask index.
    pub subtask: usize,
    /// Rows into the chain (for a source: rows read).
    pub records_in: AtomicU64,
    /// Rows out of the chain (into the next stage, or into the sink at the end).
    pub records_out: AtomicU64,
    /// Batches into the chain.
    pub batches_in: AtomicU64,
    /// The subtask's current watermark (`i64::MIN`: none yet).
    pub watermark: AtomicI64,
    /// Messages waiting in the subtask's input channel, and its capacity (backpressure).
    pub queued: AtomicU64,
    /// See `queued`.
    pub queue_capacity: AtomicU64,
    /// Window state: keys, slices (or sessions), approximate bytes.
    pub state_keys: AtomicU64,
    /// See `state_keys`.
    pub state_slices: AtomicU64,
    /// See `state_keys`.
    pub state_bytes: AtomicU64,
    /// From the watermark passing a window's end to its results entering the sink.
    pub emit_latency: LatencyHistogram,
}

impl TaskMetrics {
    fn new(operator: &str, subtask: usize) -> Self {
        Self {
            operator: operator.to_string(),
            subtask,
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            batches_in: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            queued: AtomicU64::new(0),
            queue_capacity: AtomicU64::new(0),
            state_keys: AtomicU64::new(0),
            state_slices: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            emit_latency: LatencyHistogram::default(),
        }
    }
}

/// Upper bounds of the latency buckets, in milliseconds (the last bucket is open).
pub const LATENCY_BUCKETS_MS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000,
];

/// A histogram of durations in fixed buckets ([`LATENCY_BUCKETS_MS`]), lock-free.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let ms = d.as_millis() as u64;
        let i = LATENCY_BUCKETS_MS.partition_point(|b| *b < ms);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Number of durations recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of the durations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Count per bucket (the last is above the largest bound).
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// The upper bound (ms) of the bucket holding quantile `q` (0..=1), `None` when
    /// empty; `u64::MAX` when it lies above the largest bound.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        quantile_of(&self.buckets(), q)
    }
}

/// The upper bound (ms) of the bucket holding quantile `q` of bucket counts `counts`.
pub fn quantile_of(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(u64::MAX));
        }
    }
    None
}

impl JobMetrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Registers the counters of subtask `subtask` of stage `operator`.
    pub fn task(&self, operator: &str, subtask: usize) -> Arc<TaskMetrics> {
        let t = Arc::new(TaskMetrics::new(operator, subtask));
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(t.clone());
        }
        t
    }

    /// Every registered subtask, in registration order.
    pub fn tasks(&self) -> Vec<Arc<TaskMetrics>> {
        self.tasks.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Emit latency over every subtask: (p50, p99) upper bucket bounds in ms, and the
    /// number of firings measured; `None` before the first firing.
    pub fn emit_latency(&self) -> Option<(u64, u64, u64)> {
        let mut counts = vec![0u64; LATENCY_BUCKETS_MS.len() + 1];
        for t in self.tasks() {
            for (c, b) in counts.iter_mut().zip(t.emit_latency.buckets()) {
                *c += b;
            }
        }
        let n = counts.iter().sum();
        Some((quantile_of(&counts, 0.5)?, quantile_of(&counts, 0.99)?, n))
    }

    /// Notes a lifecycle event for the status page (the newest 50 are kept).
    pub fn event(&self, level: &'static str, message: impl Into<String>) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        if let Ok(mut ev) = self.events.lock() {
            if ev.len() == EVENTS_KEPT {
                ev.pop_front();
            }
            ev.push_back(JobEvent {
                at_ms,
                level,
                message: message.into(),
            });
        }
    }

    /// The recent events, oldest first.
    pub fn events(&self) -> Vec<JobEvent> {
        self.events
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for ms in [0, 1, 3, 3, 7, 40, 40, 40, 40, 900] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 10);
        assert_eq!(h.quantile_ms(0.1), Some(1));
        assert_eq!(h.quantile_ms(0.4), Some(5));
        assert_eq!(h.quantile_ms(0.5), Some(10));
        assert_eq!(h.quantile_ms(0.9), Some(50));
        assert_eq!(h.quantile_ms(0.99), Some(1_000));
        h.record(Duration::from_secs(60));
        assert_eq!(h.quantile_ms(1.0), Some(u64::MAX));
    }

    #[test]
    fn events_keep_the_newest() {
        let m = JobMetrics::default();
        for i in 0..60 {
            m.event("info", format!("e{i}"));
        }
        let ev = m.events();
        assert_eq!(ev.len(), 50);
        assert_eq!(ev[0].message, "e10");
        assert_eq!(m.task("window", 1).subtask, 1);
        assert_eq!(m.tasks().len(), 1);
    }
}
