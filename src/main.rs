//! The `tidewater` command line: a thin shell over the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};

mod checkpoints;
use tidewater::{Job, JobMetrics, JobOptions, JobReport};

const EXAMPLES: &str = "\
Examples:
  tidewater run examples/sliding_sum.sql             # the classic job: HOP 2 s / 10 s, SUM by key
  tidewater run examples/sliding_sum.sql -p 1        # on one core
  tidewater explain examples/sliding_sum.sql         # the dataflow and the slicing chosen
  tidewater run job.sql --checkpoint-interval 1s     # checkpoint; rerun the same command to resume
  tidewater checkpoints list tidewater-state/job     # what a checkpoint directory holds
  cat events.csv | tidewater run examples/stdin_filter.sql

A job file holds SET, CREATE TABLE and one INSERT INTO ... SELECT, in Flink SQL.
Connectors: filesystem, datagen, stdin (sources); filesystem, print, blackhole (sinks).";

/// Event-time windowed aggregation over streams, in Flink SQL.
#[derive(Debug, Parser)]
#[command(name = "tidewater", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job file until its input ends (or forever, for unbounded sources).
    Run {
        /// The job file (SET / CREATE TABLE / INSERT INTO statements).
        job: PathBuf,
        /// Subtasks per operator [default: number of cores].
        #[arg(short, long)]
        parallelism: Option<usize>,
        /// No progress bar and no summary.
        #[arg(short, long)]
        quiet: bool,
        /// Take a checkpoint this often (e.g. 500ms, 1s, 1min; 0 turns them off)
        /// [default: SET 'execution.checkpointing.interval', else off].
        #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
        checkpoint_interval: Option<Duration>,
        /// Where checkpoints go [default: SET 'state.checkpoints.dir', else
        /// ./tidewater-state/<job name>]. A run resumes from the newest one there.
        #[arg(long, value_name = "DIR")]
        checkpoint_dir: Option<PathBuf>,
        /// Ignore (and delete) existing checkpoints and start over.
        #[arg(long)]
        from_scratch: bool,
    },
    /// Look into a checkpoint directory.
    Checkpoints {
        #[command(subcommand)]
        command: CheckpointsCommand,
    },
    /// Print the plan: operators, parallelism, partitioning and window slicing.
    Explain {
        /// The job file.
        job: PathBuf,
        /// Subtasks per operator [default: number of cores].
        #[arg(short, long)]
        parallelism: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
enum CheckpointsCommand {
    /// One line per checkpoint: epoch, time, duration, size, state.
    List {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// Files, source positions and state per operator of one checkpoint.
    Inspect {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The checkpoint [default: the newest complete one].
        epoch: Option<u64>,
    },
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    tidewater::sql::parse_duration(s)
}

fn main() -> ExitCode {
    // A panic is a bug: say so in one line instead of a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("tidewater: internal error (please report): {info}");
    }));
    tracing_subscriber::fmt()
        .with_env_filter(
            // Restores and recoveries are worth a line by default; the rest on demand.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,tidewater_runtime=info,tidewater_connectors=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> tidewater::Result<()> {
    match cli.command {
        Command::Explain { job, parallelism } => {
            let job = Job::from_file(
                &job,
                &JobOptions {
                    parallelism,
                    ..Default::default()
                },
            )?;
            print!("{}", job.explain());
            Ok(())
        }
        Command::Checkpoints { command } => match command {
            CheckpointsCommand::List { dir } => checkpoints::list(&dir),
            CheckpointsCommand::Inspect { dir, epoch } => checkpoints::inspect(&dir, epoch),
        },
        Command::Run {
            job,
            parallelism,
            quiet,
            checkpoint_interval,
            checkpoint_dir,
            from_scratch,
        } => {
            let job = Job::from_file(
                &job,
                &JobOptions {
                    parallelism,
                    name: None,
                    checkpoint_interval,
                    checkpoint_dir,
                    from_scratch,
                },
            )?;
            let metrics = job.metrics();
            let done = Arc::new(AtomicBool::new(false));
            let progress = (!quiet && std::io::stderr().is_terminal())
                .then(|| spawn_progress(metrics, done.clone()));
            let result = job.run();
            done.store(true, Ordering::Relaxed);
            if let Some(h) = progress {
                let _ = h.join();
            }
            let report = result?;
            if report.exec.already_finished {
                eprintln!(
                    "the job had already finished (checkpoint {} covers all its input); \
                     nothing to do. Use --from-scratch to run it again.",
                    report.exec.restored.unwrap_or(0)
                );
            }
            if !quiet {
                print_summary(&report);
            }
            Ok(())
        }
    }
}

fn spawn_progress(metrics: Arc<JobMetrics>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let total = metrics.snapshot().bytes_total;
        let bar = if total > 0 {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {msg} [{elapsed_precise}, eta {eta}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        } else {
            indicatif::ProgressBar::new_spinner()
        };
        let started = std::time::Instant::now();
        while !done.load(Ordering::Relaxed) {
            let m = metrics.snapshot();
            bar.set_position(m.bytes_in);
            let rate = m.records_in as f64 / started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} events, {:.0} events/s, {} results",
                m.records_in, rate, m.records_out
            ));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    })
}

fn print_summary(r: &JobReport) {
    let m = &r.metrics;
    eprintln!(
        "events in: {}  results out: {}  late events: {}  dead letters: {}  wall time: {:.3} s  {:.0} events/s",
        m.records_in,
        m.records_out,
        m.late_events,
        m.dead_letters,
        r.elapsed.as_secs_f64(),
        r.events_per_second()
    );
}
