//! `trainer synthetic`: the long-dependency task of PAPER.md §3 (Table 3).
//!
//! A run trains on fresh minibatches (a pure function of the seed and the step, so a
//! resumed run sees the batches it would have seen), optionally through a length
//! curriculum, until the convergence criterion holds: `streak` consecutive minibatches at
//! 100 % accuracy, confirmed by an evaluation on fresh sequences. Everything it writes
//! goes to one run folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use scan_core::LinearScan;
use serde::{Deserialize, Serialize};
use surrogate_rnn::{
    save_checkpoint, Adam, AdamConfig, Classifier, GateBiasInit, InitConfig, InputKind, LayerKind,
    ModelConfig, ModelError, ModelInput, SyntheticTask,
};

use crate::backend::BackendChoice;
use crate::metrics::{self, MetricsWriter, Record};
use crate::plot;
use crate::resume::{self, RunSettings, Session, CHECKPOINT_FILE, SETTINGS_FILE, SUMMARY_FILE};
use crate::state::LoopState;
use crate::summary::{learning_curve, print_summary};
pub use crate::summary::{StageSummary, StopReason, Summary};
use crate::{atomic, interrupt, limits, system};

/// The recurrent layer of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelChoice {
    /// The LSTM with a GILR surrogate for its hidden state (the paper's model).
    GilrLstm,
    /// The plain LSTM, serial over time (the paper's cuDNN LSTM baseline).
    Lstm,
    /// The gated impulse linear recurrence alone.
    Gilr,
    /// QRNN with a causal filter of `--qrnn-width` steps.
    Qrnn,
    /// SRU (needs `--embedding` equal to `--hidden`).
    Sru,
}

/// How the decay ("forget") gate biases start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitChoice {
    /// Chrono initialisation: memory time scales spread up to `--chrono-max-len` steps.
    Chrono,
    /// Zero biases (decays start near 0.5), as the paper's code.
    Zero,
    /// A constant bias `--forget-bias` (1.0 is the classic LSTM forget bias).
    Constant,
}

/// Train on the synthetic long-dependency task: x₀ = ±e₁, then uniform random one-hot
/// vectors in `--dim` dimensions; the label is the sign of x₀.
///
/// Writes a run folder with metrics.csv, metrics.jsonl, learning_curve.png/.svg,
/// checkpoint.safetensors, run.json (the settings) and summary.json.
#[derive(Parser, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[command(name = "synthetic", args_override_self = true)]
pub struct SyntheticArgs {
    /// Sequence length n (steps per sequence).
    #[arg(conflicts_with = "resume", short = 'n', long, default_value_t = 4096)]
    pub seq_len: usize,
    /// One-hot dimension p of the inputs.
    #[arg(conflicts_with = "resume", long, default_value_t = 128)]
    pub dim: usize,
    /// Recurrent layer type.
    #[arg(conflicts_with = "resume", long, value_enum, default_value_t = ModelChoice::GilrLstm)]
    pub model: ModelChoice,
    /// Filter width k of `--model qrnn`.
    #[arg(conflicts_with = "resume", long, default_value_t = 2)]
    pub qrnn_width: usize,
    /// Hidden units per recurrent layer.
    #[arg(conflicts_with = "resume", long, default_value_t = 32)]
    pub hidden: usize,
    /// Number of stacked recurrent layers.
    #[arg(conflicts_with = "resume", long, default_value_t = 2)]
    pub layers: usize,
    /// Width of the embedding that reads the one-hot inputs.
    #[arg(conflicts_with = "resume", long, default_value_t = 16)]
    pub embedding: usize,
    /// Sequences per minibatch (≥ 8 for a meaningful convergence criterion).
    #[arg(conflicts_with = "resume", short, long, default_value_t = 16)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(conflicts_with = "resume", long, default_value_t = 1e-2)]
    pub lr: f64,
    /// Clip the global gradient norm to this value (0 turns clipping off).
    #[arg(conflicts_with = "resume", long, default_value_t = 1.0)]
    pub clip: f64,
    /// Initialisation of the decay-gate biases.
    #[arg(conflicts_with = "resume", long, value_enum, default_value_t = InitChoice::Chrono)]
    pub init: InitChoice,
    /// Longest memory time scale of `--init chrono` [default: the sequence length].
    #[arg(conflicts_with = "resume", long)]
    pub chrono_max_len: Option<usize>,
    /// Bias of `--init constant`.
    #[arg(conflicts_with = "resume", long, default_value_t = 1.0)]
    pub forget_bias: f64,
    /// Seed of the initialisation and of the data.
    #[arg(conflicts_with = "resume", long, default_value_t = 1)]
    pub seed: u64,
    /// Scan backend [default: parallel].
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// Consecutive minibatches at 100 % accuracy that trigger the evaluation.
    #[arg(conflicts_with = "resume", long, default_value_t = 5)]
    pub streak: usize,
    /// Fresh sequences in the confirming evaluation (at least 256).
    #[arg(conflicts_with = "resume", long, default_value_t = 256)]
    pub eval_sequences: usize,
    /// Evaluation accuracy needed to call the run converged.
    #[arg(conflicts_with = "resume", long, default_value_t = 0.99)]
    pub eval_threshold: f64,
    /// Stop after this many iterations in total [default: 5000].
    #[arg(long)]
    pub max_iterations: Option<u64>,
    /// Stop after this much wall time in seconds, counted across resumes [default: none].
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Length curriculum: shorter lengths to train at first, e.g. `128,1024`; each stage
    /// ends when the streak criterion holds, then the next length starts. `auto` uses
    /// 128, 1024, 8192, … (×8) below the target length; `none` trains at the target only.
    #[arg(conflicts_with = "resume", long, default_value = "auto")]
    pub curriculum: String,
    /// Save a checkpoint every this many iterations (0: only at the end) [default: 100].
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// The run folder [default: a new folder <runs-dir>/<model>-n<len>-<k>].
    #[arg(conflicts_with = "resume", long)]
    pub out: Option<PathBuf>,
    /// Where new run folders are created when `--out` is not given.
    #[arg(conflicts_with = "resume", long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Overwrite the files of an existing `--out` folder.
    #[arg(conflicts_with = "resume", long)]
    pub force: bool,
    /// Continue the run in this folder from its checkpoint. Its settings come from the
    /// folder's run.json; only --max-iterations, --max-seconds, --checkpoint-every,
    /// --backend, --threads and --quiet may be given anew (any other flag is an error).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Worker threads for scans and matrix products, at most 4 per logical core
    /// [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar; a status line every few seconds instead.
    #[arg(long)]
    pub quiet: bool,
}

