//! The error type shared by every scan backend.

/// Why a scan could not run. Nothing is written to the outputs when an error is returned
/// before the computation starts (shape and layout errors); backend errors during the
/// computation leave the outputs unspecified, which the variant's message says.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// An argument's shape does not fit the problem.
    #[error("{operation}: `{argument}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The operation that was called (`"forward"`, `"backward"`, ...).
        operation: &'static str,
        /// The argument whose shape is wrong.
        argument: &'static str,
        /// The shape the other arguments imply.
        expected: Vec<usize>,
        /// The shape that was passed.
        actual: Vec<usize>,
    },
    /// A 3-D layout named an axis that does not exist.
    #[error(
        "{operation}: time axis {time_axis} is out of range for a 3-D array (expected 0, 1 or 2)"
    )]
    InvalidTimeAxis {
        /// The operation that was called.
        operation: &'static str,
        /// The axis that was passed.
        time_axis: usize,
    },
    /// A buffer the operation allocates (an output or scratch array) does not fit in
    /// memory: its size overflows `usize` or the allocator refused it.
    #[error("{operation}: cannot allocate `{buffer}` of shape {shape:?} ({})", describe_bytes(.bytes))]
    AllocationFailed {
        /// The operation that was called.
        operation: &'static str,
        /// The buffer that could not be allocated.
        buffer: &'static str,
        /// Its shape, implied by the arguments.
        shape: Vec<usize>,
        /// Its size in bytes; `None` when that overflows `usize`.
        bytes: Option<usize>,
    },
    /// The backend cannot run on this machine or in this build.
    #[error("the {backend} backend is unavailable: {reason}")]
    Unavailable {
        /// The backend's name.
        backend: &'static str,
        /// Why, and what to do about it.
        reason: String,
    },
    /// The backend failed while running (e.g. a device error); outputs are unspecified.
    #[error("the {backend} backend failed during {operation}; outputs are unspecified")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The operation that was called.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn describe_bytes(bytes: &Option<usize>) -> String {
    match bytes {
        Some(bytes) => format!("{bytes} bytes"),
        None => "more than usize::MAX bytes".to_owned(),
    }
}
