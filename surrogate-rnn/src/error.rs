//! The error type of this crate.

use std::path::PathBuf;

use scan_core::ScanError;

/// Why a model operation failed. Every variant says which operation failed and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// An array passed to a model or layer has the wrong shape.
    #[error("{operation}: `{argument}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The operation that was called (e.g. `"GilrLstm::forward"`).
        operation: &'static str,
        /// The argument whose shape is wrong.
        argument: &'static str,
        /// The expected shape (0 stands for "any size" where noted in the message).
        expected: Vec<usize>,
        /// The shape that was passed.
        actual: Vec<usize>,
    },
    /// A configuration value is impossible (zero sizes, SRU with input ≠ hidden, ...).
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Input data is invalid (an index out of range, a label ≥ the class count, ...).
    #[error("{operation}: invalid input: {reason}")]
    InvalidInput {
        /// The operation that was called.
        operation: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The gradient norm was NaN or infinite; the optimizer skipped the update.
    #[error("optimizer step {step}: the gradient norm is not finite; parameters left unchanged")]
    NonFiniteGradient {
        /// The step that was skipped (1-based).
        step: u64,
    },
    /// The scan backend failed.
    #[error("linear recurrence scan failed")]
    Scan(#[from] ScanError),
    /// Reading or writing a file failed.
    #[error("{operation} `{path}`")]
    Io {
        /// What was being done (e.g. `"writing checkpoint"`).
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file is corrupt, truncated, or does not match the model.
    #[error("checkpoint `{path}`: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks that `actual` equals `expected`, or returns a [`ModelError::ShapeMismatch`].
pub(crate) fn check_shape(
    operation: &'static str,
    argument: &'static str,
    expected: &[usize],
    actual: &[usize],
) -> Result<(), ModelError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ModelError::ShapeMismatch {
            operation,
            argument,
            expected: expected.to_vec(),
            actual: actual.to_vec(),
        })
    }
}
