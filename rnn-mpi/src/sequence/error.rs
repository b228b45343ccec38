//! Why a sequence-parallel pass could not run.

use surrogate_rnn::ModelError;

/// Why a sequence-parallel pass could not run. The ranks check their arguments and agree
/// before the first exchange, so every rank returns an error when any rank's arguments are
/// wrong, and no rank is left waiting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceError {
    /// This rank's model or input is wrong.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The model has a layer whose recurrence cannot be split over time.
    #[error(
        "{layer} layers cannot be split over time: their recurrence is non-linear, so a rank \
         cannot start before the previous one has finished; run them in one process (or \
         split the batch instead of the sequence)"
    )]
    NotSplittable {
        /// The layer kind.
        layer: String,
    },
    /// The ranks passed different models or batch sizes.
    #[error("the ranks disagree on {what}: every rank must hold the same model and batch size")]
    Disagreement {
        /// What differs (`"the batch size"`, `"the model"`).
        what: &'static str,
    },
    /// No rank holds any step.
    #[error("the sequence has no steps on any rank")]
    NoSteps,
    /// Another rank's arguments were wrong; that rank's error names the problem.
    #[error("{count} other rank(s) failed to validate their arguments; nothing was computed")]
    OtherRankFailed {
        /// How many other ranks failed.
        count: usize,
    },
    /// A size does not fit MPI's element count (a C `int`).
    #[error("{what} = {value} exceeds MPI's largest count")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// The count.
        value: usize,
    },
}
