//! The scan backend, chosen at run time.

use anyhow::{bail, Result};
use clap::ValueEnum;
use scan_core::LinearScan;
use serde::{Deserialize, Serialize};

/// Which linear-recurrence backend runs the scans of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// The serial-over-time loop (scan-cpu `Serial`), the paper's baseline.
    Serial,
    /// Algorithm 1, parallel over time and features (scan-cpu `Parallel`).
    Parallel,
    /// The CUDA kernels (scan-cuda); needs a build with `--features cuda`.
    Cuda,
}

impl BackendChoice {
    /// The name used in summaries and file names.
    pub fn label(self) -> &'static str {
        match self {
            Self::Serial => "serial",
            Self::Parallel => "parallel",
            Self::Cuda => "cuda",
        }
    }

    /// The backend itself. `cuda` in a build without the feature is an error that says how
    /// to rebuild; callers resolve the backend before starting any work.
    pub fn build(self) -> Result<Box<dyn LinearScan<f32>>> {
        Ok(match self {
            Self::Serial => Box::new(scan_cpu::Serial::default()),
            Self::Parallel => Box::new(scan_cpu::Parallel::default()),
            Self::Cuda => {
                require_cuda()?;
                Box::new(scan_cuda::Cuda::new(0))
            }
        })
    }
}

/// Fails with a rebuild hint when this binary was built without the `cuda` feature.
pub fn require_cuda() -> Result<()> {
    if !scan_cuda::Cuda::compiled_with_cuda() {
        bail!(
            "the `cuda` backend is not available: this trainer was built without CUDA support; \
             rebuild with `cargo run --release -p trainer --features cuda -- ...` \
             (needs the CUDA driver at run time)"
        );
    }
    Ok(())
}
