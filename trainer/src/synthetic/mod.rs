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
//! metrics, checkpoints and the summary), [`crate::resume`] (reading a run folder back).

mod args;
mod training;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use surrogate_rnn::{Adam, Classifier};

pub use self::args::{ModelChoice, SyntheticArgs};
use crate::metrics;
use crate::resume::{self, RunSettings, Session, CHECKPOINT_FILE, SETTINGS_FILE, SUMMARY_FILE};
use crate::state::LoopState;
pub use crate::summary::{StopReason, Summary};
use crate::{atomic, interrupt};

const CURVE_STEM: &str = "learning_curve";
const OWNED_FILES: &[&str] = &[
    CHECKPOINT_FILE,
    SETTINGS_FILE,
    SUMMARY_FILE,
    metrics::CSV_FILE,
    metrics::JSONL_FILE,
    "learning_curve.png",
    "learning_curve.svg",
];

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
        // matrixmultiply reads this once, at its first threaded product.
        std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
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
    let session = match &cli_args.resume {
        Some(dir) => resume::load(cli_args, dir)?,
        None => start_new(cli_args)?,
    };
    let backend = session.settings.args.backend();
    let scan = backend.build()?;
    let threads = configure_threads(session.settings.args.threads)?;
    for path in atomic::remove_stale_temporaries(&session.dir, OWNED_FILES)? {
        eprintln!(
            "note: removed `{}`, left by a run that was killed while writing",
            path.display()
        );
    }
    let mut trainer = training::Trainer::new(session, scan.as_ref(), started);
    let stop = trainer.train(backend, threads)?;
    trainer.finish(stop, backend, threads)
}

/// Checks the settings of a new run, then creates its folder and `run.json`.
fn start_new(args: &SyntheticArgs) -> Result<Session> {
    args.validate()?;
    args.backend().build()?;
    let config = args.model_config();
    let model = Classifier::<f32>::new(config, args.init_config(), args.seed)
        .context("building the model")?;
    let adam = Adam::new(args.adam_config(), &model);
    let stem = format!("{}-n{}", config.layer.label(), args.seq_len);
    let created = args.out.as_deref().is_none_or(|out| !out.exists());
    let dir = crate::run_dir::prepare(
        args.out.as_deref(),
        &args.runs_dir,
        &stem,
        args.force,
        OWNED_FILES,
    )?;
    let settings = RunSettings::new(args);
    if let Err(e) = settings.write(&dir) {
        if created {
            // Leave nothing that would block a rerun.
            let _ = std::fs::remove_dir(&dir);
        }
        return Err(e);
    }
    Ok(Session {
        settings,
        dir,
        model,
        adam,
        state: LoopState::new(&args.stages()),
        history: Vec::new(),
    })
}
