-- The classic job on Kafka when the producers do not key messages by `key` (any key,
-- or none): the job repartitions by the grouping key through internal topics
-- (`sliding-sums-events-repartition`, ...; docs/kafka.md, "How it runs"), still exactly
-- once. A partition that gets no data would hold every window back; the idle timeout
-- lets the others go on without it.
--   tidewater run examples/kafka_repartitioned_sliding_sum.sql
-- Create the topics `events` and `sums` first; `scripts/kafka-broker run 9092` runs a
-- test broker in the foreground.

SET 'execution.checkpointing.interval' = '1 s';

CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts BIGINT,
  event_time AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '2' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'events',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'properties.group.id' = 'sliding-sums',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'json',
  'scan.watermark.idle-timeout' = '10 s',
  'dead-letter.path' = 'dead-letters.jsonl'
);

CREATE TABLE sums (
  key STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  total BIGINT,
  events BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = 'sums',
  'properties.bootstrap.servers' = '127.0.0.1:9092',
  'format' = 'json',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = 'sliding-sums'
);

INSERT INTO sums
SELECT key, window_start, window_end, SUM(`value`), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(event_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
