-- 'path' is a directory: its files are read in name order (01, 02, 03), each with
-- its own header line; hidden files (.hidden.csv) and files starting with '_'
-- (_temporary.csv) are skipped, so their 1000s never show up.
-- TUMBLE 10 s, COUNT(*) and SUM(value) per key:
--   [10000,20000) a: 1 (01), 4 (02) -> 2, 5      b: 2 (01), 8 (02) -> 2, 10
--   [20000,30000) a: 16 (02) -> 1, 16            b: 32 (03) -> 1, 32
--   [30000,40000) a: 64 (03) -> 1, 64
-- @summary: events in: 7  results out: 5  late events: 0  dead letters: 0

CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = '{{DIR}}/input',
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
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
