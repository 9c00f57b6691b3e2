-- TUMBLE 10 s, MIN / MAX / AVG of a BIGINT per key. AVG of a BIGINT is a BIGINT
-- truncated toward zero, as in Flink (Java long division): -3/2 = -1, not -2.
--   [10000,20000) a: 1, 2       -> min 1,  max 2,  avg 3/2 = 1
--                 b: -1, -2     -> min -2, max -1, avg -3/2 = -1
--                 c: 10, 3, 4   -> min 3,  max 10, avg 17/3 = 5
--   [20000,30000) a: 7          -> 7, 7, 7
--                 b: -7, 4      -> min -7, max 4,  avg -3/2 = -1
-- @summary: events in: 10  results out: 5  late events: 0  dead letters: 0

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

CREATE TABLE stats (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  key STRING,
  smallest BIGINT,
  biggest BIGINT,
  mean BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{{OUT}}', 'format' = 'csv');

INSERT INTO stats
SELECT window_start, window_end, key, MIN(`value`), MAX(`value`), AVG(`value`)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
