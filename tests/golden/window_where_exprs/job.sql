-- A windowed query with a WHERE filter and scalar expressions around the aggregates:
-- TUMBLE 5 s, WHERE value > 0 AND key <> 'x', SELECT UPPER(key), SUM(value) * 2,
-- CAST(COUNT(*) AS STRING) || ' events' and window_time (= window_end - 1 ms).
-- The rows a,-5 (value <= 0) and both x rows are filtered out.
--   [10000,15000) a: 1, 3 -> A, 8, '2 events'    b: 2 -> B, 4, '1 events'
--   [15000,20000) b: 4    -> B, 8, '1 events'
-- @summary: events in: 7  results out: 3  late events: 0  dead letters: 0

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
  window_time TIMESTAMP(3),
  big_key STRING,
  doubled BIGINT,
  label STRING
) WITH ('connector' = 'filesystem', 'path' = '{{OUT}}', 'format' = 'csv');

INSERT INTO results
SELECT window_start, window_end, window_time, UPPER(key), SUM(`value`) * 2,
       CAST(COUNT(*) AS STRING) || ' events'
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND))
WHERE `value` > 0 AND key <> 'x'
GROUP BY window_start, window_end, key;
