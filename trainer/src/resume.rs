//! The run folder: a new run's folder and settings (`run.json`), and `--resume`, which
//! reads everything in the folder and checks it against everything else (settings,
//! checkpoint, loop state, metrics, summary) before a single file is touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use surrogate_rnn::{
    load_checkpoint_into, read_checkpoint_meta, Adam, CheckpointMeta, Classifier, ModelError,
};

use crate::atomic;
use crate::metrics::{self, Record};
use crate::state::LoopState;
use crate::summary::Summary;
use crate::synthetic::SyntheticArgs;

/// The settings file of a run folder.
pub const SETTINGS_FILE: &str = "run.json";
/// The checkpoint of a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The summary of a finished (or interrupted) session.
pub const SUMMARY_FILE: &str = "summary.json";
/// Every file a run folder's owner writes (`--force` replaces only these).
pub const OWNED_FILES: &[&str] = &[
    CHECKPOINT_FILE,
    SETTINGS_FILE,
    SUMMARY_FILE,
    metrics::CSV_FILE,
    metrics::JSONL_FILE,
    "learning_curve.png",
    "learning_curve.svg",
];
/// Checkpoint metadata: the run's identity, its settings and the loop state.
const RUN_ID_KEY: &str = "run_id";
const SETTINGS_KEY: &str = "settings";
const STATE_KEY: &str = "loop_state";

/// What `run.json` holds: the settings and an identity shared with the run's checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSettings {
    /// A name unique to this run, stored in every checkpoint.
    #[serde(default)]
    pub run_id: String,
    #[serde(flatten)]
    pub args: SyntheticArgs,
}

impl RunSettings {
    /// The settings of a new run, with a fresh identity.
    pub fn new(args: &SyntheticArgs) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut args = args.clone();
        args.resume = None;
        args.force = false;
        Self {
            run_id: format!("{nanos:x}-{:x}", std::process::id()),
            args,
        }
    }

    /// Writes `run.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        atomic::write(&dir.join(SETTINGS_FILE), text.as_bytes())
    }

    /// The metadata entries a checkpoint of this run carries besides the loop state.
    pub fn checkpoint_extra(&self, state: &LoopState) -> Result<BTreeMap<String, String>> {
        let mut extra = BTreeMap::new();
        extra.insert(STATE_KEY.to_owned(), serde_json::to_string(state)?);
        extra.insert(RUN_ID_KEY.to_owned(), self.run_id.clone());
        extra.insert(
            SETTINGS_KEY.to_owned(),
            serde_json::to_string(&self.args.fixed())?,
        );
        extra.insert("tool".to_owned(), "trainer synthetic".to_owned());
        Ok(extra)
    }
}

/// A run ready to train: the settings of this session (with `run.json`'s identity), its
/// folder, and the state it starts from.
pub struct Session {
    pub settings: RunSettings,
    pub dir: PathBuf,
    pub model: Classifier<f32>,
    pub adam: Adam<f32>,
    pub state: LoopState,
    pub history: Vec<Record>,
}

/// Reads the settings file `path` that `--resume` needs; `folder` says which folder
/// holds it (`a run folder written by trainer synthetic`).
pub fn read_settings_file<T: serde::de::DeserializeOwned>(path: &Path, folder: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading `{}`: --resume needs {folder}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing `{}`", path.display()))
}

fn read_settings(dir: &Path) -> Result<RunSettings> {
    let path = dir.join(SETTINGS_FILE);
    let settings: RunSettings =
        read_settings_file(&path, "a run folder written by `trainer synthetic`")?;
    ensure!(
        !settings.run_id.is_empty(),
        "`{}` has no run_id: it was written by an older version of the trainer; start a new run",
        path.display()
    );
    Ok(settings)
}

/// Turns a checkpoint error into a message that says what to do.
fn describe_checkpoint_error(error: ModelError) -> anyhow::Error {
    let hint = match &error {
        ModelError::Io { .. } => "the run folder has no readable checkpoint",
        _ => "the checkpoint is corrupt, truncated or from another model; start a new run",
    };
    anyhow::Error::new(error).context(format!("cannot resume: {hint}"))
}

