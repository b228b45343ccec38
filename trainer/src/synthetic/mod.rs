//! `trainer synthetic`: the long-dependency task of PAPER.md §3 (Table 3).
//!
//! A run trains on fresh minibatches (a pure function of the seed and the step, so a
//! resumed run sees the batches it would have seen), optionally through a length
//! curriculum, until the convergence criterion holds: `streak` consecutive minibatches at
//! 100 % accuracy, confirmed by an evaluation on fresh sequences. Everything it writes
//! goes to one run folder.
//!
//! The parts: [`args`] (the settings and their checks), [`crate::schedule`] (curriculum
//! and convergence, without I/O), [`training`] (the loop that runs the steps and writes
//! metrics, checkpoints and the summary), [`step`] (whole or chunked steps by a memory
//! budget), [`crate::resume`] (the run folder: creating it,
//! reading it back).

mod args;
mod step;
mod training;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};

pub use self::args::{ModelChoice, SyntheticArgs};
pub use self::step::train_step;
#[cfg_attr(not(feature = "mpi"), allow(unused_imports))]
pub use self::step::{eval_batch_within, eval_chunk_len};
use crate::resume::{self, OWNED_FILES};
pub use crate::summary::{StopReason, Summary};
use crate::{atomic, interrupt};

const CURVE_STEM: &str = "learning_curve";

/// The result of [`run`].
pub struct Outcome {
    pub summary: Summary,
}

impl Outcome {
    /// 0 when the run finished (converged or not: the summary says which), 130 when it
    /// was interrupted.
    pub fn exit_code(&self) -> ExitCode {
        if self.summary.stop_reason == StopReason::Interrupted {
            ExitCode::from(130)
        } else {
            ExitCode::SUCCESS
        }
    }
}

fn configure_threads(threads: Option<usize>) -> Result<usize> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("configuring the worker threads")?;
    }
    Ok(rayon::current_num_threads())
}

/// Runs `trainer synthetic`.
pub fn run(cli_args: &SyntheticArgs) -> Result<Outcome> {
    let started = Instant::now();
    // From here on, Ctrl-C stops the run at the next step with a checkpoint.
    interrupt::install_handler();
    let session = crate::distributed::agree_session(match &cli_args.resume {
        Some(dir) => resume::load(cli_args, dir),
        None => crate::distributed::start_new(cli_args),
    })?;
    let backend = session.settings.args.backend();
    let scan = backend.build()?;
    let threads = configure_threads(session.settings.args.threads)?;
    let owned = if crate::distributed::writes_files() {
        OWNED_FILES
    } else {
        &[]
    };
    for path in atomic::remove_stale_temporaries(&session.dir, owned)? {
        eprintln!(
            "note: removed `{}`, left by a run that was killed while writing",
            path.display()
        );
    }
    let mut trainer = training::Trainer::new(session, scan.as_ref(), started);
    let stop = trainer.train(backend, threads)?;
    trainer.finish(stop, backend, threads)
}
