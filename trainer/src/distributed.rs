//! `trainer synthetic --distributed data|sequence|grid`: training over the MPI processes
//! that `mpirun -n N` starts (a build with `--features mpi`): the batch split over processes
//! (`rnn_mpi::DataParallel`), every sequence split over time (`rnn_mpi::SequenceParallel`),
//! or both, `--sequence-ranks S` processes per sequence and N/S groups of them splitting
//! the batch (`rnn_mpi::GridParallel`).
//!
//! Every process runs the same training loop on the same model. The loop's decisions are
//! made identically everywhere: the batch statistics come out of the gradient exchange
//! already agreed, the clock is rank 0's and a stop request (Ctrl-C, SIGTERM) anywhere
//! stops every process at the same step ([`agree_clock`]). Only rank 0 prints and writes
//! files ([`writes_files`]). Data parallel, rank `r` draws its share of every batch from
//! its own stream (seed `seed` on rank 0, a mix of `seed` and `r` elsewhere), so a run
//! depends on its process count: `run.json` records it and `--resume` asks for the same
//! count (in every mode, for one rule). Sequence parallel and grid, every rank draws its
//! part of the run's batch (its share of the steps, and of the sequences in a grid) chunk
//! by chunk from the run's stream, so training equals a one-process run to rounding and a
//! rank holds `⌈T/S⌉` steps of the input, never `T`; `run.json` also records the grid's
//! `sequence_ranks`. Their evaluations split the sequences the same way
//! ([`evaluate_split`]), so a process holds `⌈T/S⌉` steps of them, not `T`.
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
use crate::synthetic::SyntheticArgs;

/// How a run is split over processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Data parallel: every process holds the model and trains on its share of each batch.
    Data,
    /// Sequence parallel: every sequence split over time across the processes, each
    /// holding its share of the steps (`rnn_mpi::SequenceParallel`).
    Sequence,
    /// Both: every sequence split over time across `--sequence-ranks S` processes, and
    /// every batch over the N/S groups of them (`rnn_mpi::GridParallel`).
    Grid,
}

/// How a run's steps and sequences are split over its processes: `data_groups` shares of
/// every batch, each split over time across `sequence_ranks` processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    mode: Option<Mode>,
    data_groups: usize,
    sequence_ranks: usize,
}

impl Split {
    /// The split a run's settings describe (`ranks` processes; one when not recorded). A
    /// grid whose `--sequence-ranks` does not divide the count is rounded up here; starting
    /// or resuming such a run is an error elsewhere.
    pub fn of(args: &SyntheticArgs) -> Self {
        let n_ranks = args.ranks.unwrap_or(1).max(1);
        let (data_groups, sequence_ranks) = match args.distributed {
            None => (1, 1),
            Some(Mode::Data) => (n_ranks, 1),
            Some(Mode::Sequence) => (1, n_ranks),
            Some(Mode::Grid) => {
                let sequence_ranks = args.sequence_ranks.unwrap_or(1).clamp(1, n_ranks);
                (n_ranks.div_ceil(sequence_ranks), sequence_ranks)
            }
        };
        Self {
            mode: args.distributed,
            data_groups,
            sequence_ranks,
        }
    }

    /// A plain one-process run (chunked steps and streaming evaluation).
    pub fn is_single(&self) -> bool {
        self.mode.is_none()
    }

    /// The most steps and sequences one process holds of a `seq_len × batch` batch: the
    /// shares are `⌈T/S⌉` steps and `⌈B/D⌉` sequences at most.
    pub fn per_rank(&self, seq_len: usize, batch: usize) -> (usize, usize) {
        (
            seq_len.div_ceil(self.sequence_ranks),
            batch.div_ceil(self.data_groups),
        )
    }
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
    let batch = task.batch_for_step::<f32>(seed, adam.steps(), n_batch)?;
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

    pub use super::local_step as train_step;

    /// Never: a build without MPI runs in one process.
    pub fn splits_sequences() -> bool {
        false
    }

    /// Unreachable without MPI ([`splits_sequences`] is false).
    pub fn evaluate_split(
        _model: &mut Classifier<f32>,
        _scan: &dyn LinearScan<f32>,
        _task: &SyntheticTask,
        _draw: (u64, u64),
        _size: usize,
        _stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<usize>> {
        anyhow::bail!("a split evaluation needs a build with `--features mpi`")
    }
}

#[cfg(feature = "mpi")]
mod cluster;
#[cfg(feature = "mpi")]
use cluster as imp;

pub use imp::run_synthetic;
pub use imp::{
    agree_clock, agree_session, evaluate_split, splits_sequences, start_new, train_step,
    writes_files,
};

#[cfg(test)]
mod tests {
    use super::{rank_seed, Mode, Split};
    use crate::synthetic::SyntheticArgs;

    #[test]
    fn every_mode_gives_each_process_its_share_of_steps_and_sequences() {
        // (mode, --sequence-ranks, (steps, sequences) per process of 1001 × 10, one process)
        // (mode, --sequence-ranks, (steps, sequences) per process of 1001 × 10, one process)
        let args = |distributed, sequence_ranks| SyntheticArgs {
            distributed,
            sequence_ranks,
            ranks: Some(4),
            ..SyntheticArgs::default()
        };
        let cases = [
            (None, None, (1001, 10), true),
            (Some(Mode::Data), None, (1001, 3), false),
            (Some(Mode::Sequence), None, (251, 10), false),
            (Some(Mode::Grid), Some(2), (501, 5), false),
            (Some(Mode::Grid), Some(4), (251, 10), false),
            (Some(Mode::Grid), Some(1), (1001, 3), false),
        ];
        for (mode, sequence_ranks, shares, single) in cases {
            let split = Split::of(&args(mode, sequence_ranks));
            assert_eq!(
                split.per_rank(1001, 10),
                shares,
                "{mode:?} {sequence_ranks:?}"
            );
            assert_eq!(split.is_single(), single);
        }
    }

    #[test]
    fn a_grid_needs_sequence_ranks_and_they_need_a_grid() {
        let check = |distributed, sequence_ranks| {
            SyntheticArgs {
                distributed,
                sequence_ranks,
                ..SyntheticArgs::default()
            }
            .validate()
            .map_err(|e| e.to_string())
        };
        assert!(check(Some(Mode::Grid), None)
            .unwrap_err()
            .contains("needs --sequence-ranks"));
        assert!(check(Some(Mode::Grid), Some(0))
            .unwrap_err()
            .contains("at least 1"));
        assert!(check(Some(Mode::Data), Some(2))
            .unwrap_err()
            .contains("grid only"));
        assert!(check(Some(Mode::Grid), Some(2)).is_ok());
    }

    #[test]
    fn rank_streams_differ_and_rank_zero_keeps_the_seed() {
        assert_eq!(rank_seed(42, 0), 42);
        let seeds: std::collections::BTreeSet<u64> = (0..64).map(|r| rank_seed(42, r)).collect();
        assert_eq!(seeds.len(), 64);
    }
}
