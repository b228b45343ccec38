//! `trainer synthetic --distributed data|sequence`: training over the MPI processes that
//! `mpirun -n N` starts (a build with `--features mpi`): the batch split over processes
//! (`rnn_mpi::DataParallel`) or every sequence split over time (`rnn_mpi::SequenceParallel`).
//!
//! Every process runs the same training loop on the same model. The loop's decisions are
//! made identically everywhere: the batch statistics come out of the gradient exchange
//! already agreed, the clock is rank 0's and a stop request (Ctrl-C, SIGTERM) anywhere
//! stops every process at the same step ([`agree_clock`]). Only rank 0 prints and writes
//! files ([`writes_files`]). Data parallel, rank `r` draws its share of every batch from
//! its own stream (seed `seed` on rank 0, a mix of `seed` and `r` elsewhere), so a run
//! depends on its process count: `run.json` records it and `--resume` asks for the same
//! count (in both modes, for one rule). Sequence parallel, every rank draws the run's batch
//! and keeps its share of the steps, so training equals a one-process run to rounding.
//!
//! Failures: an error that every process meets together (a rank's failed step, a bad
//! setting, a diverged gradient) is printed once, by rank 0, and every process exits with
//! status 1. Any other error or a panic is printed by the process that meets it, which then
//! calls `MPI_Abort`, so `mpirun` ends the whole job with a non-zero status instead of
//! leaving the others waiting.
//!
//! Ctrl-C: `mpirun` turns it into SIGTERM for every process, which a build with the `mpi`
//! feature handles like Ctrl-C (stop after the current step, rank 0 checkpoints). Open MPI
//! kills the processes one second later unless they have exited (`odls_base_sigkill_timeout`),
//! so a step longer than that loses the work since the last periodic checkpoint.

use anyhow::Result;
use scan_core::LinearScan;
use serde::{Deserialize, Serialize};
use surrogate_rnn::{Adam, Classifier, ModelError, ModelInput, SyntheticTask, TrainStats};

use crate::resume::Session;

/// How a run is split over processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Data parallel: every process holds the model and trains on its share of each batch.
    Data,
    /// Sequence parallel: every sequence split over time across the processes, each
    /// holding its share of the steps (`rnn_mpi::SequenceParallel`).
    Sequence,
}

/// The stream a rank draws its sequences from: the run's seed on rank 0 (so a one-process
/// run sees the data of a plain run), a distinct mix of seed and rank elsewhere.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        seed
    } else {
        seed ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// One local training step on the batch of step `adam.steps()`, whole or in chunks of
/// `chunk_len` steps (see `synthetic::step`).
pub fn local_step(
    model: &mut Classifier<f32>,
    adam: &mut Adam<f32>,
    scan: &dyn LinearScan<f32>,
    task: &SyntheticTask,
    seed: u64,
    n_batch: usize,
    chunk_len: Option<usize>,
) -> Result<TrainStats, ModelError> {
    let batch = task.batch_for_step::<f32>(seed, adam.steps(), n_batch);
    let input = ModelInput::OneHot(&batch.input);
    crate::synthetic::train_step(model, adam, scan, input, &batch.labels, chunk_len)
}

/// The session of a single process, unless it belongs to a distributed run.
pub fn agree_local(session: Result<Session>) -> Result<Session> {
    let session = session?;
    if let Some(ranks) = session
        .settings
        .args
        .distributed
        .and(session.settings.args.ranks)
    {
        anyhow::bail!(
            "this run was trained with --distributed on {ranks} processes; resume it with \
             `mpirun -n {ranks} trainer synthetic --resume DIR` from a build with \
             `--features mpi`"
        );
    }
    Ok(session)
}

#[cfg(not(feature = "mpi"))]
mod imp {
    use super::*;
    use crate::resume;
    use crate::synthetic::SyntheticArgs;
    use crate::synthetic::{self, Outcome};

    /// Runs `trainer synthetic`; `--distributed` needs the `mpi` feature.
    pub fn run_synthetic(args: &SyntheticArgs) -> Result<Outcome> {
        anyhow::ensure!(
            args.distributed.is_none(),
            "--distributed needs MPI: build the trainer with `cargo build --release -p trainer \
             --features mpi` (Open MPI or MPICH, and libclang) and start it with `mpirun -n N`"
        );
        synthetic::run(args)
    }

    /// A new run's session.
    pub fn start_new(args: &SyntheticArgs) -> Result<Session> {
        resume::start_new(args)
    }

    pub use super::agree_local as agree_session;

    /// Always: a single process owns its run folder.
    pub fn writes_files() -> bool {
        true
    }

    /// The clock and the stop request as they are.
    pub fn agree_clock(wall_seconds: f64, interrupted: bool) -> (f64, bool) {
        (wall_seconds, interrupted)
    }

    /// The stop request as it is.
    pub fn any_interrupted(interrupted: bool) -> bool {
        interrupted
    }

    pub use super::local_step as train_step;
}

#[cfg(feature = "mpi")]
mod cluster;
#[cfg(feature = "mpi")]
use cluster as imp;

pub use imp::run_synthetic;
pub use imp::{agree_clock, agree_session, any_interrupted, start_new, train_step, writes_files};

#[cfg(test)]
mod tests {
    use super::rank_seed;

    #[test]
    fn rank_streams_differ_and_rank_zero_keeps_the_seed() {
        assert_eq!(rank_seed(42, 0), 42);
        let seeds: std::collections::BTreeSet<u64> = (0..64).map(|r| rank_seed(42, r)).collect();
        assert_eq!(seeds.len(), 64);
    }
}
