-- CUMULATE step 2 s, max size 6 s: periods [12000,18000), [18000,24000), ...; within a
-- period p the windows are [p, p+2000), [p, p+4000), [p, p+6000). An event is in every
-- window of its period whose end is after it.
--   a@12000 (1), a@13999 (2) -> [12000,14000) [12000,16000) [12000,18000)
--   b@14500 (4)              -> [12000,16000) [12000,18000)
--   a@17999 (8)              -> [12000,18000)
--   a@18000 (16)             -> [18000,20000) [18000,22000) [18000,24000)
--   b@23000 (32)             -> [18000,24000)
-- a: [12000,14000) 3 (2), [12000,16000) 3 (2), [12000,18000) 1+2+8 = 11 (3),
--    [18000,20000) [18000,22000) [18000,24000) 16 (1)
-- b: [12000,16000) 4 (1), [12000,18000) 4 (1), [18000,24000) 32 (1)
-- @summary: events in: 6  results out: 9  late events: 0  dead letters: 0

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

CREATE TABLE sums (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  key STRING,
  total BIGINT,
  events BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{{OUT}}', 'format' = 'csv');

INSERT INTO sums
SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
FROM TABLE(CUMULATE(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND))
GROUP BY window_start, window_end, key;
