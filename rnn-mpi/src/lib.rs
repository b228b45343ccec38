//! # rnn-mpi
//!
//! Training [`surrogate_rnn`] models over MPI processes.
//!
//! **Data parallel** ([`DataParallel`]): every rank holds the whole model and optimizer
//! state and trains on its own share of the global batch ([`share_of_batch`]); the
//! gradients, weighted by each rank's share of the sequences, are summed over ranks in a
//! fixed binary tree in rank order and broadcast, so every rank applies the same Adam update
//! to the same parameters, and a step equals single-process training on the concatenated
//! batch up to rounding.
//!
//! Design decision: MPI is the transport (through the `mpi` crate), behind the cargo
//! feature `mpi`, as in `scan-mpi`: without it the crate holds only its error types, so the
//! workspace builds and tests without an MPI installation.
//!
//! ```text
//! // Under `mpirun -n 4`: each rank passes its own sequences of the global batch.
//! let world = mpi::initialize().unwrap().world();
//! let data = rnn_mpi::DataParallel::new(&world);
//! data.check_replicas(&model, &adam)?;
//! let range = rnn_mpi::share_of_batch(global_batch, data.rank(), data.size());
//! let stats = data.train_step(&mut model, &mut adam, &scan, input, &labels)?;
//! ```

#![deny(missing_docs)]

#[cfg(feature = "mpi")]
mod data;
mod data_error;
mod data_split;

#[cfg(feature = "mpi")]
pub use data::DataParallel;
pub use data_error::DataParallelError;
pub use data_split::{batch_sequences, share_of_batch};
