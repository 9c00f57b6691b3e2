-- Stateless scalar expressions: UPPER, arithmetic, CAST to STRING and concatenation,
-- TO_TIMESTAMP_LTZ (written as UTC), CHAR_LENGTH (characters, not bytes), and a WHERE
-- on an expression (value * 2 > 5 keeps Cd (6) and Éé (20), drops ab (2) and x (-8)).
--   Cd: CD, 6, '3!', 1700000000123 ms = 2023-11-14 22:13:20.123 UTC, 2
--   Éé: ÉÉ, 20, '10!', 86400000 ms = 1970-01-02 00:00:00.000, 2 (4 bytes in UTF-8)
-- @summary: events in: 4  results out: 2  late events: 0  dead letters: 0

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

CREATE TABLE derived (
  big_key STRING,
  doubled BIGINT,
  label STRING,
  ts TIMESTAMP(3),
  key_chars INT
) WITH ('connector' = 'filesystem', 'path' = '{{OUT}}', 'format' = 'csv');

INSERT INTO derived
SELECT UPPER(key), `value` * 2, CAST(`value` AS STRING) || '!',
       TO_TIMESTAMP_LTZ(ts_ms, 3), CHAR_LENGTH(key)
FROM events
WHERE `value` * 2 > 5;
