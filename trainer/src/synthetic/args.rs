//! The settings of `trainer synthetic`: its flags, their defaults, the model, initialisation
//! and optimizer they describe, and every check they must pass before any work starts.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use surrogate_rnn::{
    AdamConfig, GateBiasInit, InitConfig, InputKind, LayerKind, ModelConfig, SyntheticTask,
};

use crate::backend::BackendChoice;
use crate::limits;

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

/// What a GILR-LSTM layer outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GilrOutput {
    /// `h = o ⊙ c`, the paper's model (unbounded: grows with the sequence length).
    #[default]
    Linear,
    /// `h = o ⊙ tanh(c)`, bounded like the LSTM's output.
    Tanh,
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
    /// Output of `--model gilr-lstm`: `linear` (h = o ⊙ c, the paper's) or `tanh`
    /// (h = o ⊙ tanh c, bounded).
    #[arg(conflicts_with = "resume", long, value_enum, default_value_t = GilrOutput::Linear)]
    #[serde(default)]
    pub gilr_output: GilrOutput,
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
    /// Train over the MPI processes of `mpirun -n N` (a build with `--features mpi`); see
    /// `crate::distributed`.
    #[arg(conflicts_with = "resume", long, value_enum)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<crate::distributed::Mode>,
    /// With `--distributed grid`: the processes each sequence is split over (S, dividing
    /// the process count N); the N/S groups of them split every batch.
    #[arg(conflicts_with = "resume", long, value_name = "S")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_ranks: Option<usize>,
    /// The number of processes a distributed run trains on (recorded in run.json).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<usize>,
}

impl Default for SyntheticArgs {
    fn default() -> Self {
        Self::parse_from(["synthetic"])
    }
}

const DEFAULT_MAX_ITERATIONS: u64 = 5000;

/// From this length on, [`SyntheticArgs::choose_for_length`] picks the long-sequence
/// settings.
pub const LONG_SEQUENCE: usize = 1 << 18;
const DEFAULT_CHECKPOINT_EVERY: u64 = 100;

