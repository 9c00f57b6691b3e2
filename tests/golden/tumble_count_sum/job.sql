-- TUMBLE 5 s, COUNT(*) and SUM(value) per key.
-- Expected windows (ts in ms, windows [start, end)):
--   [10000,15000)  a: 10000,12999,14999 -> count 3, sum 1+3+4 = 8
--                  b: 10500             -> count 1, sum 2
--   [15000,20000)  a: 19999 -> 1, 7    b: 15000 -> 1, 5    c: 16000 -> 1, 6
--   [20000,25000)  a: 21000,22000 -> 2, 9+11 = 20    b: 20000 -> 1, 8    c: 24999 -> 1, 10
-- (15000 and 20000 start a new window: the end is exclusive.)
-- @summary: events in: 11  results out: 8  late events: 0  dead letters: 0

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

CREATE TABLE results (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  key STRING,
  events BIGINT,
  total BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{{OUT}}', 'format' = 'csv');

INSERT INTO results
SELECT window_start, window_end, key, COUNT(*), SUM(`value`)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND))
GROUP BY window_start, window_end, key;
