//! Why a data-parallel step could not run.

use surrogate_rnn::ModelError;

/// Why a data-parallel step could not run. The ranks agree on every error before any of
/// them enters the gradient exchange, so every rank returns the same error and none is
/// left waiting; the model and optimizer are then untouched on every rank (gradients may
/// hold partial values and are zeroed by the next step).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataParallelError {
    /// A rank's forward or backward pass failed (the lowest such rank, with its message;
    /// every rank reports the same).
    #[error("rank {rank} failed: {message}")]
    RankFailed {
        /// The failing rank (in the communicator the trainer was built on).
        rank: i32,
        /// Its error message.
        message: String,
    },
    /// The optimizer step failed; it fails identically on every rank, since every rank
    /// applies the same reduced gradients to the same parameters.
    #[error(transparent)]
    Optimizer(#[from] ModelError),
    /// The ranks hold different models (parameter count, values or optimizer step).
    #[error("the ranks hold different models: {what} differs between ranks")]
    ReplicasDiffer {
        /// What differs.
        what: &'static str,
    },
    /// No rank has a sequence to train on.
    #[error("the global batch is empty: every rank passed 0 sequences")]
    EmptyBatch,
    /// A size does not fit MPI's element count (a C `int`).
    #[error("{what} = {value} exceeds MPI's largest count ({max})")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// The count.
        value: usize,
        /// The largest count MPI accepts.
        max: i64,
    },
}
