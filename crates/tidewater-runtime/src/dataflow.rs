//! The shape of a job: a source stage, then stages joined by partitionings.

use std::fmt::Write as _;

use crate::{Operator, SourceReader};

/// Operators that run one after the other on one thread.
pub type Chain = Vec<Box<dyn Operator>>;

/// How rows travel from one stage to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask i sends to subtask i (same parallelism).
    Forward,
    /// Rows go to the subtask owning `hash(columns) % KEY_GROUPS`.
    Hash {
        /// Indices of the key columns in the batches crossing the edge.
        columns: Vec<usize>,
        /// Their names, for `explain`.
        names: Vec<String>,
    },
}

fn edge_label(p: &Partitioning) -> String {
    match p {
        Partitioning::Forward => "forward".to_string(),
        Partitioning::Hash { names, .. } => format!("hash({})", names.join(", ")),
    }
}

/// The source stage: one reader and one chain per subtask.
#[derive(Debug)]
pub struct SourceStage {
    /// Name for `explain` (the table).
    pub name: String,
    /// One reader per subtask.
    pub readers: Vec<Box<dyn SourceReader>>,
    /// One chain per subtask, fed by the reader of the same index.
    pub chains: Vec<Chain>,
}

/// A downstream stage.
#[derive(Debug)]
pub struct Stage {
    /// Name for `explain`.
    pub name: String,
    /// How its input is partitioned.
    pub input: Partitioning,
    /// One chain per subtask.
    pub chains: Vec<Chain>,
}

/// A whole job graph.
#[derive(Debug)]
pub struct Dataflow {
    /// Where data enters.
    pub source: SourceStage,
    /// What follows, in order.
    pub stages: Vec<Stage>,
    /// Capacity, in messages, of every channel (the backpressure bound).
    pub channel_capacity: usize,
}

impl Dataflow {
    /// One line per stage naming its input edge and operators: what a checkpoint's state
    /// belongs to. Parallelism is left out (keyed state is redistributed on restore).
    pub fn plan_lines(&self) -> Vec<String> {
        let ops = |c: Option<&Chain>| -> String {
            c.map(|c| c.iter().map(|o| o.name()).collect::<Vec<_>>().join(" -> "))
                .unwrap_or_default()
        };
        let mut lines = vec![format!(
            "source '{}': {}",
            self.source.name,
            ops(self.source.chains.first())
        )];
        for st in &self.stages {
            let edge = match &st.input {
                Partitioning::Forward => "forward".to_string(),
                Partitioning::Hash { names, .. } => format!("hash({})", names.join(", ")),
            };
            lines.push(format!("{edge} -> {}: {}", st.name, ops(st.chains.first())));
        }
        lines
    }

    /// The graph as data (for the status page): stages with their name, parallelism,
    /// operators and input edge.
    pub fn graph(&self) -> serde_json::Value {
        let ops = |c: Option<&Chain>| -> Vec<String> {
            c.map(|c| c.iter().map(|o| o.name()).collect())
                .unwrap_or_default()
        };
        let mut stages = vec![serde_json::json!({
            "name": format!("source {}", self.source.name),
            "parallelism": self.source.readers.len(),
            "operators": ops(self.source.chains.first()),
            "input": null,
        })];
        for st in &self.stages {
            stages.push(serde_json::json!({
                "name": st.name,
                "parallelism": st.chains.len(),
                "operators": ops(st.chains.first()),
                "input": edge_label(&st.input),
            }));
        }
        serde_json::json!({ "stages": stages })
    }

    /// The graph in Graphviz's dot language: one node per stage listing its chained
    /// operators, edges labelled with their partitioning.
    pub fn to_dot(&self) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let node = |i: usize, title: &str, p: usize, c: Option<&Chain>| -> String {
            let ops: Vec<String> = c
                .map(|c| c.iter().map(|o| esc(&o.name())).collect())
                .unwrap_or_default();
            format!(
                "  s{i} [shape=box, label=\"{} (parallelism {p})\\n{}\"];\n",
                esc(title),
                ops.join("\\n")
            )
        };
        let mut s = String::from("digraph tidewater {\n  rankdir=LR;\n");
        s.push_str(&node(
            0,
            &format!("source {}", self.source.name),
            self.source.readers.len(),
            self.source.chains.first(),
        ));
        for (i, st) in self.stages.iter().enumerate() {
            s.push_str(&node(i + 1, &st.name, st.chains.len(), st.chains.first()));
            let _ = writeln!(
                s,
                "  s{i} -> s{} [label=\"{}\"];",
                i + 1,
                esc(&edge_label(&st.input))
            );
        }
        s.push_str("}\n");
        s
    }

    /// A text picture of the graph.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        let names = |c: Option<&Chain>| -> String {
            c.map(|c| c.iter().map(|o| o.name()).collect::<Vec<_>>().join(" -> "))
                .unwrap_or_default()
        };
        let _ = writeln!(
            s,
            "Stage 0  source '{}'  parallelism {}\n    chain: {}",
            self.source.name,
            self.source.readers.len(),
            names(self.source.chains.first())
        );
        for (i, st) in self.stages.iter().enumerate() {
            let edge = match &st.input {
                Partitioning::Forward => "forward".to_string(),
                Partitioning::Hash { names, .. } => {
                    format!(
                        "hash({}) over {} key groups",
                        names.join(", "),
                        tidewater_core::key::KEY_GROUPS
                    )
                }
            };
            let _ = writeln!(s, "  | {edge}");
            let _ = writeln!(
                s,
                "Stage {}  {}  parallelism {}\n    chain: {}",
                i + 1,
                st.name,
                st.chains.len(),
                names(st.chains.first())
            );
        }
        let _ = write!(
            s,
            "channels: bounded, {} batches each",
            self.channel_capacity
        );
        s
    }
}
