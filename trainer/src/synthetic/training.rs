//! The training loop of `trainer synthetic`: it runs what the [`Schedule`] asks for
//! (training steps, evaluations) and does the I/O around it: metrics rows, progress,
//! checkpoints, the summary and the learning curve.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use scan_core::LinearScan;
use surrogate_rnn::{
    save_checkpoint, softmax_cross_entropy, Adam, Classifier, ModelError, ModelInput, SyntheticTask,
};

use super::{step, Outcome, SyntheticArgs, CURVE_STEM};
use crate::backend::BackendChoice;
use crate::console::Console;
use crate::metrics::{MetricsWriter, Record};
use crate::plot;
use crate::resume::{RunSettings, Session, CHECKPOINT_FILE, SUMMARY_FILE};
use crate::schedule::{Action, Rules, Schedule, StepOutcome};
use crate::summary::{learning_curve, print_summary, StageSummary, StopReason, Summary};
use crate::{atomic, distributed, interrupt, system};

/// One session of a run: the model, its optimizer and schedule, and the run folder.
pub struct Trainer<'a> {
    settings: RunSettings,
    scan: &'a dyn LinearScan<f32>,
    dir: PathBuf,
    model: Classifier<f32>,
    adam: Adam<f32>,
    schedule: Schedule,
    /// Opened (and the files rewritten from `history`) before the first new record.
    metrics: Option<MetricsWriter>,
    history: Vec<Record>,
    /// Wall seconds of earlier sessions of this run.
    wall_base: f64,
    started: Instant,
}

impl<'a> Trainer<'a> {
    /// A session continuing `session` (new or resumed), whose process started at
    /// `started`.
    pub fn new(session: Session, scan: &'a dyn LinearScan<f32>, started: Instant) -> Self {
        let args = &session.settings.args;
        let rules = Rules {
            streak: args.streak,
            eval_threshold: args.eval_threshold,
            max_iterations: args.max_iterations(),
            max_seconds: args.max_seconds,
        };
        Self {
            wall_base: session.state.wall_seconds,
            schedule: Schedule::new(rules, session.state),
            settings: session.settings,
            scan,
            dir: session.dir,
            model: session.model,
            adam: session.adam,
            metrics: None,
            history: session.history,
            started,
        }
    }

    fn args(&self) -> &SyntheticArgs {
        &self.settings.args
    }

    fn wall_seconds(&self) -> f64 {
        self.deadline().wall_seconds()
    }

    fn metrics(&mut self) -> Result<&mut MetricsWriter> {
        if self.metrics.is_none() {
            self.metrics = Some(MetricsWriter::create(&self.dir, &self.history)?);
        }
        Ok(self.metrics.as_mut().expect("just created"))
    }

    /// Saves a checkpoint after the metrics it covers are on disk, so that a kill at
    /// any moment leaves metrics for every step up to the checkpoint.
    fn save(&mut self) -> Result<()> {
        if !distributed::writes_files() {
            return Ok(());
        }
        self.metrics()?.flush()?;
        self.schedule.set_wall_seconds(self.wall_seconds());
        let extra = self.settings.checkpoint_extra(self.schedule.state())?;
        save_checkpoint(
            &self.dir.join(CHECKPOINT_FILE),
            &self.model,
            &self.adam,
            self.args().seed,
            &extra,
        )
        .context("writing the checkpoint")?;
        crate::fault::point("checkpoint-saved");
        Ok(())
    }

    fn announce(&self, console: &Console, backend: BackendChoice, threads: usize) {
        let args = self.args();
        let stages = args.stages();
        let resumed = self.adam.steps() > 0;
        console.line(format!(
            "{} {} run: {} × {} {} (embedding {}), n = {}{}, batch {}, lr {}, init {}, {} backend, {} threads, seed {}\n  folder: {}",
            if resumed { "resuming" } else { "starting" },
            if resumed { format!("at step {}", self.adam.steps()) } else { String::new() },
            args.layers,
            args.hidden,
            self.model.config().layer.label(),
            args.embedding,
            args.seq_len,
            if stages.len() == 1 {
                String::new()
            } else {
                format!(" (curriculum {:?})", stages)
            },
            args.batch,
            args.lr,
            args.init_label(),
            backend.label(),
            threads,
            args.seed,
            self.dir.display()
        ));
    }

