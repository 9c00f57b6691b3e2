-- Reads CSV `key,value,ts_ms` lines from standard input and prints the large values.
--   tail -n +2 examples/data/events.csv | cargo run --release -- run examples/stdin_filter.sql

CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT
) WITH ('connector' = 'stdin', 'format' = 'csv');

CREATE TABLE out (key STRING, `value` BIGINT) WITH ('connector' = 'print');

INSERT INTO out SELECT key, `value` FROM events WHERE `value` > 990;
