//! The error type of the CUDA backend.

use scan_core::ScanError;

/// Why a CUDA scan could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaScanError {
    /// The crate was compiled without the `cuda` feature.
    #[error("built without CUDA support; rebuild with --features cuda")]
    NotCompiled,
    /// The CUDA driver reported an error (no device, launch failure, out of memory, ...).
    #[cfg(feature = "cuda")]
    #[error("CUDA driver error: {0}")]
    Driver(#[from] cust::error::CudaError),
    /// A device buffer passed to the device-buffer API has the wrong length.
    #[error(
        "{operation}: device buffer `{argument}` holds {actual} elements, expected {expected}"
    )]
    BufferLength {
        /// The operation that was called.
        operation: &'static str,
        /// The buffer whose length is wrong.
        argument: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The buffer's length.
        actual: usize,
    },
    /// The problem needs more tiles or threads than one launch can have.
    #[error("{n_steps} x {n_features} elements need {blocks} thread blocks, more than one launch allows ({max_blocks})")]
    TooLarge {
        /// Number of time steps.
        n_steps: usize,
        /// Number of features.
        n_features: usize,
        /// The blocks the problem needs.
        blocks: u64,
        /// The most blocks one launch can have.
        max_blocks: u64,
    },
}

/// The backend name used in [`ScanError`]s.
pub(crate) const BACKEND_NAME: &str = "cuda";

impl CudaScanError {
    /// Converts into the scan-core error of an `operation` (`"forward"`, `"backward"`).
    pub fn into_scan_error(self, operation: &'static str) -> ScanError {
        match self {
            Self::NotCompiled => ScanError::Unavailable {
                backend: BACKEND_NAME,
                reason: self.to_string(),
            },
            other => ScanError::Backend {
                backend: BACKEND_NAME,
                operation,
                source: Box::new(other),
            },
        }
    }
}
