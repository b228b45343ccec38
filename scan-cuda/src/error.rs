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
    /// The shape's element count `T·F` does not fit in `usize`.
    #[error("{operation}: {n_steps} x {n_features} elements overflow the address space")]
    SizeOverflow {
        /// The operation that was called.
        operation: &'static str,
        /// Number of time steps.
        n_steps: usize,
        /// Number of features.
        n_features: usize,
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

/// The number of elements of `shape`, or an error naming the operation if `T·F` overflows.
#[cfg(any(feature = "cuda", test))]
pub(crate) fn element_count(
    operation: &'static str,
    shape: scan_core::ScanShape,
) -> Result<usize, CudaScanError> {
    shape.checked_len().ok_or(CudaScanError::SizeOverflow {
        operation,
        n_steps: shape.n_steps,
        n_features: shape.n_features,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use scan_core::ScanShape;

    #[test]
    fn element_count_overflow_is_an_error() {
        let shape = |n_steps, n_features| ScanShape {
            n_steps,
            n_features,
        };
        assert_eq!(element_count("op", shape(3, 4)).unwrap(), 12);
        let error = element_count("forward_device", shape(usize::MAX, 2)).unwrap_err();
        assert!(
            matches!(error, CudaScanError::SizeOverflow { n_features: 2, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("forward_device"), "{error}");
    }
}
