//! The librdkafka settings a Kafka job changes from librdkafka's defaults, and why
//! (each measured, BENCHMARKS.md). A job's `properties.*` always win.

use std::time::Duration;

use rdkafka::ClientConfig;

/// Properties only a consumer understands (kept from the producers' configuration).
pub(super) const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "isolation.level",
    "auto.offset.reset",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "max.poll.interval.ms",
    "enable.partition.eof",
    "fetch.min.bytes",
    "fetch.wait.max.ms",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.queue.backoff.ms",
    "queued.min.messages",
    "queued.max.messages.kbytes",
];
/// How long librdkafka waits before fetching again for a partition whose local queue
/// was full: its default of 1 s idles a consumer that drains the queue in a few
/// milliseconds (BENCHMARKS.md).
pub(super) const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// The group consumer's settings, unless the job's properties set them. Offsets are
/// committed in the tasks' transactions, never by the consumer. The fetch queue: when a
/// partition has `queued.min.messages` messages waiting, librdkafka stops fetching it for
/// `fetch.queue.backoff.ms`; with its defaults (100 000 messages, 1 s) a member that
/// drains the queue in 50 ms then waits the rest of the second, which capped the job at
/// about 250 000 events/s. A smaller queue refilled sooner also keeps what the member
/// reads in cache.
pub(super) fn consumer_defaults(consumer: &mut ClientConfig) {
    for (k, v) in [
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("isolation.level", "read_committed"),
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        ("queued.min.messages", "20000"),
    ] {
        if consumer.get(k).is_none() {
            consumer.set(k, v);
        }
    }
}

/// The task producers' batching, unless the job's properties set it: `linger.ms` = the
/// commit interval (at least 100 ms, at most librdkafka's 15 min). Every task producer
/// is transactional: what it writes becomes visible to read_committed readers at the
/// commit, and the commit flushes at once, so lingering until then costs those readers
/// no latency; full batches still go out as soon as they are full.
///
/// A shorter linger makes librdkafka spin. An idempotent producer may have only five
/// requests in flight per partition; once the oldest waiting record is older than the
/// linger and all five are out, librdkafka's broker thread asks to be woken "now" and
/// polls its sockets without waiting until a response frees a slot. At full speed
/// against the test broker that was a million `poll` calls in 7.5 s and a quarter of
/// the job's CPU with a 100 ms linger; 40 000 with the commit interval (BENCHMARKS.md).
pub(super) fn batch_defaults(producer: &mut ClientConfig, commit_interval: Duration) {
    let set = |k: &str| producer.get(k).is_some();
    if !set("linger.ms") && !set("queue.buffering.max.ms") {
        let ms = commit_interval.as_millis().clamp(100, 900_000);
        producer.set("linger.ms", ms.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_refetches_soon_unless_the_job_says_otherwise() {
        let mut c = ClientConfig::new();
        consumer_defaults(&mut c);
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(c.get("queued.min.messages"), Some("20000"));
        assert_eq!(c.get("isolation.level"), Some("read_committed"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        let mut c = ClientConfig::new();
        c.set("fetch.queue.backoff.ms", "1000")
            .set("isolation.level", "read_uncommitted");
        consumer_defaults(&mut c);
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("1000"));
        assert_eq!(c.get("isolation.level"), Some("read_uncommitted"));
    }

    #[test]
    fn task_producers_linger_until_the_commit_unless_the_job_says_otherwise() {
        for (interval, linger) in [
            (Duration::from_secs(1), "1000"),
            (Duration::from_millis(20), "100"),
            (Duration::from_secs(3600), "900000"),
        ] {
            let mut c = ClientConfig::new();
            batch_defaults(&mut c, interval);
            assert_eq!(c.get("linger.ms"), Some(linger), "{interval:?}");
        }
        for key in ["linger.ms", "queue.buffering.max.ms"] {
            let mut c = ClientConfig::new();
            c.set(key, "7");
            batch_defaults(&mut c, Duration::from_secs(1));
            assert_eq!(c.get(key), Some("7"), "{key}");
            assert_eq!(c.config_map().len(), 1, "{key}: nothing added");
        }
    }
}
