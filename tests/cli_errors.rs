//! Mistakes a user makes in a job file or on the command line: each must stop the job
//! before it starts, with a non-zero exit status and a short message on stderr that
//! names the problem (ARCHITECTURE.md, "Bad input": configuration errors are caught
//! before the job starts, with a message that names the field and what is wrong;
//! panics are bugs). Never a panic or a backtrace, even with RUST_BACKTRACE=1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tidewater");

/// A valid job: the classic HOP aggregation from `{{DIR}}/events.csv` into `{{DIR}}/out`.
/// Line numbers matter: the INSERT starts on line 22, SELECT is line 23, FROM 24, GROUP BY 25.
const GOOD_JOB: &str = "\
CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = '{{DIR}}/events.csv',
  'format' = 'csv',
  'csv.header' = 'true'
);

CREATE TABLE sums (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  key STRING,
  total BIGINT,
  events BIGINT
) WITH ('connector' = 'filesystem', 'path' = '{{DIR}}/out', 'format' = 'csv');

INSERT INTO sums
SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
";

const EVENTS: &str = "key,value,ts_ms\na,1,1000\nb,2,2000\na,3,3000\n";

/// Replaces exactly one occurrence of `from` in `text`.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "test bug: '{from}' must occur exactly once"
    );
    text.replacen(from, to, 1)
}

/// Runs `tidewater <args..>` where `{{DIR}}` in the args and the job stands for a fresh
/// temporary directory holding `events.csv` and `job.sql` (made from `job`).
fn run_job(job: &str, args: &[&str]) -> (Output, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let dir = tmp
        .path()
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp dir"));
    std::fs::write(tmp.path().join("events.csv"), EVENTS)
        .unwrap_or_else(|e| panic!("write events: {e}"));
    std::fs::write(tmp.path().join("job.sql"), job.replace("{{DIR}}", dir))
        .unwrap_or_else(|e| panic!("write job: {e}"));
    let out = Command::new(BIN)
        .args(args.iter().map(|a| a.replace("{{DIR}}", dir)))
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    (out, tmp)
}

/// Runs `tidewater run job.sql -p 1` on `job`.
fn run(job: &str) -> (Output, tempfile::TempDir) {
    run_job(job, &["run", "{{DIR}}/job.sql", "-p", "1"])
}

/// A clean failure: non-zero exit, a short stderr without panic or backtrace that
/// contains every string of `needles`. Returns stderr.
fn assert_clean_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a failure, got {}; stderr:\n{err}",
        out.status
    );
    assert!(
        out.status.code().is_some(),
        "killed by a signal ({}); stderr:\n{err}",
        out.status
    );
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "internal error"] {
        assert!(!err.contains(bad), "stderr mentions '{bad}':\n{err}");
    }
    let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(
        (1..10).contains(&lines),
        "stderr should be 1 to 9 lines, is {lines}:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr does not mention '{n}':\n{err}");
    }
    err
}

