-- An event behind the watermark still belongs to the HOP windows that have not fired.
-- HOP slide 2 s, size 10 s, watermark = max ts (no delay); one line per batch
-- ('source.chunk-size' = '64', lines over 64 bytes), -p 1.
--   a@10000 (1)  wm 10000   windows [2000,12000) .. [10000,20000), none fired
--   a@13000 (2)  wm 13000   [2000,12000) fires: 1 (1 event)
--   a@11000 (4)             its windows are [2000,12000) (fired) and [4000,14000),
--                           [6000,16000), [8000,18000), [10000,20000) (not fired):
--                           Flink adds it to the four open windows and drops nothing.
-- Expected: [2000,12000) 1 (1); [4000,14000) .. [10000,20000) 1+2+4 = 7 (3 each);
-- [12000,22000) 2 (1).
-- @parallelism: 1
-- @summary: events in: 3  results out: 6  late events: 0  dead letters: 0

CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT,
  padding STRING,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts
) WITH (
  'connector' = 'filesystem',
  'path' = '{{DIR}}/input.csv',
  'format' = 'csv',
  'csv.header' = 'true',
  'source.chunk-size' = '64'
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
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
