-- The classic job on synthetic data: 100 keys, 1 000 events per second of event time,
-- generated as fast as the machine goes; results are discarded (a benchmark shape).
--   cargo run --release -- run examples/datagen_sliding_sum.sql

CREATE TABLE events (
  id BIGINT,
  `value` BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '1000000000',
  'fields.id.min' = '0',
  'fields.id.max' = '99',
  'fields.value.min' = '0',
  'fields.value.max' = '1000',
  'fields.ts_ms.kind' = 'sequence',
  'fields.ts_ms.start' = '1700000000000',
  'fields.ts_ms.end' = '1700000999999'
);

CREATE TABLE sums (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  id BIGINT,
  total BIGINT,
  events BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO sums
SELECT window_start, window_end, id, SUM(`value`), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, id;