impl Default for SyntheticArgs {
    fn default() -> Self {
        Self::parse_from(["synthetic"])
    }
}

const DEFAULT_MAX_ITERATIONS: u64 = 5000;
const DEFAULT_CHECKPOINT_EVERY: u64 = 100;
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

impl SyntheticArgs {
    fn layer_kind(&self) -> LayerKind {
        match self.model {
            ModelChoice::GilrLstm => LayerKind::GilrLstm,
            ModelChoice::Lstm => LayerKind::Lstm,
            ModelChoice::Gilr => LayerKind::Gilr,
            ModelChoice::Qrnn => LayerKind::Qrnn {
                width: self.qrnn_width,
            },
            ModelChoice::Sru => LayerKind::Sru,
        }
    }

    pub(crate) fn model_config(&self) -> ModelConfig {
        ModelConfig {
            layer: self.layer_kind(),
            input: InputKind::OneHot { vocab: self.dim },
            input_projection: Some(self.embedding),
            hidden: self.hidden,
            layers: self.layers,
            classes: SyntheticTask::N_CLASSES,
        }
    }

    pub(crate) fn init_config(&self) -> InitConfig {
        let gate_bias = match self.init {
            InitChoice::Chrono => GateBiasInit::Chrono {
                max_len: self.chrono_max_len.unwrap_or(self.seq_len),
            },
            InitChoice::Zero => GateBiasInit::Zero,
            InitChoice::Constant => GateBiasInit::Constant {
                value: self.forget_bias,
            },
        };
        InitConfig { gate_bias }
    }

    fn init_label(&self) -> String {
        match self.init_config().gate_bias {
            GateBiasInit::Chrono { max_len } => format!("chrono(max_len={max_len})"),
            GateBiasInit::Zero => "zero".into(),
            GateBiasInit::Constant { value } => format!("constant({value})"),
        }
    }

    pub(crate) fn adam_config(&self) -> AdamConfig {
        AdamConfig {
            learning_rate: self.lr,
            clip_norm: (self.clip > 0.0).then_some(self.clip),
            ..AdamConfig::default()
        }
    }