/// The settings that differ between `a` and `b` (named as the pair says), one line each.
fn differences(
    a: &SyntheticArgs,
    b: &SyntheticArgs,
    (a_name, b_name): (&str, &str),
) -> Result<Vec<String>> {
    let (Value::Object(a), Value::Object(b)) = (serde_json::to_value(a)?, serde_json::to_value(b)?)
    else {
        bail!("settings are not a JSON object");
    };
    Ok(a.iter()
        .filter(|(key, value)| b.get(*key) != Some(value))
        .map(|(key, value)| {
            format!(
                "{key}: {value} in {a_name}, {} in {b_name}",
                b.get(key).unwrap_or(&Value::Null)
            )
        })
        .collect())
}

/// Checks the checkpoint's metadata against the run's settings; returns its loop state.
fn check_meta(
    meta: &CheckpointMeta,
    settings: &RunSettings,
    args: &SyntheticArgs,
) -> Result<LoopState> {
    let entry = |key: &str| {
        meta.extra.get(key).with_context(|| {
            format!("the checkpoint has no `{key}` entry (not a trainer checkpoint)")
        })
    };
    ensure!(
        *entry(RUN_ID_KEY)? == settings.run_id,
        "the checkpoint belongs to another run (run id {}, this folder's run.json says {})",
        entry(RUN_ID_KEY)?,
        settings.run_id
    );
    let saved: SyntheticArgs = serde_json::from_str(entry(SETTINGS_KEY)?)
        .context("the checkpoint's settings entry is invalid")?;
    let changed = differences(&args.fixed(), &saved, ("run.json", "the checkpoint"))?;
    ensure!(
        changed.is_empty(),
        "run.json does not match the settings the checkpoint was saved with ({}); was run.json \
         edited?",
        changed.join("; ")
    );
    ensure!(
        meta.seed == args.seed,
        "the checkpoint was saved with seed {}, run.json says {}",
        meta.seed,
        args.seed
    );
    ensure!(
        meta.config == args.model_config(),
        "the checkpoint's model ({:?}) is not the one run.json describes ({:?})",
        meta.config,
        args.model_config()
    );
    ensure!(
        meta.optimizer == args.adam_config(),
        "the checkpoint's optimizer settings ({:?}) are not run.json's ({:?})",
        meta.optimizer,
        args.adam_config()
    );
    let state: LoopState = serde_json::from_str(entry(STATE_KEY)?)
        .context("the checkpoint's loop state is invalid")?;
    state
        .check(&args.stages(), args.streak, meta.step)
        .context("the checkpoint's loop state does not fit the run")?;
    Ok(state)
}

/// How far the run in a folder got, for `trainer reproduce --resume`.
pub enum Progress {
    /// It finished (converged or stopped by a limit): its summary.
    Finished(Box<Summary>),
    /// It has a checkpoint to continue from.
    Resumable,
    /// Nothing to continue: start it anew.
    NotStarted,
}

/// Reads how far the run in `dir` got: finished when `summary.json` records the
/// checkpoint's step as the end of a finished session, resumable with a checkpoint. A
/// run whose settings (`run.json`, without the flags `--resume` may change, but with
/// `--max-seconds`) are not `expected`'s is an error naming the differences.
pub fn progress(dir: &Path, expected: &SyntheticArgs) -> Result<Progress> {
    let checkpoint = dir.join(CHECKPOINT_FILE);
    if !checkpoint.exists() {
        return Ok(Progress::NotStarted);
    }
    let settings = read_settings(dir)?;
    let mut changed = differences(
        &settings.args.fixed(),
        &expected.fixed(),
        ("run.json", "this plan"),
    )?;
    if settings.args.max_seconds != expected.max_seconds {
        changed.push(format!(
            "max_seconds: {:?} in run.json, {:?} in this plan",
            settings.args.max_seconds, expected.max_seconds
        ));
    }
    ensure!(
        changed.is_empty(),
        "`{}` holds a run with other settings:\n  {}",
        dir.display(),
        changed.join("\n  ")
    );
    let meta = read_checkpoint_meta(&checkpoint).map_err(describe_checkpoint_error)?;
    if !summary_records_finish(dir, meta.step) {
        return Ok(Progress::Resumable);
    }
    let path = dir.join(SUMMARY_FILE);
    let summary =
        std::fs::read_to_string(&path).with_context(|| format!("reading `{}`", path.display()))?;
    let summary = serde_json::from_str::<Summary>(&summary)
        .with_context(|| format!("parsing `{}`", path.display()))?;
    Ok(Progress::Finished(Box::new(summary)))
}

