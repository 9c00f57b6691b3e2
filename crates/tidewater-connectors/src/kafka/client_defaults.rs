//! The librdkafka settings a Kafka job changes from librdkafka's defaults, and why
//! (each measured, BENCHMARKS.md). A job's `properties.*` always win.

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

/// The task producers' batching, unless the job's properties set it: `linger.ms` = 100,
/// as Kafka Streams' producers have. Every task producer is transactional, so what it
/// writes becomes visible to read_committed readers at the commit, and the commit
/// flushes at once: waiting longer for fuller batches costs those readers no latency.
/// It halves the Kafka client's own CPU per record (measured without the engine): an
/// idempotent producer may have only five requests in flight per partition, and with
/// librdkafka's default of 5 ms its broker thread keeps waking to find a batch ready
/// but no request allowed (BENCHMARKS.md).
pub(super) fn batch_defaults(producer: &mut ClientConfig) {
    let set = |k: &str| producer.get(k).is_some();
    if !set("linger.ms") && !set("queue.buffering.max.ms") {
        producer.set("linger.ms", "100");
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
    fn task_producers_linger_unless_the_job_says_otherwise() {
        let mut c = ClientConfig::new();
        batch_defaults(&mut c);
        assert_eq!(c.get("linger.ms"), Some("100"));
        for key in ["linger.ms", "queue.buffering.max.ms"] {
            let mut c = ClientConfig::new();
            c.set(key, "7");
            batch_defaults(&mut c);
            assert_eq!(c.get(key), Some("7"), "{key}");
            assert_eq!(c.config_map().len(), 1, "{key}: nothing added");
        }
    }
}
