-- SESSION windows without PARTITION BY, gap 2 s, over a single key (so sessions over
-- the whole table and per key agree). An event opens [ts, ts+2000) and joins every
-- session it overlaps; a session is [first ts, last ts + 2000).
--   10000, 11000, 12500 -> [10000,14500) count 3, sum 1+2+4 = 7
--   15000 (>= 14500), 16999 (1999 later) -> [15000,18999) count 2, sum 8+16 = 24
--   21000 -> [21000,23000) and 24000 -> [24000,26000) are apart until 22500 arrives
--   (out of order, but after the watermark 22000) and bridges them:
--   [21000,26000) count 3, sum 32+64+128 = 224
-- @summary: events in: 8  results out: 3  late events: 0  dead letters: 0

CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = '{{DIR}}/input.csv',
  'format' = 'csv',
  'csv.header' = 'true'
);

CREATE TABLE sessions (
  session_start TIMESTAMP(3),
  session_end TIMESTAMP(3),
  key STRING,
  events BIGINT,
  total BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{{OUT}}', 'format' = 'csv');

INSERT INTO sessions
SELECT window_start, window_end, key, COUNT(*), SUM(`value`)
FROM TABLE(SESSION(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND))
GROUP BY window_start, window_end, key;
