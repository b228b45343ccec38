//! Fault injection for the tests of crash safety.
//!
//! `TRAINER_FAULT=<point>:<n>` aborts the process (no destructor runs and nothing
//! buffered is written, as after SIGKILL) the n-th time execution passes the named point.
//! Without the variable, [`point`] costs one relaxed load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var("TRAINER_FAULT").ok()?;
            let (name, count) = value.rsplit_once(':')?;
            Some((name.to_owned(), count.parse().ok()?))
        })
        .as_ref()
}

/// Aborts here if `TRAINER_FAULT` names this point and its count is reached.
pub fn point(name: &str) {
    static PASSES: AtomicU64 = AtomicU64::new(0);
    if let Some((armed, count)) = armed() {
        if armed == name && PASSES.fetch_add(1, Ordering::Relaxed) + 1 >= *count {
            eprintln!("fault injection: aborting at `{name}`");
            std::process::abort();
        }
    }
}
