//! `trainer reproduce`: the paper's three experiments in one report folder.
//!
//! Ctrl-C stops it at the next benchmark shape or training step (a training run writes
//! its checkpoint first); `--resume` continues in the same folder: finished tables and
//! runs are kept, interrupted runs continue from their checkpoints.

mod report;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::bench::{self, BenchReport, KernelBenchArgs, OutputArgs, RnnBenchArgs};
use crate::interrupt::{self, Interrupted};
use crate::report::table_files;
use crate::resume::Progress;
use crate::synthetic::{self, StopReason, SyntheticArgs};
use crate::table3::{self, Row};

/// How much time the reproduction may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// A few minutes on two cores: Table 1 in full, Table 2 at a quarter of the paper's
    /// minibatch and 2 × 128 hidden, Table 3 at n = 1,024 with two seeds.
    Quick,
    /// The paper's configurations (several hours on two cores, see the trainer README):
    /// Table 2 at 2 × 256 hidden and B·T = 65,536, Table 3 at n = 1,024 and 8,192 with
    /// five seeds and at n = 2²⁰ with two seeds, both models each.
    Full,
}

/// The flags `--resume` takes from the report folder (any of them with it is an error).
const FIXED_FLAGS: [&str; 7] = [
    "budget",
    "backend",
    "lstm_max_seconds",
    "million_max_seconds",
    "out",
    "runs_dir",
    "force",
];

/// Run Tables 1, 2 and 3 and write `report.md` with the tables beside the paper's figures
/// and the plots embedded.
#[derive(Args, Debug, Clone)]
pub struct ReproduceArgs {
    /// How long to spend.
    #[arg(long, value_enum, default_value_t = Budget::Quick)]
    pub budget: Budget,
    /// `cpu` or `cuda` for the scan benchmarks (Tables 1 and 2).
    #[arg(long, value_enum, default_value_t = bench::Device::Cpu)]
    pub backend: bench::Device,
    /// Wall-time limit of each LSTM baseline run at n ≤ 8,192 in seconds (the LSTM is
    /// slow to converge) [default: 180 quick, 1200 full].
    #[arg(long)]
    pub lstm_max_seconds: Option<f64>,
    /// Wall-time limit of each n = 2²⁰ run (GILR-LSTM and LSTM alike), in seconds; full
    /// budget only [default: 900].
    #[arg(long)]
    pub million_max_seconds: Option<f64>,
    /// Continue the reproduction in this report folder: finished tables and runs are
    /// kept, interrupted runs continue from their checkpoints. Its settings come from the
    /// folder's reproduce.json (no other flag may be given).
    #[arg(long, value_name = "REPORT_DIR", conflicts_with_all = FIXED_FLAGS)]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The settings of a reproduction, kept in its folder for `--resume`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Plan {
    budget: Budget,
    backend: bench::Device,
    lstm_max_seconds: f64,
    million_max_seconds: f64,
}

/// The settings file of a report folder.
const PLAN_FILE: &str = "reproduce.json";
const REPORT_FILE: &str = "report.md";

fn positive(flag: &str, seconds: f64) -> Result<f64> {
    ensure!(
        seconds > 0.0 && !seconds.is_nan(),
        "{flag} must be positive (got {})",
        crate::console::number(seconds)
    );
    Ok(seconds)
}

impl Plan {
    fn from_args(args: &ReproduceArgs) -> Result<Self> {
        let quick = args.budget == Budget::Quick;
        ensure!(
            !(quick && args.million_max_seconds.is_some()),
            "--million-max-seconds applies to --budget full only (the quick budget has no \
             n = 2²⁰ runs)"
        );
        let lstm_default = if quick { 180.0 } else { 1200.0 };
        Ok(Self {
            budget: args.budget,
            backend: args.backend,
            lstm_max_seconds: positive(
                "--lstm-max-seconds",
                args.lstm_max_seconds.unwrap_or(lstm_default),
            )?,
            million_max_seconds: positive(
                "--million-max-seconds",
                args.million_max_seconds.unwrap_or(900.0),
            )?,
        })
    }

    fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(PLAN_FILE);
        let plan: Self = crate::resume::read_settings_file(
            &path,
            "a report folder written by `trainer reproduce`",
        )?;
        positive("lstm_max_seconds", plan.lstm_max_seconds)
            .and_then(|_| positive("million_max_seconds", plan.million_max_seconds))
            .with_context(|| format!("`{}`", path.display()))?;
        Ok(plan)
    }

    /// The folder of each Table 3 run, with its settings.
    fn runs(&self, dir: &Path) -> Vec<(Row, Vec<(String, SyntheticArgs)>)> {
        self.rows()
            .into_iter()
            .map(|row| {
                let runs = table3::MODELS
                    .into_iter()
                    .flat_map(|model| row.seeds.iter().map(move |&seed| (model, seed)))
                    .map(|(model, seed)| {
                        let name = row.run_name(model, seed);
                        let args = row.run_args(model, seed, dir.join(&name));
                        (name, args)
                    })
                    .collect();
                (row, runs)
            })
            .collect()
    }

    fn quick(&self) -> bool {
        self.budget == Budget::Quick
    }

    fn rows(&self) -> Vec<Row> {
        if self.quick() {
            vec![Row::new(1024, 2, self.lstm_max_seconds)]
        } else {
            vec![
                Row::new(1024, 5, self.lstm_max_seconds),
                Row::new(8192, 5, self.lstm_max_seconds),
                Row::million(2, self.million_max_seconds),
            ]
        }
    }

    fn table1(&self, output: OutputArgs) -> KernelBenchArgs {
        KernelBenchArgs {
            backend: self.backend,
            steps: vec![16, 256, 4096, 65536],
            features: vec![4, 32, 128],
            budget_ms: if self.quick() { 100 } else { 400 },
            output,
        }
    }

    fn table2(&self, output: OutputArgs) -> RnnBenchArgs {
        let quick = self.quick();
        RnnBenchArgs {
            backend: self.backend,
            steps: if quick {
                vec![16, 256, 4096]
            } else {
                vec![16, 256, 4096, 65536]
            },
            events: if quick { 16384 } else { 65536 },
            hidden: if quick { 128 } else { 256 },
            iterations: if quick { 1 } else { 2 },
            output,
        }
    }

    /// Every configuration, checked before the first experiment starts.
    fn validate(&self) -> Result<()> {
        if self.backend == bench::Device::Cuda {
            crate::backend::require_cuda()?;
        }
        let nowhere = || OutputArgs {
            out: None,
            runs_dir: PathBuf::new(),
            force: false,
        };
        self.table1(nowhere()).validate()?;
        self.table2(nowhere()).validate()?;
        for (_, runs) in self.runs(Path::new("")) {
            for (_, run_args) in runs {
                run_args.validate()?;
            }
        }
        Ok(())
    }
}

/// Runs `trainer reproduce`; an interruption is an [`Interrupted`] error whose context
/// names the `--resume` command.
pub fn run(args: &ReproduceArgs) -> Result<()> {
    let (plan, dir, resuming) = match &args.resume {
        Some(dir) => {
            let plan = Plan::read(dir)?;
            plan.validate()?;
            (plan, dir.clone(), true)
        }
        None => {
            let plan = Plan::from_args(args)?;
            plan.validate()?;
            let dir = crate::run_dir::prepare(
                args.output.out.as_deref(),
                &args.output.runs_dir,
                "reproduce",
                args.output.force,
                &[REPORT_FILE, PLAN_FILE],
            )?;
            clear_outputs(&plan, &dir)?;
            let text = serde_json::to_string_pretty(&plan)?;
            crate::atomic::write(&dir.join(PLAN_FILE), text.as_bytes())?;
            (plan, dir, false)
        }
    };
    // From here on, Ctrl-C stops at the next shape or step, and `--resume` continues.
    interrupt::install_handler();
    experiments(&plan, &dir, resuming).map_err(|error| {
        if error.chain().any(|cause| cause.is::<Interrupted>()) {
            error.context(format!(
                "the reproduction stopped; continue it with `trainer reproduce --resume {}`",
                dir.display()
            ))
        } else {
            error
        }
    })
}

