//! Data-parallel training: the batch split over ranks, gradients reduced in a fixed order.
//!
//! Every rank holds the whole model and optimizer state. A step runs in three exchanges:
//!
//! 1. **Agreement** (one all-gather of five numbers per rank): whether each rank's forward
//!    and backward pass succeeded, its number of sequences, its mean loss and correct count,
//!    and its parameter count. A failure anywhere makes every rank return the lowest failing
//!    rank's message before any rank enters the gradient exchange, so none waits forever.
//!    Every rank then sums the losses in rank order itself, so all report the same loss.
//! 2. **Reduction in rank order**: each rank scales its gradients (means over its own
//!    `B_r` sequences) by `B_r / B`, and the scaled gradients are summed up a fixed binary
//!    tree — at round `k`, rank `r` with `r mod 2^{k+1} = 2^k` sends its partial sum to rank
//!    `r − 2^k`, which adds it on its right — so the bracketing depends only on the rank
//!    count: results are deterministic for a given rank count, whatever algorithm the MPI
//!    library would pick for an `MPI_Allreduce` of floats (which the standard lets vary).
//! 3. **Broadcast** of rank 0's sum, so every rank holds bitwise the same gradients, takes
//!    the same Adam step (same norm, same clipping) and keeps the same parameters.
//!
//! Communication per step: `N·s` bytes sent by every rank but 0 in the reduction, rank 0
//! receiving `⌈log₂ P⌉` such messages, the same in reverse for the broadcast, plus
//! `40·P` bytes of agreement, where `N` is the parameter count and `s` the element size.

use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Count;
use scan_core::LinearScan;
use scan_mpi::MpiElement;
use surrogate_rnn::{Adam, BatchStats, Classifier, ModelInput, Parameters, Real, TrainStats};

use crate::DataParallelError;

/// Tag of the reduction's point-to-point messages (on the trainer's own communicator).
const REDUCE_TAG: i32 = 7;

/// Data-parallel training over the ranks of a communicator (see the module doc).
///
/// Every method is collective: all ranks call it, in the same order.
pub struct DataParallel {
    communicator: SimpleCommunicator,
}

/// What the ranks agreed on before exchanging gradients.
struct Agreement {
    /// The global batch: the sum of every rank's sequences.
    n_batch: usize,
    /// The global statistics, summed in rank order.
    stats: BatchStats,
    /// The parameter count (the same on every rank).
    n_params: usize,
}

impl DataParallel {
    /// A trainer over the ranks of `communicator`, which it duplicates so its messages
    /// never meet the caller's.
    pub fn new<C: Communicator>(communicator: &C) -> Self {
        Self {
            communicator: communicator.duplicate(),
        }
    }

    /// This rank's index.
    pub fn rank(&self) -> usize {
        self.communicator.rank() as usize
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.communicator.size() as usize
    }

    /// Checks that every rank holds the same model and optimizer state (parameter count,
    /// every parameter's bits, Adam's step count and moments), through one all-reduce of
    /// fingerprints. Call it after building or loading the replicas.
    pub fn check_replicas<E: Real, P: Parameters<E> + ?Sized>(
        &self,
        model: &P,
        optimizer: &Adam<E>,
    ) -> Result<(), DataParallelError> {
        let mut values = Fingerprint::default();
        model.visit_params(&mut |_, value, _| value.iter().for_each(|&v| values.add(v)));
        let mut moments = Fingerprint::default();
        for moment in optimizer
            .first_moments()
            .iter()
            .chain(optimizer.second_moments())
        {
            moment.iter().for_each(|&v| moments.add(v));
        }
        let local = [
            model.n_params() as u64,
            values.0,
            optimizer.steps(),
            moments.0,
        ];
        // Maxima of the values and of their complements: both extremes in one reduction.
        let mut both = [0_u64; 8];
        both[..4].copy_from_slice(&local);
        for i in 0..4 {
            both[4 + i] = !local[i];
        }
        let mut global = [0_u64; 8];
        self.communicator.all_reduce_into(
            &both[..],
            &mut global[..],
            mpi::collective::SystemOperation::max(),
        );
        let names = [
            "the parameter count",
            "a parameter value",
            "the optimizer's step count",
            "an optimizer moment",
        ];
        for (i, what) in names.into_iter().enumerate() {
            if global[i] != !global[4 + i] {
                return Err(DataParallelError::ReplicasDiffer { what });
            }
        }
        Ok(())
    }

