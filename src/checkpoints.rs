//! `tidewater checkpoints list|inspect DIR`: what a checkpoint directory holds.

use std::path::Path;

use tidewater::core::Error;
use tidewater::core::time::format_millis;
use tidewater::state::protocol::Listing;
use tidewater::state::{LocalStore, Manifest, recovery};

fn open(dir: &Path) -> tidewater::Result<LocalStore> {
    LocalStore::open_existing(dir)
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// One line per checkpoint, oldest first.
pub(crate) fn list(dir: &Path) -> tidewater::Result<()> {
    let store = open(dir)?;
    let listing = recovery::list(&store)?;
    if listing.is_empty() {
        println!("no checkpoints in {}", dir.display());
        return Ok(());
    }
    println!(
        "{:>8}  {:<23}  {:>9}  {:>10}  {:>6}  status",
        "epoch", "taken (UTC)", "duration", "state", "files"
    );
    for (epoch, l) in &listing {
        match l {
            Listing::Complete(m) => println!(
                "{:>8}  {:<23}  {:>6} ms  {:>10}  {:>6}  complete{}",
                epoch,
                format_millis(m.started_ms),
                m.duration_ms,
                size(m.state_bytes()),
                m.files.len(),
                if m.finished { " (input finished)" } else { "" }
            ),
            Listing::Incomplete => println!(
                "{epoch:>8}  {:<23}  {:>9}  {:>10}  {:>6}  incomplete (no manifest)",
                "-", "-", "-", "-"
            ),
            Listing::Damaged(why) => println!(
                "{epoch:>8}  {:<23}  {:>9}  {:>10}  {:>6}  damaged: {why}",
                "-", "-", "-", "-"
            ),
        }
    }
    Ok(())
}

/// Files, source positions and state per operator of one checkpoint.
pub(crate) fn inspect(dir: &Path, epoch: Option<u64>) -> tidewater::Result<()> {
    let store = open(dir)?;
    let listing = recovery::list(&store)?;
    let chosen = match epoch {
        Some(e) => e,
        None => *tidewater::state::protocol::restore_candidates(&listing)
            .first()
            .ok_or_else(|| {
                Error::Checkpoint(format!("no complete checkpoint in {}", dir.display()))
            })?,
    };
    let m: &Manifest = match listing.get(&chosen) {
        Some(Listing::Complete(m)) => m,
        Some(Listing::Incomplete) => {
            return Err(Error::Checkpoint(format!(
                "checkpoint {chosen} is incomplete (no manifest)"
            )));
        }
        Some(Listing::Damaged(why)) => {
            return Err(Error::Checkpoint(format!(
                "checkpoint {chosen} is damaged: {why}"
            )));
        }
        None => {
            return Err(Error::Checkpoint(format!(
                "no checkpoint {chosen} in {}",
                dir.display()
            )));
        }
    };
    println!("checkpoint {} of job '{}'", m.epoch, m.job);
    println!(
        "  taken:       {} UTC, took {} ms",
        format_millis(m.started_ms),
        m.duration_ms
    );
    println!(
        "  state:       {} in {} files",
        size(m.state_bytes()),
        m.files.len()
    );
    println!(
        "  finished:    {}",
        if m.finished {
            "yes (every source had ended)"
        } else {
            "no"
        }
    );
    println!("  plan:");
    for (i, (line, p)) in m.plan.iter().zip(&m.parallelism).enumerate() {
        println!("    stage {i} (parallelism {p}): {line}");
    }
    println!("  source positions:");
    for (i, s) in m.sources.iter().enumerate() {
        println!("    subtask {i}: {s}");
    }
    println!("  state per operator:");
    let mut per_op: std::collections::BTreeMap<(usize, usize, &str), (u64, u64, usize)> =
        Default::default();
    for f in &m.files {
        let e = per_op
            .entry((f.stage, f.operator, f.operator_name.as_str()))
            .or_default();
        e.0 += f.bytes;
        e.1 += f.rows;
        e.2 += 1;
    }
    for ((stage, op, name), (bytes, rows, files)) in per_op {
        println!(
            "    stage {stage} op {op} {name}: {} ({rows} rows) in {files} files",
            size(bytes)
        );
    }
    Ok(())
}