/// Whether `summary.json` records this very checkpoint as the end of a finished session.
fn summary_records_finish(dir: &Path, step: u64) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(SUMMARY_FILE)) else {
        return false;
    };
    let Ok(summary) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    summary["iterations"].as_u64() == Some(step)
        && summary["stop_reason"]
            .as_str()
            .is_some_and(|r| r != "interrupted")
}

/// Refuses to resume a run that would stop at once with its results already written.
fn refuse_finished(dir: &Path, args: &SyntheticArgs, state: &LoopState, step: u64) -> Result<()> {
    if !summary_records_finish(dir, step) {
        // A run killed after its last checkpoint: resuming writes the missing summary.
        return Ok(());
    }
    let untouched = "its files are left as they are";
    if state.converged() {
        bail!(
            "the run in `{}` already converged at step {step} (evaluation accuracy {}); {untouched}. \
             Start a new run to train again",
            dir.display(),
            state
                .last_eval_accuracy
                .map_or("unknown".to_owned(), |a| format!("{:.2} %", 100.0 * a))
        );
    }
    if step >= args.max_iterations() {
        bail!(
            "the run in `{}` already has {step} iterations, its --max-iterations; {untouched}. \
             Pass --max-iterations N with N > {step} to train on",
            dir.display()
        );
    }
    if let Some(limit) = args.max_seconds.filter(|&s| state.wall_seconds >= s) {
        bail!(
            "the run in `{}` already used {:.1} s of its --max-seconds {limit}; {untouched}. \
             Pass a larger --max-seconds to train on",
            dir.display(),
            state.wall_seconds
        );
    }
    Ok(())
}

/// Reads the run folder `dir` for `--resume` with the command line `cli`; the session's
/// settings are `run.json`'s with the flags that `cli` may give anew.
pub fn load(cli: &SyntheticArgs, dir: &Path) -> Result<Session> {
    let mut settings = read_settings(dir)?;
    let args = settings.args.clone().resumed_with(cli);
    args.validate()?;
    let checkpoint: PathBuf = dir.join(CHECKPOINT_FILE);
    let meta = read_checkpoint_meta(&checkpoint).map_err(describe_checkpoint_error)?;
    let state = check_meta(&meta, &settings, &args)
        .with_context(|| format!("cannot resume from `{}`", checkpoint.display()))?;
    refuse_finished(dir, &args, &state, meta.step)?;
    let history = metrics::read_history(dir, meta.step)?;
    let mut model = Classifier::<f32>::new(args.model_config(), args.init_config(), args.seed)
        .context("building the model")?;
    let mut adam = Adam::new(args.adam_config(), &model);
    load_checkpoint_into(&checkpoint, &mut model, &mut adam).map_err(describe_checkpoint_error)?;
    if let Some(repair) = &history.repaired {
        eprintln!("warning: {repair}");
    }
    if history.dropped > 0 {
        eprintln!(
            "note: dropping {} metrics row(s) written after the checkpoint at step {} \
             (by a run that was stopped before its next checkpoint)",
            history.dropped, meta.step
        );
    }
    settings.args = args;
    Ok(Session {
        settings,
        dir: dir.to_path_buf(),
        model,
        adam,
        state,
        history: history.records,
    })
}

/// Checks the settings of a new run, then creates its folder and `run.json`.
pub fn start_new(args: &SyntheticArgs) -> Result<Session> {
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