    /// Runs steps and evaluations until the schedule says stop; returns why.
    pub fn train(&mut self, backend: BackendChoice, threads: usize) -> Result<StopReason> {
        let mut console = Console::progress(
            self.args().max_iterations(),
            self.adam.steps(),
            self.args().quiet,
        );
        self.announce(&console, backend, threads);
        let mut mark = Instant::now();
        let reason = loop {
            // Time since the last mark belongs to the current stage.
            let now = Instant::now();
            self.schedule.add_stage_seconds((now - mark).as_secs_f64());
            mark = now;
            let (wall, stop) =
                distributed::agree_clock(self.wall_seconds(), interrupt::interrupted());
            let action = self.schedule.next(self.adam.steps(), wall, stop);
            match action {
                Action::Stop(reason) => break reason,
                Action::Evaluate => {
                    // The evaluation of the last step was interrupted: run it again, and
                    // record it in that step's row, as an uninterrupted run would have.
                    let step = self.adam.steps();
                    let accuracy = match self.evaluate(&mut console)? {
                        Evaluation::Accuracy(accuracy) => accuracy,
                        Evaluation::Stopped(reason) => break reason,
                    };
                    if let Some(last) = self.history.last_mut() {
                        last.eval_accuracy = Some(accuracy);
                    }
                    self.conclude_evaluation(accuracy, step, &console);
                }
                Action::Train { seq_len } => {
                    if let Some(reason) = self.step(seq_len, &mut console)? {
                        break reason;
                    }
                }
            }
        };
        self.schedule
            .add_stage_seconds((Instant::now() - mark).as_secs_f64());
        console.finish();
        Ok(reason)
    }

    /// One training step at `seq_len` (with the evaluation it may trigger), its metrics
    /// row, progress and checkpoint; `Some` when the run ends with it.
    fn step(&mut self, seq_len: usize, console: &mut Console) -> Result<Option<StopReason>> {
        let (seed, dim, batch_size) = (self.args().seed, self.args().dim, self.args().batch);
        let task = SyntheticTask::new(seq_len, dim)?;
        let step_start = Instant::now();
        let chunk_len = step::train_chunk_len(self.model.config(), seq_len, batch_size)?;
        let (model, adam) = (&mut self.model, &mut self.adam);
        let stats = match distributed::train_step(
            model, adam, self.scan, &task, seed, batch_size, chunk_len,
        ) {
            Ok(stats) => stats,
            Err(ModelError::NonFiniteGradient { step }) => bail!(
                "training diverged at step {step}: the gradient is not finite; \
                 try a lower --lr or a smaller --clip"
            ),
            Err(e) => return Err(e).context("training step"),
        };
        let step_seconds = step_start.elapsed().as_secs_f64();
        let events = (seq_len * batch_size) as f64;
        let outcome = self
            .schedule
            .record_step(stats.batch.accuracy, step_seconds, events);
        let mut record = Record {
            step: self.adam.steps(),
            seq_len,
            loss: stats.batch.loss,
            accuracy: stats.batch.accuracy,
            grad_norm: stats.grad_norm,
            clipped: stats.clipped,
            wall_seconds: self.wall_seconds(),
            events_per_second: events / step_seconds.max(1e-12),
            eval_accuracy: None,
        };
        let mut stop = None;
        match outcome {
            StepOutcome::Continue => {}
            StepOutcome::StageLearned {
                learned,
                next_seq_len,
            } => console.line(format!(
                "  length {} learned after {} iterations ({:.1} s); moving to length {}",
                learned.seq_len, learned.iterations, learned.seconds, next_seq_len
            )),
            StepOutcome::EvaluationDue => match self.evaluate(console)? {
                Evaluation::Accuracy(accuracy) => {
                    record.eval_accuracy = Some(accuracy);
                    if self.conclude_evaluation(accuracy, record.step, console) {
                        stop = Some(StopReason::Converged);
                    }
                }
                Evaluation::Stopped(reason) => stop = Some(reason),
            },
        }
        if distributed::writes_files() {
            self.metrics()?.append(&record)?;
        }
        let message = format!(
            "n {} loss {:.4} acc {:5.1}% streak {}/{}  {:.2} it/s  {:.3e} events/s",
            seq_len,
            record.loss,
            100.0 * record.accuracy,
            self.schedule.streak(),
            self.args().streak,
            self.schedule.iterations_per_second(),
            self.schedule.events_per_second()
        );
        console.update(record.step, record.wall_seconds, message);
        self.history.push(record);
        if stop.is_some() {
            return Ok(stop);
        }
        let every = self.args().checkpoint_every();
        if every > 0 && self.adam.steps().is_multiple_of(every) {
            self.save()?;
        }
        Ok(None)
    }

