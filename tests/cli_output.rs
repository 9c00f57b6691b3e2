//! What the CLI prints besides results: `explain --format dot`, JSON log lines, the
//! summary with emit latency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn tidewater(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn explain_as_graphviz_dot() {
    let out = tidewater(&[
        "explain",
        "examples/sliding_sum.sql",
        "-p",
        "3",
        "--format",
        "dot",
    ]);
    assert!(out.status.success());
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(dot.starts_with("digraph tidewater {"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    assert!(dot.contains("s0 -> s1 [label=\"hash(key)\"]"), "{dot}");
    assert!(dot.contains("source events (parallelism 3)"), "{dot}");
    assert!(dot.contains("window (parallelism 3)"), "{dot}");
    assert!(
        dot.contains("Window[HOP size 10000 ms slide 2000 ms"),
        "{dot}"
    );
    // Every quote inside a label is escaped: labels open and close in pairs per line.
    for line in dot.lines().filter(|l| l.contains("label=")) {
        let unescaped = line.matches('"').count() - line.matches("\\\"").count();
        assert_eq!(unescaped % 2, 0, "{line}");
    }
    let bad = tidewater(&["explain", "examples/sliding_sum.sql", "--format", "svg"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn json_logs_are_one_object_per_line_and_the_summary_reports_latency() {
    let out = tidewater(&[
        "--log-format",
        "json",
        "run",
        "examples/sliding_sum.sql",
        "-p",
        "2",
        "--http",
        "off",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let json: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = json
        .iter()
        .filter_map(|j| j["fields"]["message"].as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("job 'sliding_sum' started")),
        "{err}"
    );
    assert!(
        messages.iter().any(|m| m.contains("finished its input")),
        "{err}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("job 'sliding_sum' finished")),
        "{err}"
    );
    let finished = json
        .iter()
        .find(|j| {
            j["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("job 'sliding_sum' finished"))
        })
        .unwrap();
    assert_eq!(finished["fields"]["events_in"], 20_000);
    assert!(err.contains("events in: 20000"), "{err}");
    assert!(err.contains("emit latency"), "{err}");
}

#[test]
fn every_example_job_plans() {
    // The front door: each example job file must at least plan (explain needs no
    // broker and reads no input).
    let mut seen = 0;
    for e in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "sql") {
            continue;
        }
        let out = tidewater(&["explain", path.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        if path.ends_with("kafka_sliding_sum.sql") {
            assert!(
                text.contains("Partition tasks") && !text.contains("repartition"),
                "{text}"
            );
        }
        if path.ends_with("kafka_repartitioned_sliding_sum.sql") {
            assert!(
                text.contains("repartition by the grouping key") && text.contains("window tasks"),
                "{text}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 7, "only {seen} example jobs");
}

/// The status page's graph of a Kafka job: one stage of partition tasks, or, when the
/// job repartitions, input tasks and window tasks behind the repartition topic.
#[test]
fn kafka_graphs_show_the_kinds_of_task() {
    let graph = |file: &str| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/").to_string() + file;
        tidewater::Job::from_file(&path, &tidewater::JobOptions::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .graph()
    };
    let keyed = graph("kafka_sliding_sum.sql");
    let stages = keyed["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 1, "{keyed}");
    assert_eq!(stages[0]["name"], "partition tasks of events", "{keyed}");
    let names = |s: &serde_json::Value| s["operators"].to_string();
    assert!(names(&stages[0]).contains("Window"), "{keyed}");

    let split = graph("kafka_repartitioned_sliding_sum.sql");
    let stages = split["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "{split}");
    assert_eq!(stages[0]["name"], "input tasks of events", "{split}");
    assert!(!names(&stages[0]).contains("Window"), "{split}");
    assert_eq!(stages[1]["name"], "window tasks", "{split}");
    assert!(names(&stages[1]).contains("Window"), "{split}");
    assert_eq!(
        stages[1]["input"], "repartition topic, hash(key)",
        "{split}"
    );
}