/// Runs (or, resuming, finishes) the three experiments in `dir` and writes the report.
fn experiments(plan: &Plan, dir: &Path, resuming: bool) -> Result<()> {
    let sub = |name: &str| OutputArgs {
        out: Some(dir.join(name)),
        runs_dir: dir.to_path_buf(),
        force: true,
    };
    eprintln!("== Table 1: kernel speedup");
    let table1 = match kept_table(resuming, &dir.join("kernel-bench"), bench::KERNEL_STEM)? {
        Some(report) => report,
        None => bench::kernel_bench(&plan.table1(sub("kernel-bench")))?,
    };
    eprintln!("== Table 2: training throughput");
    let table2 = match kept_table(resuming, &dir.join("rnn-bench"), bench::RNN_STEM)? {
        Some(report) => report,
        None => bench::rnn_bench(&plan.table2(sub("rnn-bench")))?,
    };
    eprintln!("== Table 3: synthetic long-dependency task");
    let mut table3 = Vec::new();
    for (row, runs) in plan.runs(dir) {
        // In `runs`' order: every seed of the first model, then of the second.
        let mut summaries = Vec::new();
        for (name, run_args) in runs {
            eprintln!("-- {name}");
            let summary = table3_run(&run_args, resuming).with_context(|| {
                format!(
                    "the synthetic run `{name}` (to run it anew, remove its folder and \
                     resume the reproduction)"
                )
            })?;
            summaries.push(summary);
        }
        let second = summaries.split_off(row.seeds.len());
        table3.push((row, [summaries, second]));
    }
    let results = report::Results {
        quick: plan.quick(),
        table1,
        table2,
        table3,
    };
    let report = dir.join(REPORT_FILE);
    crate::atomic::write(&report, report::markdown(&results, dir)?.as_bytes())?;
    println!("report: {}", report.display());
    Ok(())
}

/// Removes what a reproduction writes into `dir` (its tables' files, its runs' files), so
/// that a new reproduction over an old folder (`--force`) never keeps a stale result
/// when it is resumed.
fn clear_outputs(plan: &Plan, dir: &Path) -> Result<()> {
    let tables = [
        ("kernel-bench", bench::KERNEL_STEM),
        ("rnn-bench", bench::RNN_STEM),
    ];
    let files = tables
        .iter()
        .flat_map(|(folder, stem)| {
            table_files(stem)
                .into_iter()
                .map(move |f| dir.join(folder).join(f))
        })
        .chain(plan.runs(dir).into_iter().flat_map(|(_, runs)| {
            runs.into_iter().flat_map(|(name, _)| {
                crate::resume::OWNED_FILES
                    .iter()
                    .map(move |f| dir.join(&name).join(f))
            })
        }));
    for path in files {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing `{}`", path.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A table an earlier session of the reproduction finished (every file written), when
/// resuming; its markdown is printed again.
fn kept_table(resuming: bool, dir: &Path, stem: &str) -> Result<Option<BenchReport>> {
    if !resuming
        || !table_files(stem)
            .iter()
            .all(|name| dir.join(name).is_file())
    {
        return Ok(None);
    }
    let path = dir.join(format!("{stem}.md"));
    let markdown =
        std::fs::read_to_string(&path).with_context(|| format!("reading `{}`", path.display()))?;
    println!("{markdown}");
    println!("kept from the earlier session: {}", dir.display());
    Ok(Some(BenchReport {
        markdown,
        plot_png: dir.join(format!("{stem}.png")),
    }))
}

/// One run of Table 3 (`run_args.out` is its folder): kept if an earlier session finished
/// it, continued from its checkpoint, or started.
fn table3_run(run_args: &SyntheticArgs, resuming: bool) -> Result<synthetic::Summary> {
    let dir = run_args.out.clone().context("a Table 3 run has a folder")?;
    let progress = if resuming {
        crate::resume::progress(&dir, run_args)?
    } else {
        Progress::NotStarted
    };
    let outcome = match progress {
        Progress::Finished(summary) => {
            eprintln!(
                "   kept from the earlier session ({})",
                summary.stop_reason.describe()
            );
            return Ok(*summary);
        }
        Progress::Resumable => synthetic::run(&SyntheticArgs {
            resume: Some(dir),
            ..SyntheticArgs::default()
        })?,
        Progress::NotStarted => synthetic::run(run_args)?,
    };
    if outcome.summary.stop_reason == StopReason::Interrupted {
        return Err(Interrupted.into());
    }
    Ok(outcome.summary)
}
