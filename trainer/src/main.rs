//! # trainer
//!
//! The project's command-line tool. It trains linear surrogate RNNs on the synthetic
//! long-dependency task of Martin & Cundy (2018, §3; Hochreiter & Schmidhuber's problem
//! 2b) and reproduces the paper's three experiments:
//!
//! * `synthetic` (the default): one training run with a progress bar, metrics as CSV and
//!   JSON Lines, a learning-curve plot, checkpoints, `--resume` and a `summary.json`;
//! * `kernel-bench`: Table 1, serial vs parallel scan at batch 1;
//! * `rnn-bench`: Table 2, training throughput with the serial vs the parallel scan;
//! * `reproduce`: all three, written up as a markdown report with plots.
//!
//! Design decision: the scan backend is a run-time choice ([`backend::BackendChoice`])
//! resolved once into a `Box<dyn LinearScan<f32>>` and passed to the model, so the same
//! binary compares the serial and the parallel recurrence with no other change. Every
//! check that can fail (flags, model shape, memory estimate, output folder, backend
//! availability) runs before any training work starts.
//!
//! ```text
//! cargo run --release -p trainer                       # the default synthetic run
//! cargo run --release -p trainer -- synthetic --help   # every flag
//! ```
#![forbid(unsafe_code)]

mod atomic;
mod backend;
mod bench;
mod console;
mod distributed;
mod fault;
mod interrupt;
mod limits;
mod metrics;
mod plot;
mod report;
mod reproduce;
mod resume;
mod run_dir;
mod schedule;
mod state;
mod summary;
mod synthetic;
mod system;
mod table3;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Train linear surrogate RNNs and reproduce the experiments of "Parallelizing Linear
/// Recurrent Neural Nets Over Sequence Length" (Martin & Cundy, ICLR 2018).
///
/// With no subcommand, runs `synthetic` with its defaults: a 2 × 32 GILR-LSTM learning the
/// long-dependency task on sequences of 4,096 steps (through a 128 → 1,024 → 4,096 length
/// curriculum), which converges in well under a minute on two CPU cores.
#[derive(Parser, Debug)]
#[command(name = "trainer", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train on the synthetic long-dependency task (the paper's Table 3).
    Synthetic(Box<synthetic::SyntheticArgs>),
    /// Table 1: speedup of the parallel scan over the serial scan at batch 1.
    KernelBench(bench::KernelBenchArgs),
    /// Table 2: training-throughput speedup of LS-RNNs with the parallel scan.
    RnnBench(bench::RnnBenchArgs),
    /// Run all three experiments and write a markdown report with plots.
    Reproduce(reproduce::ReproduceArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let command = cli
        .command
        .unwrap_or_else(|| Command::Synthetic(Box::default()));
    let result = match command {
        Command::Synthetic(args) => {
            synthetic_command(*args, matches.subcommand_matches("synthetic"))
        }
        Command::KernelBench(args) => bench::kernel_bench(&args).map(|_| ExitCode::SUCCESS),
        Command::RnnBench(args) => bench::rnn_bench(&args).map(|_| ExitCode::SUCCESS),
        Command::Reproduce(args) => reproduce::run(&args).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error
                .chain()
                .any(|cause| cause.is::<interrupt::Interrupted>())
            {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `trainer synthetic` with the flags of its command line (`None`: no subcommand given).
fn synthetic_command(
    mut args: synthetic::SyntheticArgs,
    matches: Option<&clap::ArgMatches>,
) -> anyhow::Result<ExitCode> {
    let given =
        |id: &str| matches.is_some_and(|m| m.value_source(id) == Some(ValueSource::CommandLine));
    args.refuse_unused_flags(given)?;
    // Settings chosen by the sequence length, unless their flag was given.
    let chosen = args.choose_for_length(given);
    if !chosen.is_empty() {
        println!(
            "n = {}: chose {} for this length (a flag overrides each)",
            args.seq_len,
            chosen.join(" ")
        );
    }
    distributed::run_synthetic(&args).map(|outcome| outcome.exit_code())
}