    fn backend(&self) -> BackendChoice {
        self.backend.unwrap_or(BackendChoice::Parallel)
    }

    pub(crate) fn max_iterations(&self) -> u64 {
        self.max_iterations.unwrap_or(DEFAULT_MAX_ITERATIONS)
    }

    fn checkpoint_every(&self) -> u64 {
        self.checkpoint_every.unwrap_or(DEFAULT_CHECKPOINT_EVERY)
    }

    /// The curriculum lengths below the target, in order.
    fn curriculum_lengths(&self) -> Result<Vec<usize>> {
        match self.curriculum.trim() {
            "auto" => Ok(std::iter::successors(Some(128_usize), |&len| len.checked_mul(8))
                .take_while(|&len| len < self.seq_len)
                .collect()),
            "none" | "" => Ok(Vec::new()),
            list => list
                .split(',')
                .map(|item| {
                    item.trim().parse::<usize>().with_context(|| {
                        format!(
                            "--curriculum takes `auto`, `none` or lengths like `128,1024` (got `{list}`)"
                        )
                    })
                })
                .collect(),
        }
    }

    /// The lengths trained at, in order; the last is the target length.
    pub(crate) fn stages(&self) -> Vec<usize> {
        let mut stages = self.curriculum_lengths().unwrap_or_default();
        stages.push(self.seq_len);
        stages
    }

    /// These settings with every flag that may change on resume (and the output-folder
    /// flags) at its default: what a run's checkpoints must agree with.
    pub(crate) fn fixed(&self) -> Self {
        let defaults = Self::default();
        Self {
            max_iterations: None,
            max_seconds: None,
            checkpoint_every: None,
            backend: None,
            threads: None,
            quiet: false,
            resume: None,
            out: None,
            force: false,
            runs_dir: defaults.runs_dir,
            ..self.clone()
        }
    }

    /// The settings of a run with the flags that may change on resume taken from `new`.
    pub(crate) fn resumed_with(mut self, new: &SyntheticArgs) -> Self {
        if new.max_iterations.is_some() {
            self.max_iterations = new.max_iterations;
        }
        if new.max_seconds.is_some() {
            self.max_seconds = new.max_seconds;
        }
        if new.checkpoint_every.is_some() {
            self.checkpoint_every = new.checkpoint_every;
        }
        if new.backend.is_some() {
            self.backend = new.backend;
        }
        self.threads = new.threads;
        self.quiet = new.quiet;
        self.resume = new.resume.clone();
        self
    }

    /// Bytes one training step needs (see [`limits::training_bytes`]).
    fn training_memory_bytes(&self) -> Result<u128> {
        limits::training_bytes(&self.model_config(), self.seq_len, self.batch)
    }

