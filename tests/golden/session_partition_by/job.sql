-- SESSION windows per key (PARTITION BY key), gap 2 s: an event opens [ts, ts+2000)
-- and joins a session it overlaps; a session is [first ts, last ts + 2000).
--   a: 10000, 11000, 12500 -> [10000,14500) count 3, sum 1+4+8 = 13
--      17000 (>= 14500)    -> [17000,19000) count 1, sum 32
--   b: 10500               -> [10500,12500) count 1, sum 2
--      13000, 14000, 15900 -> [13000,17900) count 3, sum 16+64+128 = 208
--   c: 20000 -> [20000,22000) and 23000 -> [23000,25000) are apart until 21500
--      arrives (out of order, but after the watermark 21000) and bridges them:
--      [20000,25000) count 3, sum 256+512+1024 = 1792
-- @summary: events in: 11  results out: 5  late events: 0  dead letters: 0

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
FROM TABLE(SESSION(TABLE events PARTITION BY key, DESCRIPTOR(ts), INTERVAL '2' SECOND))
GROUP BY window_start, window_end, key;
