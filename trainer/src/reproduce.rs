//! `trainer reproduce`: the paper's three experiments in one report folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};

use crate::bench::{self, KernelBenchArgs, OutputArgs, RnnBenchArgs};
use crate::synthetic::{self, ModelChoice, StopReason, SyntheticArgs};

/// How much time the reproduction may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Budget {
    /// A few minutes on two cores: Table 1 in full, Table 2 at a quarter of the paper's
    /// minibatch and 2 × 128 hidden, Table 3 at n = 1,024.
    Quick,
    /// The paper's configurations (about an hour on two cores): Table 2 at 2 × 256 hidden
    /// and B·T = 65,536, Table 3 at n = 1,024 and 8,192.
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
    /// Wall-time limit of each LSTM baseline run in seconds (the LSTM is slow to converge).
    #[arg(long)]
    pub lstm_max_seconds: Option<f64>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The paper's Table 3: (n, LSTM iterations, GILR iterations, LSTM hours, GILR hours).
const PAPER_TABLE3: [(usize, &str, &str, &str, &str); 3] = [
    (1024, "1,000 ± 400", "550 ± 40", "0.28 h", "0.031 h"),
    (8192, "440 ± 50", "560 ± 160", "0.58 h", "0.10 h"),
    (
        1_048_576,
        "did not converge",
        "14,000 ± 3,000",
        "—",
        "9.7 ± 1.7 h",
    ),
];

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
    let quick = args.budget == Budget::Quick;
    let lstm_limit = args
        .lstm_max_seconds
        .unwrap_or(if quick { 180.0 } else { 1200.0 });
    let lengths: &[usize] = if quick { &[1024] } else { &[1024, 8192] };
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
    let table3_args = |seq_len, model, out| SyntheticArgs {
        seq_len,
        model,
        out: Some(out),
        force: true,
        max_seconds: (model == ModelChoice::Lstm).then_some(lstm_limit),
        checkpoint_every: Some(0),
        ..SyntheticArgs::default()
    };
    // Every configuration is checked before the first experiment starts.
    let nowhere = || OutputArgs {
        out: None,
        runs_dir: PathBuf::new(),
        force: false,
    };
    table1_args(nowhere()).validate()?;
    table2_args(nowhere()).validate()?;
    for &seq_len in lengths {
        for model in [ModelChoice::Lstm, ModelChoice::GilrLstm] {
            table3_args(seq_len, model, PathBuf::new()).validate()?;
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
    for &seq_len in lengths {
        let mut pair = Vec::new();
        for model in [ModelChoice::Lstm, ModelChoice::GilrLstm] {
            let name = format!(
                "synthetic-{}-n{seq_len}",
                if model == ModelChoice::Lstm {
                    "lstm"
                } else {
                    "gilr-lstm"
                }
            );
            let run_args = table3_args(seq_len, model, dir.join(&name));
            let outcome =
                synthetic::run(&run_args).with_context(|| format!("the synthetic run `{name}`"))?;
            if outcome.summary.stop_reason == StopReason::Interrupted {
                bail!(
                    "interrupted; the partial results are in `{}`",
                    dir.display()
                );
            }
            pair.push((name, outcome.summary));
        }
        table3.push((seq_len, pair));
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
        "Both models: {} layers × {} hidden, embedding {}, batch {}, Adam lr {}, clip {}, chrono \
         gate-bias initialisation, length curriculum `{}`, one seed ({}). Converged = {} \
         consecutive minibatches at 100 % and ≥ {:.0} % on {} fresh sequences. The LSTM \
         run is limited to {lstm_limit:.0} s. Wall time counts everything, curriculum and \
         evaluation included. The paper used 2 × 512 units, five seeds and a GPU.\n",
        defaults.layers,
        defaults.hidden,
        defaults.embedding,
        defaults.batch,
        defaults.lr,
        defaults.clip,
        defaults.curriculum,
        defaults.seed,
        defaults.streak,
        100.0 * defaults.eval_threshold,
        defaults.eval_sequences
    )?;
    writeln!(
        md,
        "| n | LSTM iterations | GILR-LSTM iterations | LSTM wall time | GILR-LSTM wall time |\n|---:|---:|---:|---:|---:|"
    )?;
    for (seq_len, pair) in &table3 {
        let paper = PAPER_TABLE3.iter().find(|row| row.0 == *seq_len);
        let iterations = |s: &synthetic::Summary| {
            if s.converged {
                s.iterations.to_string()
            } else {
                format!("not converged in {}", s.iterations)
            }
        };
        let (lstm, gilr) = (&pair[0].1, &pair[1].1);
        writeln!(
            md,
            "| {seq_len} | {} ({}) | {} ({}) | {:.1} s ({}) | {:.1} s ({}) |",
            iterations(lstm),
            paper.map_or("—", |p| p.1),
            iterations(gilr),
            paper.map_or("—", |p| p.2),
            lstm.wall_seconds,
            paper.map_or("—", |p| p.3),
            gilr.wall_seconds,
            paper.map_or("—", |p| p.4),
        )?;
    }
    writeln!(md)?;
    for (_, pair) in &table3 {
        for (name, summary) in pair {
            writeln!(
                md,
                "### {name}\n\n{} after {} iterations, {:.1} s; evaluation {}; {:.3e} events/s\n\n![{name}]({name}/learning_curve.png)\n",
                if summary.converged { "converged" } else { "not converged" },
                summary.iterations,
                summary.wall_seconds,
                summary
                    .eval_accuracy
                    .map_or("not reached".to_owned(), |a| format!("{:.2} %", 100.0 * a)),
                summary.events_per_second,
            )?;
        }
    }
    let report = dir.join("report.md");
    crate::atomic::write(&report, md.as_bytes())?;
    println!("report: {}", report.display());
    Ok(())
}
