-- JSON lines ('format' = 'json'), fields in any order, event time a TIMESTAMP(3)
-- column read from text. TUMBLE 5 s, SUM(amount) and COUNT(*) per user:
--   [12:00:00,12:00:05) u1: 10 + 7 = 17 (2)   u2: 5 (1)
--   [12:00:05,12:00:10) u1: 1 (1)             u2: 20 (1)   (12:00:05.000 starts it)
--   [12:00:10,12:00:15) u3: 100 (1)
-- @summary: events in: 6  results out: 5  late events: 0  dead letters: 0

CREATE TABLE clicks (
  `user` STRING,
  amount BIGINT,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = '{{DIR}}/input.jsonl',
  'format' = 'json'
);

CREATE TABLE per_user (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  `user` STRING,
  total BIGINT,
  clicks BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{{OUT}}', 'format' = 'csv');

INSERT INTO per_user
SELECT window_start, window_end, `user`, SUM(amount), COUNT(*)
FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '5' SECOND))
GROUP BY window_start, window_end, `user`;
