-- A stateless job (no watermark, no window): keep rows with value >= 10 whose key is
-- not 'b'. Of the 7 rows, a,10 / c,11 / a,99 pass; a,5 and c,9 are too small and
-- both b rows are excluded by key.
-- @summary: events in: 7  results out: 3  late events: 0  dead letters: 0

CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT
) WITH (
  'connector' = 'filesystem',
  'path' = '{{DIR}}/input.csv',
  'format' = 'csv',
  'csv.header' = 'true'
);

CREATE TABLE kept (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{{OUT}}', 'format' = 'csv');

INSERT INTO kept
SELECT key, `value`, ts_ms
FROM events
WHERE `value` >= 10 AND key <> 'b';