    /// One data-parallel training step on this rank's sequences (`labels.len()` of them,
    /// possibly none): zero the gradients, forward and backward on the local batch, reduce
    /// the gradients over ranks (weighted by each rank's share of the sequences), then the
    /// same Adam update on every rank. Returns the statistics of the global batch (the
    /// same on every rank); the result equals [`Classifier::train_step`] on the
    /// concatenation of every rank's batch in rank order, up to rounding.
    pub fn train_step<E: MpiElement + Real>(
        &self,
        model: &mut Classifier<E>,
        optimizer: &mut Adam<E>,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
    ) -> Result<TrainStats, DataParallelError> {
        model.zero_grad();
        let local = if labels.is_empty() {
            Ok(None)
        } else {
            model.loss_and_grad(scan, input, labels).map(Some)
        };
        let agreed = self.agree_step(local, labels.len(), model.n_params())?;
        let weight = labels.len() as f64 / agreed.n_batch as f64;
        self.reduce_gradients(model, weight, agreed.n_params)?;
        let report = optimizer.step(model)?;
        Ok(TrainStats {
            batch: agreed.stats,
            grad_norm: report.grad_norm,
            clipped: report.clipped,
        })
    }

    /// Replaces every rank's gradients by `Σ_r weight_r · grad_r`, summed in the fixed tree
    /// of the module doc and broadcast from rank 0, so every rank ends with the same bits.
    /// Collective; `model` must have the same parameter shapes on every rank.
    pub fn all_reduce_gradients<E: MpiElement + Real, P: Parameters<E> + ?Sized>(
        &self,
        model: &mut P,
        weight: f64,
    ) -> Result<(), DataParallelError> {
        let n_params = model.n_params();
        let agreed = self.gather_status(Ok(()), 0, 0.0, 0, n_params)?;
        self.reduce_gradients(model, weight, agreed.n_params)
    }

    fn reduce_gradients<E: MpiElement + Real, P: Parameters<E> + ?Sized>(
        &self,
        model: &mut P,
        weight: f64,
        n_params: usize,
    ) -> Result<(), DataParallelError> {
        // Checked identically on every rank (the count was agreed), so all return together.
        if n_params > Count::MAX as usize {
            return Err(DataParallelError::TooLarge {
                what: "the parameter count",
                value: n_params,
                max: i64::from(Count::MAX),
            });
        }
        let weight = E::from_f64(weight);
        let mut sum = Vec::with_capacity(n_params);
        model.visit_params(&mut |_, _, grad| sum.extend(grad.iter().map(|&g| weight * g)));
        self.tree_sum(&mut sum);
        let mut values = sum.into_iter();
        model.visit_params_mut(&mut |_, mut param| {
            param
                .grad
                .iter_mut()
                .zip(&mut values)
                .for_each(|(g, v)| *g = v);
        });
        Ok(())
    }

    /// Sums `values` over ranks up the fixed binary tree in rank order; every rank ends with
    /// rank 0's sum.
    fn tree_sum<E: MpiElement + Real>(&self, values: &mut [E]) {
        let (rank, size) = (self.communicator.rank(), self.communicator.size());
        let mut incoming = vec![E::zero(); if size > 1 { values.len() } else { 0 }];
        let mut step = 1;
        while step < size {
            if rank % (2 * step) == step {
                self.communicator
                    .process_at_rank(rank - step)
                    .send_with_tag(&values[..], REDUCE_TAG);
                break;
            }
            if rank % (2 * step) == 0 && rank + step < size {
                self.communicator
                    .process_at_rank(rank + step)
                    .receive_into_with_tag(&mut incoming[..], REDUCE_TAG);
                for (sum, &later) in values.iter_mut().zip(&incoming) {
                    *sum = *sum + later;
                }
            }
            step *= 2;
        }
        self.communicator
            .process_at_rank(0)
            .broadcast_into(&mut values[..]);
    }

