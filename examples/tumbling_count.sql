-- Events per key in fixed 5 s windows.
--   cargo run --release -- run examples/tumbling_count.sql

CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = 'examples/data/events.csv',
  'format' = 'csv',
  'csv.header' = 'true'
);

CREATE TABLE counts (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  key STRING,
  events BIGINT,
  biggest BIGINT
) WITH ('connector' = 'print');

INSERT INTO counts
SELECT window_start, window_end, key, COUNT(*), MAX(`value`)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND))
GROUP BY window_start, window_end, key;