    /// Every check that can fail before work starts.
    pub(crate) fn validate(&self) -> Result<()> {
        ensure!(
            self.seq_len >= 1,
            "--seq-len must be at least 1 (got 0): a sequence needs its first element x₀"
        );
        ensure!(self.dim >= 1, "--dim must be at least 1");
        ensure!(
            self.batch >= 1 && self.hidden >= 1 && self.layers >= 1 && self.embedding >= 1,
            "--batch, --hidden, --layers and --embedding must all be at least 1"
        );
        ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "--lr must be a positive number"
        );
        ensure!(
            self.clip >= 0.0 && self.clip.is_finite(),
            "--clip must be ≥ 0"
        );
        ensure!(self.streak >= 1, "--streak must be at least 1");
        ensure!(
            self.batch.saturating_mul(self.streak) >= 40,
            "--batch {} with --streak {} is not a meaningful convergence criterion: a model \
             that guesses passes {} consecutive minibatches of {} sequences by chance too \
             often; use --batch ≥ 8 (or a longer --streak, batch × streak ≥ 40)",
            self.batch,
            self.streak,
            self.streak,
            self.batch
        );
        ensure!(
            (256..=u32::MAX as usize).contains(&self.eval_sequences),
            "--eval-sequences must lie in 256..=2³²−1 (got {})",
            self.eval_sequences
        );
        ensure!(
            (0.0..=1.0).contains(&self.eval_threshold),
            "--eval-threshold must lie in [0, 1]"
        );
        if self.model == ModelChoice::Qrnn {
            ensure!(self.qrnn_width >= 1, "--qrnn-width must be at least 1");
        }
        if self.model == ModelChoice::Sru && self.embedding != self.hidden {
            bail!(
                "SRU's highway connection needs the layer input size to equal its hidden size, \
                 but --embedding is {} and --hidden is {}; pass --embedding {}",
                self.embedding,
                self.hidden,
                self.hidden
            );
        }
        if self.init == InitChoice::Constant {
            ensure!(
                self.forget_bias.is_finite(),
                "--forget-bias must be a finite number (got {})",
                self.forget_bias
            );
        }
        if let Some(len) = self.chrono_max_len {
            ensure!(len >= 2, "--chrono-max-len must be at least 2");
        }
        let mut previous = 0;
        for len in self.curriculum_lengths()? {
            ensure!(
                len > previous && len < self.seq_len,
                "--curriculum lengths must increase and stay below --seq-len {} (got `{}`)",
                self.seq_len,
                self.curriculum
            );
            previous = len;
        }
        if let Some(seconds) = self.max_seconds {
            ensure!(
                seconds > 0.0 && !seconds.is_nan(),
                "--max-seconds must be positive (got {seconds})"
            );
        }
        limits::check_threads(self.threads)?;
        self.model_config()
            .validate()
            .context("the model configuration is impossible")?;
        let needed = self
            .training_memory_bytes()
            .context("the configuration is impossible")?;
        limits::check_memory(
            &format!(
                "one training step (T = {}, B = {}, {} layers of {} {}, input dimension {}, \
                 parameters and optimizer state included)",
                self.seq_len,
                self.batch,
                self.layers,
                self.hidden,
                self.layer_kind().label(),
                self.dim
            ),
            needed,
            "reduce --batch, --hidden, --dim or --seq-len",
        )?;
        SyntheticTask::new(self.seq_len, self.dim).context("--dim or --seq-len")?;
        Ok(())
    }
}

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

/// Log lines that never tear the progress bar (and still show when it is hidden).
struct Console {
    bar: ProgressBar,
}

impl Console {
    fn line(&self, text: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", text.as_ref());
        } else {
            self.bar.println(text.as_ref());
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
    let Session {
        settings,
        dir,
        model,
        adam,
        state,
        history,
    } = session;
    let args = &settings.args;
    let backend_choice = args.backend();
    let scan = backend_choice.build()?;
    let threads = configure_threads(args.threads)?;
    for path in atomic::remove_stale_temporaries(&dir, OWNED_FILES)? {
        eprintln!(
            "note: removed `{}`, left by a run that was killed while writing",
            path.display()
        );
    }
    let mut trainer = Trainer {
        args,
        settings: &settings,
        scan: scan.as_ref(),
        dir: &dir,
        model,
        adam,
        state,
        metrics: None,
        history,
        wall_base: 0.0,
        started,
    };
    trainer.wall_base = trainer.state.wall_seconds;
    let stop = trainer.train(backend_choice, threads)?;
    trainer.finish(stop, backend_choice, threads)
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

struct Trainer<'a> {
    args: &'a SyntheticArgs,
    settings: &'a RunSettings,
    scan: &'a dyn LinearScan<f32>,
    dir: &'a Path,
    model: Classifier<f32>,
    adam: Adam<f32>,
    state: LoopState,
    /// Opened (and the files rewritten from `history`) before the first new record.
    metrics: Option<MetricsWriter>,
    history: Vec<Record>,
    /// Wall seconds of earlier sessions of this run.
    wall_base: f64,
    started: Instant,
}

impl Trainer<'_> {
    fn wall_seconds(&self) -> f64 {
        self.wall_base + self.started.elapsed().as_secs_f64()
    }

    fn metrics(&mut self) -> Result<&mut MetricsWriter> {
        if self.metrics.is_none() {
            self.metrics = Some(MetricsWriter::create(self.dir, &self.history)?);
        }
        Ok(self.metrics.as_mut().expect("just created"))
    }

    /// Saves a checkpoint after the metrics it covers are on disk, so that a kill at
    /// any moment leaves metrics for every step up to the checkpoint.
    fn save(&mut self) -> Result<()> {
        self.metrics()?.flush()?;
        self.state.wall_seconds = self.wall_seconds();
        let extra = self.settings.checkpoint_extra(&self.state)?;
        save_checkpoint(
            &self.dir.join(CHECKPOINT_FILE),
            &self.model,
            &self.adam,
            self.args.seed,
            &extra,
        )
        .context("writing the checkpoint")?;
        crate::fault::point("checkpoint-saved");
        Ok(())
    }

