-- Late events are dropped and counted. 'source.chunk-size' = '64' and lines longer
-- than 64 bytes make every line its own batch, and the watermark (max ts - 2000)
-- advances after each batch. Run with -p 1 only (one source subtask, so the order
-- of batches and watermarks is the file's). TUMBLE 5 s, COUNT(*), SUM(value):
--   a@11000 wm  9000
--   a@16000 wm 14000   [10000,15000) not fired yet (fires at wm >= 14999)
--   a@14500            on time: its window has not fired -> counted
--   b@16999 wm 14999   [10000,15000) fires: a 2 events, 1+4 = 5
--   a@13000            LATE (its window fired): dropped
--   b@22000 wm 20000   [15000,20000) fires: a 1 event (2), b 1 event (8)
--   a@19999            LATE ([15000,20000) fired at wm 20000 >= 19999): dropped
--   b@20000            on time: [20000,25000) fires at the end of input: b 32+128
-- @parallelism: 1
-- @summary: events in: 8  results out: 4  late events: 2  dead letters: 0

CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT,
  padding STRING,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = '{{DIR}}/input.csv',
  'format' = 'csv',
  'csv.header' = 'true',
  'source.chunk-size' = '64'
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