impl SyntheticArgs {
    pub(crate) fn layer_kind(&self) -> LayerKind {
        match self.model {
            ModelChoice::GilrLstm => match self.gilr_output {
                GilrOutput::Linear => LayerKind::GilrLstm,
                GilrOutput::Tanh => LayerKind::GilrLstmTanh,
            },
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

    pub(crate) fn init_label(&self) -> String {
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

    pub(crate) fn backend(&self) -> BackendChoice {
        self.backend.unwrap_or(BackendChoice::Parallel)
    }

    pub(crate) fn max_iterations(&self) -> u64 {
        self.max_iterations.unwrap_or(DEFAULT_MAX_ITERATIONS)
    }

    pub(crate) fn checkpoint_every(&self) -> u64 {
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

    /// Bytes one training step needs on one process as it will run: in one process whole
    /// or in chunks (see [`super::step::training_bytes`]); in a distributed run whole, on
    /// the largest share of steps and sequences a process holds
    /// ([`crate::distributed::Split::per_rank`]: `⌈T/S⌉ × ⌈B/D⌉`, its input included, since
    /// every process draws only its part of the batch).
    pub(crate) fn training_memory_bytes(&self) -> Result<u128> {
        let split = crate::distributed::Split::of(self);
        if split.is_single() {
            return super::step::training_bytes(&self.model_config(), self.seq_len, self.batch);
        }
        let (steps, batch) = split.per_rank(self.seq_len, self.batch);
        limits::training_bytes(&self.model_config(), steps, batch)
    }

    /// Fills the settings whose flag was not given (`given(id)` is false for the clap id,
    /// the field name) with values that work for the sequence length, and returns what it
    /// chose as `--flag value` strings. Below [`LONG_SEQUENCE`] the plain defaults stand
    /// and nothing is chosen. From there on, a step costs seconds to minutes and the
    /// confirming evaluation reads 256 sequences of n steps, so the model is made as cheap
    /// per step as still learns the task (measured in the README's ablation): one layer
    /// of 4 units reading an 8-wide embedding, batch 8 (the smallest the convergence
    /// criterion allows), chrono time scales up to 65,536 steps (longer ones keep the
    /// 128-step stage from learning), and a checkpoint after every step.
    pub(crate) fn choose_for_length(&mut self, given: impl Fn(&str) -> bool) -> Vec<String> {
        let mut chosen = Vec::new();
        if self.seq_len < LONG_SEQUENCE {
            return chosen;
        }
        let mut choose = |id: &str, flag: &str, value: String| {
            if given(id) {
                return false;
            }
            chosen.push(format!("--{flag} {value}"));
            true
        };
        if choose("hidden", "hidden", "4".into()) {
            self.hidden = 4;
        }
        if choose("layers", "layers", "1".into()) {
            self.layers = 1;
        }
        if choose("embedding", "embedding", "8".into()) {
            self.embedding = 8;
        }
        if choose("batch", "batch", "8".into()) {
            self.batch = 8;
        }
        if self.init == InitChoice::Chrono
            && choose("chrono_max_len", "chrono-max-len", "65536".into())
        {
            self.chrono_max_len = Some(1 << 16);
        }
        if choose("checkpoint_every", "checkpoint-every", "1".into()) {
            self.checkpoint_every = Some(1);
        }
        chosen
    }

    /// Refuses a flag given on the command line (`given(id)` for the clap id) that the
    /// other settings leave unused, rather than ignore it.
    pub(crate) fn refuse_unused_flags(&self, given: impl Fn(&str) -> bool) -> Result<()> {
        let unused = [
            (
                "qrnn_width",
                "--qrnn-width",
                "--model qrnn",
                self.model == ModelChoice::Qrnn,
            ),
            (
                "gilr_output",
                "--gilr-output",
                "--model gilr-lstm",
                self.model == ModelChoice::GilrLstm,
            ),
            (
                "chrono_max_len",
                "--chrono-max-len",
                "--init chrono",
                self.init == InitChoice::Chrono,
            ),
            (
                "forget_bias",
                "--forget-bias",
                "--init constant",
                self.init == InitChoice::Constant,
            ),
        ];
        for (id, flag, needs, applies) in unused {
            ensure!(
                applies || !given(id),
                "{flag} applies to {needs} only; drop it or pass {needs}"
            );
        }
        Ok(())
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
        ensure!(
            self.gilr_output == GilrOutput::Linear || self.model == ModelChoice::GilrLstm,
            "--gilr-output applies to --model gilr-lstm only"
        );
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
            ensure!(len >= 1, "--chrono-max-len must be at least 1");
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
                "--max-seconds must be positive (got {})",
                crate::console::number(seconds)
            );
        }
        match (self.distributed, self.sequence_ranks) {
            (Some(crate::distributed::Mode::Grid), None) => bail!(
                "--distributed grid needs --sequence-ranks S: the processes each sequence is \
                 split over (S must divide the process count)"
            ),
            (Some(crate::distributed::Mode::Grid), Some(0)) => {
                bail!("--sequence-ranks must be at least 1")
            }
            (Some(crate::distributed::Mode::Grid), Some(_)) | (_, None) => {}
            (_, Some(_)) => bail!("--sequence-ranks applies to --distributed grid only"),
        }
        limits::check_threads(self.threads)?;
        let needed = self
            .training_memory_bytes()
            .context("the configuration is impossible")?;
        let split = crate::distributed::Split::of(self);
        let (steps, batch) = split.per_rank(self.seq_len, self.batch);
        let per_process = if split.is_single() {
            ""
        } else {
            " on each process"
        };
        limits::check_memory(
            &format!(
                "one training step{per_process} (T = {steps}, B = {batch}, {} layers of {} {}, \
                 input dimension {}, parameters and optimizer state included)",
                self.layers,
                self.hidden,
                self.layer_kind().label(),
                self.dim
            ),
            needed,
            if split.is_single() {
                "reduce --batch, --hidden, --dim or --seq-len"
            } else {
                "reduce --batch, --hidden, --dim or --seq-len, or split over more processes \
                 (a distributed step runs whole, not in chunks)"
            },
        )?;
        // After the memory check, whose message says what to reduce.
        self.model_config()
            .validate()
            .context("the model configuration is impossible")?;
        SyntheticTask::new(self.seq_len, self.dim).context("--dim or --seq-len")?;
        Ok(())
    }
}