    fn progress_bar(&self) -> ProgressBar {
        let total = self.args.max_iterations();
        let bar = if self.args.quiet {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(total)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:24}] {pos}/{len} it  {msg}  ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_position(self.adam.steps());
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }

    fn train(&mut self, backend: BackendChoice, threads: usize) -> Result<StopReason> {
        let args = self.args;
        let stages = args.stages();
        let console = Console {
            bar: self.progress_bar(),
        };
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
        let mut last_status = Instant::now();
        let mut mark = Instant::now();
        let reason = loop {
            // Time since the last mark belongs to the current stage.
            let now = Instant::now();
            self.state.stages[self.state.stage].seconds += (now - mark).as_secs_f64();
            mark = now;
            if self.state.converged() {
                // Resumed after the final checkpoint of a converged run whose summary
                // was not written yet.
                break StopReason::Converged;
            }
            if interrupt::interrupted() {
                break StopReason::Interrupted;
            }
            if self.state.pending_evaluation {
                // The evaluation of the last step was interrupted: run it again, and
                // record it in that step's row, as an uninterrupted run would have.
                let step = self.adam.steps();
                match self.evaluate(&console)? {
                    Some(accuracy) => {
                        if let Some(last) = self.history.last_mut() {
                            last.eval_accuracy = Some(accuracy);
                        }
                        self.conclude_evaluation(accuracy, step, &console);
                        continue;
                    }
                    None => break StopReason::Interrupted,
                }
            }
            if self.adam.steps() >= args.max_iterations() {
                break StopReason::IterationLimit;
            }
            if args.max_seconds.is_some_and(|s| self.wall_seconds() >= s) {
                break StopReason::TimeLimit;
            }
            let seq_len = stages[self.state.stage];
            let task = SyntheticTask::new(seq_len, args.dim)?;
            let step = self.adam.steps();
            let batch = task.batch_for_step::<f32>(args.seed, step, args.batch);
            let step_start = Instant::now();
            let stats = match self.model.train_step(
                &mut self.adam,
                self.scan,
                ModelInput::OneHot(&batch.input),
                &batch.labels,
            ) {
                Ok(stats) => stats,
                Err(ModelError::NonFiniteGradient { step }) => bail!(
                    "training diverged at step {step}: the gradient is not finite; \
                     try a lower --lr or a smaller --clip"
                ),
                Err(e) => return Err(e).context("training step"),
            };
            let step_seconds = step_start.elapsed().as_secs_f64();
            let events = (seq_len * args.batch) as f64;
            self.state.train_seconds += step_seconds;
            self.state.train_events += events;
            self.state.stages[self.state.stage].iterations += 1;
            self.state.streak = if stats.batch.accuracy >= 1.0 {
                self.state.streak + 1
            } else {
                0
            };
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
            let (mut converged, mut evaluation_interrupted) = (false, false);
            if self.state.streak >= args.streak {
                self.state.streak = 0;
                if self.state.stage + 1 < stages.len() {
                    self.state.stages[self.state.stage].reached_streak = true;
                    let report = &self.state.stages[self.state.stage];
                    console.line(format!(
                        "  length {} learned after {} iterations ({:.1} s); moving to length {}",
                        report.seq_len,
                        report.iterations,
                        report.seconds,
                        stages[self.state.stage + 1]
                    ));
                    self.state.stage += 1;
                } else {
                    self.state.pending_evaluation = true;
                    match self.evaluate(&console)? {
                        Some(accuracy) => {
                            record.eval_accuracy = Some(accuracy);
                            converged = self.conclude_evaluation(accuracy, record.step, &console);
                        }
                        None => evaluation_interrupted = true,
                    }
                }
            }
            self.metrics()?.append(&record)?;
            let throughput = self.state.train_events / self.state.train_seconds.max(1e-12);
            let it_per_s = self.state.stages.iter().map(|s| s.iterations).sum::<u64>() as f64
                / self.state.train_seconds.max(1e-12);
            let message = format!(
                "n {} loss {:.4} acc {:5.1}% streak {}/{}  {:.2} it/s  {:.3e} events/s",
                seq_len,
                record.loss,
                100.0 * record.accuracy,
                self.state.streak,
                args.streak,
                it_per_s,
                throughput
            );
            console.bar.set_position(record.step);
            console.bar.set_message(message.clone());
            if console.bar.is_hidden() && last_status.elapsed() >= Duration::from_secs(10) {
                last_status = Instant::now();
                eprintln!(
                    "  step {} ({:.0} s): {message}",
                    record.step, record.wall_seconds
                );
            }
            self.history.push(record);
            if converged {
                break StopReason::Converged;
            }
            if evaluation_interrupted {
                break StopReason::Interrupted;
            }
            let every = args.checkpoint_every();
            if every > 0 && self.adam.steps() % every == 0 {
                self.save()?;
            }
        };
        let now = Instant::now();
        self.state.stages[self.state.stage].seconds += (now - mark).as_secs_f64();
        console.bar.finish_and_clear();
        Ok(reason)
    }

    /// Accuracy on `eval_sequences` fresh sequences of the target length, never seen in
    /// training (their own seed stream), evaluated in memory-bounded chunks; `None` when
    /// Ctrl-C interrupted it (the next evaluation then uses the same sequences).
    fn evaluate(&mut self, console: &Console) -> Result<Option<f64>> {
        let args = self.args;
        let task = SyntheticTask::new(args.seq_len, args.dim)?;
        let per_sequence = args.training_memory_bytes()? as f64 / args.batch as f64;
        let budget = system::available_memory_bytes().map_or(1e9, |b| b as f64 / 4.0);
        let chunk = ((budget / per_sequence) as usize).clamp(1, 256);
        let eval_seed = args.seed ^ 0x005E_ED0F_E7A1;
        let round = self.state.eval_rounds;
        console.line(format!(
            "  evaluating after step {} on {} fresh sequences of length {}",
            self.adam.steps(),
            args.eval_sequences,
            args.seq_len
        ));
        let start = Instant::now();
        let (mut correct, mut seen, mut part) = (0, 0, 0u64);
        while seen < args.eval_sequences {
            if interrupt::interrupted() {
                console.line("  evaluation interrupted; it runs again when the run resumes");
                return Ok(None);
            }
            let size = chunk.min(args.eval_sequences - seen);
            let batch = task.batch_for_step::<f32>(eval_seed, (round << 32) | part, size);
            let stats = self
                .model
                .evaluate(self.scan, ModelInput::OneHot(&batch.input), &batch.labels)
                .context("evaluation")?;
            correct += stats.n_correct;
            seen += size;
            part += 1;
        }
        self.state.eval_rounds += 1;
        let accuracy = correct as f64 / seen as f64;
        console.line(format!(
            "  evaluation after step {}: {correct}/{seen} fresh sequences correct ({:.2} %, {:.1} s)",
            self.adam.steps(),
            100.0 * accuracy,
            start.elapsed().as_secs_f64()
        ));
        Ok(Some(accuracy))
    }

    /// Records a completed evaluation after `step`; returns whether the run converged.
    fn conclude_evaluation(&mut self, accuracy: f64, step: u64, console: &Console) -> bool {
        let args = self.args;
        self.state.pending_evaluation = false;
        self.state.last_eval_accuracy = Some(accuracy);
        if accuracy >= args.eval_threshold {
            self.state.stages[self.state.stage].reached_streak = true;
            return true;
        }
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

    fn finish(
        mut self,
        stop: StopReason,
        backend: BackendChoice,
        threads: usize,
    ) -> Result<Outcome> {
        let args = self.args;
        self.save()?;
        let (png, _) = plot::save(
            &self.dir.join(CURVE_STEM),
            &learning_curve(&self.history, args),
        )
        .context("plotting the learning curve")?;
        let wall_seconds = self.wall_seconds();
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
            eval_accuracy: self.state.last_eval_accuracy,
            eval_sequences: args.eval_sequences,
            iterations: self.adam.steps(),
            wall_seconds,
            train_seconds: self.state.train_seconds,
            events_per_second: self.state.train_events / self.state.train_seconds.max(1e-12),
            peak_rss_bytes: system::peak_rss_bytes(),
            threads,
            curriculum: self
                .state
                .stages
                .iter()
                .map(|s| StageSummary {
                    seq_len: s.seq_len,
                    iterations: s.iterations,
                    seconds: s.seconds,
                })
                .collect(),
            run_dir: self.dir.to_path_buf(),
        };
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
