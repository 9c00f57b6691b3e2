-- Input delimited by ';' ('csv.field-delimiter'), so a ',' inside a key needs no
-- quotes, and a quoted "q;r" is one field. The sink writes ',' CSV, which quotes x,y.
-- TUMBLE 10 s, COUNT(*) and SUM(value) per key:
--   [10000,20000) x,y: 1, 4 -> 2, 5     q;r: 2 -> 1, 2
--   [20000,30000) plain: 8  -> 1, 8
-- @summary: events in: 4  results out: 3  late events: 0  dead letters: 0

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
  'csv.header' = 'true',
  'csv.field-delimiter' = ';'
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
