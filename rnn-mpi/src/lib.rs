//! # rnn-mpi
//!
//! Training [`surrogate_rnn::Classifier`]s across MPI processes.
//!
//! **Sequence parallelism** ([`SequenceParallel`]): one batch whose sequence is split over
//! time, rank `r` holding the `r`-th consecutive run of steps. Every rank runs the model
//! layer by layer on its steps; each layer's linear recurrences run as
//! [`scan_mpi::DistributedScan`]s, and what else crosses a boundary between ranks (the
//! GILR-LSTM's look-back, the QRNN's input window and their gradients) passes between
//! neighbouring ranks. The loss is taken on the last rank, and the parameter gradients
//! are summed over the ranks. Same loss and gradients as one process, to rounding.
//!
//! **Data parallelism** ([`DataParallel`]): every rank holds the whole model and optimizer
//! state and trains on its own share of the global batch ([`share_of_batch`]); the
//! gradients, weighted by each rank's share of the sequences, are summed over the ranks in
//! rank order, so every rank applies the same Adam update to the same parameters, and a
//! step equals single-process training on the concatenated batch, to rounding.
//!
//! **Both** ([`GridParallel`]): a [`GridShape`] of `D` data groups × `S` sequence ranks;
//! each group is a [`SequenceParallel`] over its share of the batch, and the ranks holding
//! the same part of the steps in every group form a [`DataParallel`] that sums the groups'
//! gradients in group order.
//!
//! Design decision: the layers are the same code as in one process. A split run is a
//! compute backend ([`surrogate_rnn::Backend`]) that delegates to the CPU backend except
//! where a part of the sequence meets the parts before and after it (`scan_part`,
//! `carry`, `carry_backward`), so no layer has a distributed twin to keep in step.
//!
//! MPI is opt-in: without the feature `mpi` this crate holds only its error types and the
//! batch-split and grid-shape helpers, and the workspace builds and tests without MPI.
//!
//! ```text
//! // Under `mpirun -n 4`: every rank passes its own steps of the batch and the labels.
//! let world = mpi::initialize().unwrap().world();
//! let split = rnn_mpi::SequenceParallel::new(&world, scan_cpu::Parallel::default());
//! let stats = split.train_step(&mut model, &mut adam, ModelInput::OneHot(&my_steps), &labels)?;
//!
//! // Or each rank passes its own sequences of the global batch.
//! let data = rnn_mpi::DataParallel::new(&world);
//! data.check_replicas(&model, &adam)?;
//! let mine = rnn_mpi::share_of_batch(global_batch, data.rank(), data.size());
//! let stats = data.train_step(&mut model, &mut adam, &scan, input, &labels)?;
//! ```

#![deny(missing_docs)]

#[cfg(feature = "mpi")]
mod data;
mod data_error;
mod data_split;
#[cfg(feature = "mpi")]
mod grid;
mod grid_shape;
mod sequence;

#[cfg(feature = "mpi")]
pub use data::DataParallel;
pub use data_error::DataParallelError;
pub use data_split::{batch_sequences, share_of_batch};
#[cfg(feature = "mpi")]
pub use grid::GridParallel;
pub use grid_shape::{GridError, GridPosition, GridShape};
pub use sequence::SequenceError;
#[cfg(feature = "mpi")]
pub use sequence::SequenceParallel;
