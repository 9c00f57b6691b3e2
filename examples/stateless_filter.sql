-- A stateless job: keep the large values, derive a column, write JSON lines.
--   cargo run --release -- run examples/stateless_filter.sql
-- writes part files into /tmp/tidewater-big-values/

CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT
) WITH (
  'connector' = 'filesystem',
  'path' = 'examples/data/events.csv',
  'format' = 'csv',
  'csv.header' = 'true'
);

CREATE TABLE big_values (
  key STRING,
  `value` BIGINT,
  doubled BIGINT,
  ts TIMESTAMP(3)
) WITH (
  'connector' = 'filesystem',
  'path' = '/tmp/tidewater-big-values',
  'format' = 'json'
);

INSERT INTO big_values
SELECT UPPER(key), `value`, `value` * 2, TO_TIMESTAMP_LTZ(ts_ms, 3)
FROM events
WHERE `value` >= 995;
