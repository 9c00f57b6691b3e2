-- The classic job on Kafka: per key, the sum and count of `value` over a 10 s window
-- that slides every 2 s, from the topic `events` (JSON, keyed by `key`) into the topic
-- `sums`, exactly once. Start it as often as you like with the same group id: the
-- instances split the partitions, and take over those of an instance that dies.
--   tidewater run examples/kafka_sliding_sum.sql
-- Create the topics first (docs/kafka.md); `scripts/kafka-broker run 9092` runs a test
-- broker in the foreground.

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
  'key.format' = 'raw',
  'key.fields' = 'key',
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
