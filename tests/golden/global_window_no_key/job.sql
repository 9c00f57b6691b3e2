-- A window aggregation without a grouping key (GROUP BY window_start, window_end
-- only): TUMBLE 10 s over all events, COUNT(*), COUNT(DISTINCT key) and
-- COUNT(DISTINCT value). The empty value at 14000 is NULL: COUNT(*) counts the row,
-- COUNT(DISTINCT value) ignores it.
--   [10000,20000) rows 6; keys {a, b, c} -> 3; values {1, 2} -> 2
--   [20000,30000) rows 2; keys {a} -> 1; values {5} -> 1
-- @summary: events in: 8  results out: 2  late events: 0  dead letters: 0

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
  events BIGINT,
  keys BIGINT,
  distinct_values BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{{OUT}}', 'format' = 'csv');

INSERT INTO distincts
SELECT window_start, window_end, COUNT(*), COUNT(DISTINCT key), COUNT(DISTINCT `value`)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
