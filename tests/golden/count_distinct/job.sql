-- TUMBLE 10 s per key: COUNT(*), COUNT(value) and COUNT(DISTINCT value). The empty
-- value at 14000 is NULL: COUNT(*) counts the row, COUNT(value) and
-- COUNT(DISTINCT value) do not.
--   [10000,20000) a: 1, 2, 1, 2    -> 4 rows, 4 values, distinct {1, 2} = 2
--                 b: 1, NULL, 3    -> 3 rows, 2 values, distinct {1, 3} = 2
--   [20000,30000) a: 5, 5          -> 2 rows, 2 values, distinct {5} = 1
--                 b: 5             -> 1 row,  1 value,  distinct {5} = 1
-- @summary: events in: 10  results out: 4  late events: 0  dead letters: 0

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

CREATE TABLE distincts (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  key STRING,
  `rows` BIGINT,
  `values` BIGINT,
  distinct_values BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{{OUT}}', 'format' = 'csv');

INSERT INTO distincts
SELECT window_start, window_end, key, COUNT(*), COUNT(`value`), COUNT(DISTINCT `value`)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
