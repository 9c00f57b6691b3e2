-- HOP slide 2 s, size 3 s: the size is not a multiple of the slide. Windows are
-- [s, s+3000) with s a multiple of 2000, so an event is in two windows when
-- ts mod 2000 < 1000 and in one otherwise.
--   a@10000 (1)  -> [8000,11000) [10000,13000)
--   a@10999 (2)  -> [8000,11000) [10000,13000)
--   a@11000 (4)  -> [10000,13000)             (11000 is the end of [8000,11000))
--   b@12500 (8)  -> [10000,13000) [12000,15000)
--   a@13000 (16) -> [12000,15000)             (13000 is the end of [10000,13000))
--   b@15500 (32) -> [14000,17000)
-- a: [8000,11000) 1+2 = 3 (2), [10000,13000) 1+2+4 = 7 (3), [12000,15000) 16 (1)
-- b: [10000,13000) 8 (1), [12000,15000) 8 (1), [14000,17000) 32 (1)
-- @summary: events in: 6  results out: 6  late events: 0  dead letters: 0

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
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '3' SECOND))
GROUP BY window_start, window_end, key;
