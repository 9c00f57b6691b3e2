-- The classic job: HOP slide 2 s, size 10 s, SUM(value) and COUNT(*) per key.
-- Windows start at multiples of 2000 ms; an event at ts is in every [s, s+10000)
-- with s <= ts < s+10000, i.e. 5 windows each.
--   a@10000 (1): starts 2000..10000     a@11500 (2): starts 2000..10000
--   a@17000 (8): starts 8000..16000     b@13000 (4): starts 4000..12000
--   c@25000 (16): starts 16000..24000
-- So for a: [2000,12000) [4000,14000) [6000,16000) hold 1+2 = 3 (2 events),
-- [8000,18000) [10000,20000) hold 1+2+8 = 11 (3 events), [12000,22000) [14000,24000)
-- [16000,26000) hold 8 (1 event); b has 5 windows of 4 (1), c 5 windows of 16 (1).
-- @summary: events in: 5  results out: 18  late events: 0  dead letters: 0

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
