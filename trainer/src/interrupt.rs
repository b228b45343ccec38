//! Ctrl-C: the first asks the work in progress to stop at its next check (a training run
//! checkpoints first; the benchmarks and `reproduce` stop between shapes and runs), a
//! second exits at once. A signal within [`SAME_INTERRUPT`] of the first counts as the same one: a wrapper
//! such as `timeout` signals both the process and its group, so one interrupt arrives
//! twice.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// How soon after the first interrupt a signal is taken as a copy of it.
const SAME_INTERRUPT: Duration = Duration::from_millis(500);

/// Installs the Ctrl-C handler once: the first Ctrl-C sets the flag that [`interrupted`]
/// and [`check`] read; a second one exits at once.
pub fn install_handler() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    static FIRST: OnceLock<Instant> = OnceLock::new();
    let result = ctrlc::set_handler(|| {
        let first = *FIRST.get_or_init(Instant::now);
        if first.elapsed() < SAME_INTERRUPT {
            INTERRUPTS.store(1, Ordering::SeqCst);
            return;
        }
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) >= 1 {
            eprintln!("\nsecond Ctrl-C: exiting without a checkpoint");
            std::process::exit(130);
        }
    });
    if let Err(e) = result {
        eprintln!("warning: Ctrl-C will not checkpoint: {e}");
    }
}

pub fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

/// The error of a command that stopped because Ctrl-C asked it to; `main` exits with 130.
#[derive(Debug, Clone, Copy)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by Ctrl-C")
    }
}

impl std::error::Error for Interrupted {}

/// `Err(Interrupted)` once Ctrl-C was pressed (with the handler installed).
pub fn check() -> Result<(), Interrupted> {
    if interrupted() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}