    /// Accuracy on `eval_sequences` fresh sequences of the target length, never seen in
    /// training (their own seed stream), evaluated in memory-bounded chunks (in sequence
    /// and grid runs: split over the processes as training is), with its progress on the
    /// console. Ctrl-C or the run's `--max-seconds` stops it; it then stays due, and the
    /// resumed run evaluates the same sequences.
    fn evaluate(&mut self, console: &mut Console) -> Result<Evaluation> {
        let args = self.args().clone();
        let task = SyntheticTask::new(args.seq_len, args.dim)?;
        let eval_seed = args.seed ^ 0x005E_ED0F_E7A1;
        let round = self.schedule.eval_round();
        console.line(format!(
            "  evaluating after step {} on {} fresh sequences of length {}",
            self.adam.steps(),
            args.eval_sequences,
            args.seq_len
        ));
        let start = Instant::now();
        let (mut correct, mut seen, mut part) = (0, 0, 0u64);
        let total_steps = args.eval_sequences as f64 * args.seq_len as f64;
        while seen < args.eval_sequences {
            let size = EVAL_BATCH.min(args.eval_sequences - seen);
            let key = (round << 32) | part;
            if distributed::splits_sequences() {
                // Split over the processes as training is: each holds its steps only.
                let deadline = self.deadline();
                let mut stopped = None;
                let mut stop = |done: usize| {
                    let done = (seen + done) as f64 / args.eval_sequences as f64;
                    console.status(evaluation_status(done, &args, start));
                    stopped = deadline.stop();
                    stopped.is_some()
                };
                let n_correct = distributed::evaluate_split(
                    &mut self.model,
                    self.scan,
                    &task,
                    (eval_seed, key),
                    size,
                    &mut stop,
                )
                .context("evaluation")?;
                let Some(n_correct) = n_correct else {
                    let reason = stopped.unwrap_or(StopReason::Interrupted);
                    return Ok(self.evaluation_stopped(reason, console));
                };
                correct += n_correct;
                seen += size;
                part += 1;
                continue;
            }
            let chunk_len = step::eval_chunk_len(&args.model_config(), args.seq_len, size)?;
            let (labels, chunks) = task
                .chunks_for_step::<f32>(eval_seed, key, size, chunk_len)
                .context("evaluation")?;
            // Streaming: only one chunk of activations and the carried state are held, so
            // memory does not grow with the sequence length.
            let mut stream = self.model.stream();
            let mut fed = 0;
            for chunk in chunks {
                if let Some(reason) = self.deadline().stop() {
                    return Ok(self.evaluation_stopped(reason, console));
                }
                let done = (seen as f64 * args.seq_len as f64 + (fed * size) as f64) / total_steps;
                console.status(evaluation_status(done, &args, start));
                let chunk = chunk.context("evaluation")?;
                fed += chunk.dim().0;
                stream
                    .feed(self.scan, ModelInput::OneHot(&chunk))
                    .context("evaluation")?;
            }
            let logits = stream
                .logits()
                .context("evaluation: the sequences have no steps")?;
            correct += softmax_cross_entropy(logits, &labels)
                .context("evaluation")?
                .n_correct;
            seen += size;
            part += 1;
        }
        let accuracy = correct as f64 / seen as f64;
        console.line(format!(
            "  evaluation after step {}: {correct}/{seen} fresh sequences correct ({:.2} %, {:.1} s)",
            self.adam.steps(),
            100.0 * accuracy,
            start.elapsed().as_secs_f64()
        ));
        Ok(Evaluation::Accuracy(accuracy))
    }

    /// The run's clock and time limit, for checks while the model is borrowed.
    fn deadline(&self) -> Deadline {
        Deadline {
            wall_base: self.wall_base,
            started: self.started,
            max_seconds: self.args().max_seconds,
        }
    }

    /// Reports an evaluation stopped for `reason`.
    fn evaluation_stopped(&self, reason: StopReason, console: &Console) -> Evaluation {
        console.line(format!(
            "  evaluation stopped ({}); it runs again when the run resumes",
            reason.describe()
        ));
        Evaluation::Stopped(reason)
    }

