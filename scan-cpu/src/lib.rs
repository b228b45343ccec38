//! # scan-cpu
//!
//! CPU backends of the linear recurrence `h_t = a_t·h_{t-1} + x_t` (see `scan-core`):
//!
//! * [`Serial`]: the serial-over-time baseline — one loop over time, vectorized across
//!   features, features split across threads. The yardstick of every speedup we claim.
//! * [`Parallel`]: Algorithm 1 of Martin & Cundy — chunk reductions, a carry scan over
//!   chunks, and a rescan — parallel over time and features.
//!
//! (Work in progress: both currently run the straightforward per-feature loop.)
#![warn(missing_docs)]

use scan_core::{BackwardProblem, Element, ForwardProblem, LinearScan, Reference, ScanError};

/// Whether a backend may use the rayon thread pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parallelism {
    /// Run on the calling thread only.
    None,
    /// Use rayon's current thread pool.
    #[default]
    Rayon,
}

/// The serial-over-time baseline.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial {
    /// Whether features may be split across threads.
    pub parallelism: Parallelism,
}

/// Algorithm 1: parallel over time and features.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parallel {
    /// Whether work may be split across threads.
    pub parallelism: Parallelism,
}

macro_rules! delegate_to_reference {
    ($backend:ty, $name:literal) => {
        impl<E: Element> LinearScan<E> for $backend {
            fn name(&self) -> &'static str {
                $name
            }
            fn forward_checked(&self, problem: ForwardProblem<'_, '_, E>) -> Result<(), ScanError> {
                Reference.forward_checked(problem)
            }
            fn backward_checked(
                &self,
                problem: BackwardProblem<'_, '_, E>,
            ) -> Result<(), ScanError> {
                Reference.backward_checked(problem)
            }
        }
    };
}
delegate_to_reference!(Serial, "serial");
delegate_to_reference!(Parallel, "parallel");
