//! Ctrl-C: the first asks the training loop to checkpoint and stop, a second exits at
//! once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Installs the Ctrl-C handler once: the first Ctrl-C asks the loop to checkpoint and
/// stop; a second one exits at once.
pub fn install_handler() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let result = ctrlc::set_handler(|| {
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
