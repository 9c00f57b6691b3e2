//! SIGINT / SIGTERM while a job runs: the first asks the job to stop gracefully (a last
//! checkpoint when checkpointing is on, sinks commit, the summary is printed, exit 0);
//! a second one exits at once.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use tidewater::StopHandle;

/// Handles signals until dropped.
pub(crate) struct StopOnSignal {
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StopOnSignal {
    /// Starts handling SIGINT and SIGTERM for the job behind `stop`.
    pub(crate) fn install(stop: StopHandle) -> std::io::Result<Self> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut seen = 0;
                for sig in signals.forever() {
                    seen += 1;
                    if seen == 1 {
                        eprintln!(
                            "stopping (signal {sig}): finishing up; send it again to exit at once"
                        );
                        stop.stop();
                    } else {
                        eprintln!("exiting at once");
                        std::process::exit(130);
                    }
                }
            })?;
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for StopOnSignal {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
