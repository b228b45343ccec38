//! # scan-mpi
//!
//! The linear recurrence `h_t = a_t ⊙ h_{t-1} + x_t` over a sequence split over time
//! across MPI processes: Algorithm 1 of the paper with ranks in place of threads. Each rank
//! reduces its chunk to one affine map per feature ([`scan_core::ChunkMap`]), an exclusive
//! scan of those maps in rank order (`MPI_Exscan` with a non-commutative user operation)
//! gives every rank the state entering its chunk, and each rank rescans its chunk locally
//! with any [`scan_core::LinearScan`] backend (e.g. scan-cpu's `Parallel`). The
//! backward pass does the same against the processing order. Communication per call is
//! 2·F elements per rank, independent of the sequence length.
//!
//! Design decision: MPI is the transport (through the `mpi` crate), behind the cargo
//! feature `mpi`, so that the workspace builds and tests without an MPI installation;
//! without the feature this crate holds only its error type.
//!
//! ```text
//! // Under `mpirun -n 4`: every rank passes its own (T_r, F) chunk.
//! let world = mpi::initialize().unwrap().world();
//! let scan = scan_mpi::DistributedScan::new(&world, scan_cpu::Parallel::default());
//! let entering = scan.forward_into(ForwardInputs { decay, impulse, initial: None,
//!     direction: Direction::Forward }, state.view_mut())?;
//! ```

#![deny(missing_docs)]

#[cfg(feature = "mpi")]
mod distributed;
mod error;

#[cfg(feature = "mpi")]
pub use distributed::{DistributedScan, MpiElement};
pub use error::DistributedError;
