//! The `tidewater` command line: a thin shell over the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};

mod checkpoints;
mod signals;
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
    /// Log lines as text or as JSON objects (one per line, for machines).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExplainFormat {
    /// The plan as text.
    Text,
    /// The dataflow in Graphviz's dot language (`| dot -Tsvg > plan.svg`).
    Dot,
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
        /// Serve the status page and Prometheus /metrics at ADDR ("off": don't)
        /// [default: 127.0.0.1:8080, or the next free port up to 8099].
        #[arg(long, value_name = "ADDR")]
        http: Option<tidewater::http::Listen>,
        /// When the input has ended, keep serving the final figures until SIGINT/SIGTERM.
        #[arg(long)]
        http_keep_open: bool,
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
        /// Text, or Graphviz dot.
        #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
        format: ExplainFormat,
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

/// The default log filter. librdkafka's own log is off: it repeats every failed
/// connection attempt, while Tidewater says once what it is waiting for and why it gives
/// up (`RUST_LOG=librdkafka=info,rdkafka=info` brings it back).
fn tidewater_subscriber_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        "warn,tidewater=info,tidewater_runtime=info,tidewater_connectors=info,\
         librdkafka=off,rdkafka=off"
            .into()
    })
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    tidewater::sql::parse_duration(s)
}

fn main() -> ExitCode {
    // A panic is a bug: say so in one line instead of a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("tidewater: internal error (please report): {info}");
    }));
    let cli = Cli::parse();
    // Lifecycle events (start, restore, checkpoints, finish) are worth a line by
    // default; RUST_LOG overrides.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tidewater_subscriber_filter())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
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
        Command::Explain {
            job,
            parallelism,
            format,
        } => {
            let job = Job::from_file(
                &job,
                &JobOptions {
                    parallelism,
                    ..Default::default()
                },
            )?;
            match format {
                ExplainFormat::Text => print!("{}", job.explain()),
                ExplainFormat::Dot => print!("{}", job.explain_dot()),
            }
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
            http,
            http_keep_open,
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
            let status = tidewater::http::serve_job(&job, http)?;
            let metrics = job.metrics();
            let done = Arc::new(AtomicBool::new(false));
            let progress = (!quiet && std::io::stderr().is_terminal())
                .then(|| spawn_progress(metrics, done.clone()));
            let signals = signals::StopOnSignal::install(job.stop_handle())
                .map_err(|e| tidewater::Error::runtime(format!("cannot handle signals: {e}")))?;
            let result = job.run();
            drop(signals);
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
            match status {
                Some(status) if http_keep_open && !report.exec.stopped => {
                    tidewater::http::keep_open(status)
                }
                _ => Ok(()),
            }
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
    if let Some(k) = &r.kafka {
        eprintln!(
            "partition tasks: {} opened ({} restored from a commit), {} assignments, {} revocations",
            k.tasks_opened, k.tasks_restored, k.assignments, k.revocations
        );
    }
    if let Some((p50, p99, n)) = r.emit_latency_ms {
        let ms = |v: u64| {
            if v == u64::MAX {
                "> 30 000".to_string()
            } else {
                format!("≤ {v}")
            }
        };
        eprintln!(
            "emit latency (watermark passes a window's end → results in the sink): p50 {} ms  p99 {} ms  over {n} firings",
            ms(p50),
            ms(p99)
        );
    }
}