    /// Step 1 of the module doc for a training step.
    fn agree_step(
        &self,
        local: Result<Option<BatchStats>, surrogate_rnn::ModelError>,
        n_local: usize,
        n_params: usize,
    ) -> Result<Agreement, DataParallelError> {
        let (status, loss, n_correct) = match local {
            Ok(stats) => (
                Ok(()),
                stats.map_or(0.0, |s| s.loss),
                stats.map_or(0, |s| s.n_correct),
            ),
            Err(error) => (Err(error.to_string()), 0.0, 0),
        };
        let agreed = self.gather_status(status, n_local, loss, n_correct, n_params)?;
        if agreed.n_batch == 0 {
            return Err(DataParallelError::EmptyBatch);
        }
        Ok(agreed)
    }

    /// Gathers every rank's status and statistics; the lowest failing rank's message
    /// becomes every rank's error.
    fn gather_status(
        &self,
        status: Result<(), String>,
        n_local: usize,
        loss: f64,
        n_correct: usize,
        n_params: usize,
    ) -> Result<Agreement, DataParallelError> {
        let local = [
            f64::from(u8::from(status.is_err())),
            n_local as f64,
            loss,
            n_correct as f64,
            n_params as f64,
        ];
        let mut all = vec![0.0_f64; 5 * self.size()];
        self.communicator.all_gather_into(&local[..], &mut all[..]);
        let ranks: Vec<&[f64]> = all.chunks_exact(5).collect();
        if let Some(failed) = ranks.iter().position(|r| r[0] != 0.0) {
            let message = self.broadcast_message(failed as i32, status.err());
            return Err(DataParallelError::RankFailed {
                rank: failed as i32,
                message,
            });
        }
        if ranks.iter().any(|r| r[4] != local[4]) {
            return Err(DataParallelError::ReplicasDiffer {
                what: "the parameter count",
            });
        }
        let n_batch: f64 = ranks.iter().map(|r| r[1]).sum();
        // Each rank's mean loss weighted by its share of the sequences, in rank order.
        let mut loss = 0.0;
        for r in &ranks {
            if r[1] > 0.0 {
                loss += r[2] * (r[1] / n_batch);
            }
        }
        let n_correct = ranks.iter().map(|r| r[3]).sum::<f64>() as usize;
        let n_batch = n_batch as usize;
        Ok(Agreement {
            n_batch,
            stats: BatchStats {
                loss,
                accuracy: n_correct as f64 / n_batch.max(1) as f64,
                n_correct,
                n_sequences: n_batch,
            },
            n_params,
        })
    }

    /// Every rank learns whether any rank's `status` is an error, before going on to an
    /// exchange that a failed rank would skip: all return the lowest failing rank's message
    /// as [`DataParallelError::RankFailed`], or all return `Ok`. Collective.
    pub fn agree(&self, status: Result<(), String>) -> Result<(), DataParallelError> {
        let size = self.communicator.size();
        let local = if status.is_err() {
            self.communicator.rank()
        } else {
            size
        };
        let mut lowest = size;
        self.communicator.all_reduce_into(
            &local,
            &mut lowest,
            mpi::collective::SystemOperation::min(),
        );
        if lowest == size {
            return Ok(());
        }
        let message = self.broadcast_message(lowest, status.err());
        Err(DataParallelError::RankFailed {
            rank: lowest,
            message,
        })
    }

    /// Broadcasts the failing rank's message (length, then UTF-8 bytes) to every rank.
    fn broadcast_message(&self, root: i32, own: Option<String>) -> String {
        let root = self.communicator.process_at_rank(root);
        let mut bytes = own.unwrap_or_default().into_bytes();
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// FNV-1a over the bits of every value (in f64, so f32 and f64 hash alike).
struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    fn add<E: Real>(&mut self, value: E) {
        for byte in value.as_f64().to_bits().to_le_bytes() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
