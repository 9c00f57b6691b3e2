-- Bursts of activity per key: a session closes after 500 ms without an event.
-- Only the rarer keys (k40..k49) are kept, so sessions are visible.
--   cargo run --release -- run examples/session_windows.sql

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

CREATE TABLE sessions (
  session_start TIMESTAMP(3),
  session_end TIMESTAMP(3),
  key STRING,
  events BIGINT,
  avg_value BIGINT
) WITH ('connector' = 'print');

INSERT INTO sessions
SELECT window_start, window_end, key, COUNT(*), AVG(`value`)
FROM TABLE(SESSION(TABLE events PARTITION BY key, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND))
WHERE key >= 'k40' AND CHAR_LENGTH(key) = 3
GROUP BY window_start, window_end, key;