    /// Records a completed evaluation after `step`; returns whether the run converged.
    fn conclude_evaluation(&mut self, accuracy: f64, step: u64, console: &Console) -> bool {
        if self.schedule.record_evaluation(accuracy) {
            return true;
        }
        let args = self.args();
        console.line(format!(
            "  step {step}: {} minibatches at 100 %, but evaluation on {} fresh sequences gave \
             {:.2} % < {:.0} %; training on",
            args.streak,
            args.eval_sequences,
            100.0 * accuracy,
            100.0 * args.eval_threshold
        ));
        false
    }

    /// Saves the final checkpoint, the learning curve and `summary.json`, and prints
    /// the summary.
    pub fn finish(
        mut self,
        stop: StopReason,
        backend: BackendChoice,
        threads: usize,
    ) -> Result<Outcome> {
        self.save()?;
        let args = self.args();
        let state = self.schedule.state();
        let summary = Summary {
            model: self.model.config().layer.label(),
            seq_len: args.seq_len,
            dim: args.dim,
            hidden: args.hidden,
            layers: args.layers,
            embedding: args.embedding,
            batch: args.batch,
            backend: backend.label().to_owned(),
            seed: args.seed,
            learning_rate: args.lr,
            clip: args.adam_config().clip_norm,
            init: args.init_label(),
            converged: stop == StopReason::Converged,
            stop_reason: stop,
            eval_accuracy: state.last_eval_accuracy,
            eval_sequences: args.eval_sequences,
            iterations: self.adam.steps(),
            wall_seconds: self.wall_seconds(),
            train_seconds: state.train_seconds,
            events_per_second: self.schedule.events_per_second(),
            peak_rss_bytes: system::peak_rss_bytes(),
            threads,
            curriculum: state
                .stages
                .iter()
                .map(|s| StageSummary {
                    seq_len: s.seq_len,
                    iterations: s.iterations,
                    seconds: s.seconds,
                })
                .collect(),
            run_dir: self.dir.clone(),
        };
        if !distributed::writes_files() {
            return Ok(Outcome { summary });
        }
        let (png, _) = plot::save(
            &self.dir.join(CURVE_STEM),
            &learning_curve(&self.history, args),
        )
        .context("plotting the learning curve")?;
        let summary_path = self.dir.join(SUMMARY_FILE);
        atomic::write(
            &summary_path,
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
        print_summary(&summary);
        println!(
            "results: {}  (summary.json, metrics.csv, metrics.jsonl, {} + .svg, {})",
            self.dir.display(),
            png.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
            CHECKPOINT_FILE
        );
        if stop != StopReason::Converged {
            println!(
                "continue this run with: trainer synthetic --resume {} [--max-iterations N] [--max-seconds S]",
                self.dir.display()
            );
        }
        Ok(Outcome { summary })
    }
}

/// The run's wall clock (counted across resumes) and its `--max-seconds`.
#[derive(Clone, Copy)]
struct Deadline {
    wall_base: f64,
    started: Instant,
    max_seconds: Option<f64>,
}

impl Deadline {
    /// Seconds of the run so far, across resumes.
    fn wall_seconds(&self) -> f64 {
        self.wall_base + self.started.elapsed().as_secs_f64()
    }

    /// Why work in progress stops: Ctrl-C, or `--max-seconds` reached. Collective in a
    /// distributed run (every process gets the same answer).
    fn stop(&self) -> Option<StopReason> {
        let (wall, interrupted) =
            distributed::agree_clock(self.wall_seconds(), interrupt::interrupted());
        if interrupted {
            Some(StopReason::Interrupted)
        } else if self.max_seconds.is_some_and(|limit| wall >= limit) {
            Some(StopReason::TimeLimit)
        } else {
            None
        }
    }
}

/// The progress line of an evaluation `done` (a share) of the way through.
fn evaluation_status(done: f64, args: &SyntheticArgs, start: Instant) -> String {
    format!(
        "evaluating: {:.0} % of {} sequences × {} steps ({:.0} s)",
        100.0 * done,
        args.eval_sequences,
        args.seq_len,
        start.elapsed().as_secs_f64()
    )
}

/// How an evaluation ended.
enum Evaluation {
    /// It ran to the end: the share of sequences classified correctly.
    Accuracy(f64),
    /// It was stopped before the end.
    Stopped(StopReason),
}

/// Sequences evaluated together. Fixed, so that the sequences an evaluation draws do not
/// depend on the machine's memory.
const EVAL_BATCH: usize = 256;