/// Asserts that the error is located at one of `lines`: the statement's first line or
/// the line of the offending expression are both fine.
fn assert_line_in(err: &str, lines: std::ops::RangeInclusive<u64>) {
    let at = err
        .find("line ")
        .unwrap_or_else(|| panic!("no line number in:\n{err}"));
    let n: u64 = err[at + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no line number in:\n{err}"));
    assert!(
        lines.contains(&n),
        "error at line {n}, expected {lines:?}:\n{err}"
    );
}

fn no_part_files(dir: &Path) {
    let out = dir.join("out");
    let parts = std::fs::read_dir(&out)
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    assert_eq!(
        parts, 0,
        "the job wrote output although it should not start"
    );
}

#[test]
fn the_good_job_runs() {
    // The baseline every other test edits: it must succeed, or the tests below prove
    // nothing.
    let (out, tmp) = run(GOOD_JOB);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let parts = std::fs::read_dir(tmp.path().join("out"))
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    assert!(parts > 0, "no part files written");
}

#[test]
fn missing_input_path() {
    let job = edit(GOOD_JOB, "{{DIR}}/events.csv", "{{DIR}}/no-such-events.csv");
    let (out, tmp) = run(&job);
    assert_clean_error(
        &out,
        &[
            "table 'events'",
            "'path'",
            "no-such-events.csv",
            "does not exist",
        ],
    );
    no_part_files(tmp.path());
}

#[test]
fn unknown_connector_suggests_the_right_one() {
    let job = edit(
        GOOD_JOB,
        "'connector' = 'filesystem',\n",
        "'connector' = 'filesystm',\n",
    );
    let (out, _tmp) = run(&job);
    assert_clean_error(
        &out,
        &["table 'events'", "'filesystm'", "did you mean 'filesystem'"],
    );
}

#[test]
fn misspelled_option_suggests_the_right_one() {
    let job = edit(
        GOOD_JOB,
        "'path' = '{{DIR}}/events.csv'",
        "'pth' = '{{DIR}}/events.csv'",
    );
    let (out, _tmp) = run(&job);
    assert_clean_error(&out, &["table 'events'", "'pth'", "did you mean 'path'"]);
}

#[test]
fn misspelled_sink_option_names_the_sink_table() {
    let job = edit(GOOD_JOB, "'format' = 'csv');", "'fromat' = 'csv');");
    let (out, _tmp) = run(&job);
    assert_clean_error(&out, &["table 'sums'", "'fromat'", "did you mean 'format'"]);
}

#[test]
fn syntax_error_in_the_query_has_line_and_column() {
    // Line 23 is "SELECT window_start, ..."; the misspelled keyword is at column 1.
    let job = edit(GOOD_JOB, "SELECT window_start", "SELEC window_start");
    let (out, _tmp) = run(&job);
    let err = assert_clean_error(&out, &["line 23", "column 1", "SELEC"]);
    assert!(err.contains("SQL error"), "{err}");
}

#[test]
fn syntax_error_in_a_create_table_has_its_line() {
    // Line 3 loses the comma after `value` BIGINT, so line 4 continues the column
    // definition: the error is at `ts_ms` on line 4, column 3.
    let job = edit(GOOD_JOB, "  `value` BIGINT,\n", "  `value` BIGINT\n");
    let (out, _tmp) = run(&job);
    assert_clean_error(&out, &["line 4", "column 3", "ts_ms"]);
}

#[test]
fn sum_of_a_string_is_a_type_error() {
    let job = edit(GOOD_JOB, "SUM(`value`)", "SUM(key)");
    let (out, tmp) = run(&job);
    // The INSERT starts on line 22; SUM(key) is on line 23.
    let err = assert_clean_error(&out, &["SQL error", "SUM(key)", "cannot aggregate"]);
    assert_line_in(&err, 22..=23);
    no_part_files(tmp.path());
}

#[test]
fn where_on_a_string_is_a_type_error() {
    let job = edit(
        GOOD_JOB,
        "GROUP BY window_start",
        "WHERE key\nGROUP BY window_start",
    );
    let (out, _tmp) = run(&job);
    assert_clean_error(
        &out,
        &[
            "SQL error",
            "line 25, column 7",
            "WHERE key",
            "not a boolean",
        ],
    );
}

#[test]
fn string_into_a_bigint_sink_column_is_rejected_by_the_planner() {
    // Flink: "Incompatible types for sink column 'amount' at position 0".
    let job = "\
CREATE TABLE events (key STRING, `value` BIGINT, ts_ms BIGINT)
WITH ('connector' = 'filesystem', 'path' = '{{DIR}}/events.csv', 'format' = 'csv', 'csv.header' = 'true');
CREATE TABLE amounts (amount BIGINT)
WITH ('connector' = 'filesystem', 'path' = '{{DIR}}/out', 'format' = 'csv');
INSERT INTO amounts SELECT key FROM events;
";
    let (out, tmp) = run(job);
    assert_clean_error(&out, &["SQL error", "line 5", "amount", "STRING", "BIGINT"]);
    no_part_files(tmp.path());
}

#[test]
fn unknown_source_table_lists_the_declared_ones() {
    let job = edit(GOOD_JOB, "TABLE events,", "TABLE evnts,");
    let (out, _tmp) = run(&job);
    // The INSERT starts on line 22; `evnts` is on line 24.
    let err = assert_clean_error(&out, &["unknown table 'evnts'", "events, sums"]);
    assert_line_in(&err, 22..=24);
}

#[test]
fn unknown_sink_table_lists_the_declared_ones() {
    let job = edit(GOOD_JOB, "INSERT INTO sums", "INSERT INTO sumz");
    let (out, _tmp) = run(&job);
    assert_clean_error(&out, &["line 22", "unknown table 'sumz'", "events, sums"]);
}

#[test]
fn missing_job_file() {
    let (out, _tmp) = run_job(GOOD_JOB, &["run", "{{DIR}}/no-such-job.sql"]);
    assert_clean_error(&out, &["cannot read job file", "no-such-job.sql"]);
}

#[test]
fn unknown_set_key_suggests_the_right_one() {
    let job = format!("SET 'parallelism.defualt' = '2';\n{GOOD_JOB}");
    let (out, _tmp) = run(&job);
    assert_clean_error(
        &out,
        &[
            "line 1",
            "unknown setting 'parallelism.defualt'",
            "did you mean 'parallelism.default'",
        ],
    );
}

#[test]
fn explain_reports_the_same_errors() {
    let job = edit(
        GOOD_JOB,
        "'connector' = 'filesystem',\n",
        "'connector' = 'filesystm',\n",
    );
    let (out, _tmp) = run_job(&job, &["explain", "{{DIR}}/job.sql"]);
    assert_clean_error(&out, &["'filesystm'", "did you mean 'filesystem'"]);
}

/// GOOD_JOB reading and writing Kafka at a port where nothing listens.
fn kafka_job(sink_extra: &str) -> String {
    let kafka = "'connector' = 'kafka', 'topic' = 'events', \
                 'properties.bootstrap.servers' = '127.0.0.1:1', 'format' = 'json'";
    let job = edit(
        GOOD_JOB,
        "  'connector' = 'filesystem',\n  'path' = '{{DIR}}/events.csv',\n  'format' = 'csv',\n  'csv.header' = 'true'\n",
        &format!(
            "  {kafka}, 'properties.group.id' = 'g', 'key.format' = 'raw', 'key.fields' = 'key',\n  \
             'properties.socket.connection.setup.timeout.ms' = '1500',\n  \
             'properties.sasl.password' = 'hunter2-secret'\n"
        ),
    );
    edit(
        &job,
        "WITH ('connector' = 'filesystem', 'path' = '{{DIR}}/out', 'format' = 'csv')",
        &format!("WITH ({kafka}{sink_extra})"),
    )
}

#[test]
fn kafka_unreachable_at_start_fails_after_the_documented_limit() {
    let (out, _tmp) = run(&kafka_job(""));
    let err = assert_clean_error(
        &out,
        &[
            "cannot reach kafka at 127.0.0.1:1 within 1500 ms",
            "properties.socket.connection.setup.timeout.ms",
        ],
    );
    assert!(!err.contains("hunter2"), "a secret was printed:\n{err}");
}

#[test]
fn kafka_secrets_never_reach_explain() {
    let (out, _tmp) = run_job(&kafka_job(""), &["explain", "{{DIR}}/job.sql"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "explain failed:\n{text}");
    assert!(
        text.contains("sasl.password"),
        "explain hides the option name:\n{text}"
    );
    assert!(!text.contains("hunter2"), "a secret was printed:\n{text}");
    assert!(
        text.contains("Partition tasks"),
        "explain does not say how Kafka runs:\n{text}"
    );
}

#[test]
fn kafka_exactly_once_needs_a_transactional_id_prefix() {
    let (out, _tmp) = run(&kafka_job(", 'sink.delivery-guarantee' = 'exactly-once'"));
    assert_clean_error(
        &out,
        &[
            "table 'sums'",
            "'sink.transactional-id-prefix'",
            "is required",
        ],
    );
}

#[test]
fn kafka_transaction_headers_need_exactly_once() {
    let (out, _tmp) = run(&kafka_job(", 'sink.transaction-headers' = 'true'"));
    assert_clean_error(
        &out,
        &[
            "table 'sums'",
            "'sink.transaction-headers'",
            "applies only with 'sink.delivery-guarantee' = 'exactly-once'",
        ],
    );
}

#[test]
fn kafka_source_into_a_file_sink_is_refused() {
    let job = edit(
        &kafka_job(""),
        "'connector' = 'kafka', 'topic' = 'events', 'properties.bootstrap.servers' = '127.0.0.1:1', 'format' = 'json')",
        "'connector' = 'filesystem', 'path' = '{{DIR}}/out', 'format' = 'csv')",
    );
    let (out, _tmp) = run(&job);
    assert_clean_error(
        &out,
        &["table 'sums'", "a job reading kafka writes to 'kafka'"],
    );
}

/// Input keyed otherwise is repartitioned through an internal topic named after the
/// input topic, so it must be one named topic.
#[test]
fn kafka_input_keyed_otherwise_needs_one_named_topic() {
    let job = edit(
        &kafka_job(""),
        "'key.fields' = 'key'",
        "'key.fields' = 'ts_ms'",
    );
    let job = edit(&job, "'key.format' = 'raw'", "'key.format' = 'json'");
    let source = "'topic' = 'events', 'properties.bootstrap.servers' = '127.0.0.1:1', \
                  'format' = 'json', 'properties.group.id'";
    let job = edit(
        &job,
        source,
        &source.replace("'topic' = 'events'", "'topic-pattern' = 'ev.*'"),
    );
    let (out, _tmp) = run(&job);
    assert_clean_error(
        &out,
        &[
            "table 'events'",
            "'topic-pattern'",
            "repartitions",
            "one named 'topic'",
            "'key.fields' = 'key'",
        ],
    );
}

#[test]
fn kafka_input_keyed_otherwise_is_repartitioned_in_explain() {
    let job = edit(
        &kafka_job(""),
        "'key.fields' = 'key'",
        "'key.fields' = 'ts_ms'",
    );
    let job = edit(&job, "'key.format' = 'raw'", "'key.format' = 'json'");
    let (out, _tmp) = run_job(&job, &["explain", "{{DIR}}/job.sql"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "explain failed: {out:?}");
    assert!(
        text.contains("repartition by the grouping key into 'g-events-repartition'")
            && text.contains("window tasks"),
        "no repartition in the plan:\n{text}"
    );
    // Keyed by the grouping key: no repartition.
    let (out, _tmp) = run_job(&kafka_job(""), &["explain", "{{DIR}}/job.sql"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("every partition of 'events' is a task") && !text.contains("repartition"),
        "a keyed job repartitions:\n{text}"
    );
}
