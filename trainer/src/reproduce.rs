//! `trainer reproduce`: the paper's three experiments in one report folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};

use crate::bench::{self, KernelBenchArgs, OutputArgs, RnnBenchArgs};
use crate::synthetic::{self, StopReason, SyntheticArgs};
use crate::table3::{self, Row};

/// How much time the reproduction may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Budget {
    /// A few minutes on two cores: Table 1 in full, Table 2 at a quarter of the paper's
    /// minibatch and 2 × 128 hidden, Table 3 at n = 1,024 with two seeds.
    Quick,
    /// The paper's configurations (several hours on two cores, see the trainer README):
    /// Table 2 at 2 × 256 hidden and B·T = 65,536, Table 3 at n = 1,024 and 8,192 with
    /// five seeds and at n = 2²⁰ with two seeds, both models each.
    Full,
}

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
    /// budget only.
    #[arg(long, default_value_t = 900.0)]
    pub million_max_seconds: f64,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Runs `trainer reproduce`.
pub fn run(args: &ReproduceArgs) -> Result<()> {
    if args.backend == bench::Device::Cuda {
        crate::backend::require_cuda()?;
    }
    if let Some(seconds) = args.lstm_max_seconds {
        ensure!(
            seconds > 0.0 && !seconds.is_nan(),
            "--lstm-max-seconds must be positive (got {seconds})"
        );
    }
    ensure!(
        args.million_max_seconds > 0.0 && !args.million_max_seconds.is_nan(),
        "--million-max-seconds must be positive (got {})",
        args.million_max_seconds
    );
    let quick = args.budget == Budget::Quick;
    let lstm_limit = args
        .lstm_max_seconds
        .unwrap_or(if quick { 180.0 } else { 1200.0 });
    let rows = if quick {
        vec![Row::new(1024, 2, lstm_limit)]
    } else {
        vec![
            Row::new(1024, 5, lstm_limit),
            Row::new(8192, 5, lstm_limit),
            Row::million(2, args.million_max_seconds),
        ]
    };
    let table1_args = |output| KernelBenchArgs {
        backend: args.backend,
        steps: vec![16, 256, 4096, 65536],
        features: vec![4, 32, 128],
        budget_ms: if quick { 100 } else { 400 },
        output,
    };
    let table2_args = |output| RnnBenchArgs {
        backend: args.backend,
        steps: if quick {
            vec![16, 256, 4096]
        } else {
            vec![16, 256, 4096, 65536]
        },
        events: if quick { 16384 } else { 65536 },
        hidden: if quick { 128 } else { 256 },
        iterations: if quick { 1 } else { 2 },
        output,
    };
    // Every configuration is checked before the first experiment starts.
    let nowhere = || OutputArgs {
        out: None,
        runs_dir: PathBuf::new(),
        force: false,
    };
    table1_args(nowhere()).validate()?;
    table2_args(nowhere()).validate()?;
    for row in &rows {
        for model in table3::MODELS {
            for &seed in &row.seeds {
                row.run_args(model, seed, PathBuf::new()).validate()?;
            }
        }
    }
    let dir = crate::run_dir::prepare(
        args.output.out.as_deref(),
        &args.output.runs_dir,
        "reproduce",
        args.output.force,
        &["report.md"],
    )?;
    let sub = |name: &str| OutputArgs {
        out: Some(dir.join(name)),
        runs_dir: dir.clone(),
        force: true,
    };

    eprintln!("== Table 1: kernel speedup");
    let table1 = bench::kernel_bench(&table1_args(sub("kernel-bench")))?;

    eprintln!("== Table 2: training throughput");
    let table2 = bench::rnn_bench(&table2_args(sub("rnn-bench")))?;

    eprintln!("== Table 3: synthetic long-dependency task");
    let mut table3 = Vec::new();
    for row in rows {
        let mut runs = [Vec::new(), Vec::new()];
        for (model, summaries) in table3::MODELS.into_iter().zip(&mut runs) {
            for &seed in &row.seeds {
                let name = row.run_name(model, seed);
                eprintln!("-- {name}");
                let run_args = row.run_args(model, seed, dir.join(&name));
                let outcome = synthetic::run(&run_args)
                    .with_context(|| format!("the synthetic run `{name}`"))?;
                if outcome.summary.stop_reason == StopReason::Interrupted {
                    bail!(
                        "interrupted; the partial results are in `{}`",
                        dir.display()
                    );
                }
                summaries.push(outcome.summary);
            }
        }
        table3.push((row, runs));
    }

    let mut md = String::new();
    writeln!(
        md,
        "# Reproduction of Martin & Cundy (2018), budget `{}`\n",
        if quick { "quick" } else { "full" }
    )?;
    writeln!(
        md,
        "Numbers in parentheses are the paper's (NVIDIA K80 GPU); ours come from this machine \
         and this run. Speedups are ratios measured in one process.\n"
    )?;
    writeln!(md, "## Table 1: scan kernel speedup\n\n{}", table1.markdown)?;
    writeln!(md, "![Table 1]({})\n", relative(&table1.plot_png, &dir))?;
    writeln!(
        md,
        "## Table 2: training throughput speedup\n\n{}",
        table2.markdown
    )?;
    if quick {
        writeln!(
            md,
            "(Quick budget: 2 × 128 hidden and B·T = 16,384, so the paper's column is \
             left out; run `--budget full` for the paper's configuration.)\n"
        )?;
    }
    writeln!(md, "![Table 2]({})\n", relative(&table2.plot_png, &dir))?;
    writeln!(md, "## Table 3: synthetic long-dependency task\n")?;
    let defaults = SyntheticArgs::default();
    writeln!(
        md,
        "Both models: Adam lr {}, clip {}, chrono gate-bias initialisation, length \
         curriculum. Converged = {} consecutive minibatches at 100 % and ≥ {:.0} % on {} \
         fresh sequences.\n",
        defaults.lr,
        defaults.clip,
        defaults.streak,
        100.0 * defaults.eval_threshold,
        defaults.eval_sequences
    )?;
    writeln!(md, "{}", table3::markdown(&table3)?)?;
    for (row, runs) in &table3 {
        for (model, summaries) in table3::MODELS.into_iter().zip(runs) {
            for summary in summaries {
                let name = row.run_name(model, summary.seed);
                writeln!(
                    md,
                    "### {name}\n\n{} after {} iterations, {:.1} s; evaluation {}; {:.3e} events/s\n\n![{name}]({name}/learning_curve.png)\n",
                    if summary.converged {
                        "converged".to_owned()
                    } else {
                        format!("not converged ({:?})", summary.stop_reason)
                    },
                    summary.iterations,
                    summary.wall_seconds,
                    summary
                        .eval_accuracy
                        .map_or("not reached".to_owned(), |a| format!("{:.2} %", 100.0 * a)),
                    summary.events_per_second,
                )?;
            }
        }
    }
    let report = dir.join("report.md");
    crate::atomic::write(&report, md.as_bytes())?;
    println!("report: {}", report.display());
    Ok(())
}
