//! Data-parallel training: the batch split over ranks, gradients reduced in a fixed order.
//!
//! Every rank holds the whole model and optimizer state. A step, after the local forward
//! and backward pass:
//!
//! 1. **Agreement** (one all-gather of five numbers per rank): whether each rank's forward
//!    and backward pass succeeded, its number of sequences, its mean loss and correct count,
//!    and its parameter count. A failure anywhere makes every rank return the lowest failing
//!    rank's message before any rank enters the gradient exchange, so none waits forever.
//!    Every rank then sums the losses in rank order itself, so all report the same loss.
//! 2. **Reduction in rank order**: each rank scales its gradients (means over its own
//!    `B_r` sequences) by `B_r / B`, and the scaled gradients are summed element by element
//!    in rank order, `((g₀ + g₁) + g₂) + …` (the sum the sequence-parallel models use: a
//!    reduce-scatter through an all-to-all, each rank adding one block of every rank's
//!    values in rank order, then an all-gather of the summed blocks). `MPI_Allreduce` is not
//!    used because the standard lets the library pick its reduction algorithm (and so the
//!    rounding) by message size and rank count, and does not promise every rank the same
//!    bits; this way the result depends only on the rank count, and every rank holds
//!    bitwise the same gradients.
//! 3. **The same Adam step** on every rank (same norm, same clipping), so every rank keeps
//!    the same parameters and optimizer state.
//!
//! Communication per step: `2·(P − 1)/P · N·s` bytes sent and as many received per rank
//! (as for a ring all-reduce), plus `40·P` bytes of agreement, where `N` is the parameter
//! count and `s` the element size.

use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Count;
use scan_core::LinearScan;
use scan_mpi::MpiElement;
use surrogate_rnn::{Adam, BatchStats, Classifier, ModelInput, Parameters, Real, TrainStats};

use crate::sequence::sum::sum_in_rank_order;
use crate::DataParallelError;

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
        let local = local.map_err(|error| error.to_string());
        let batch = self.sum_gradients(model, local, labels.len())?;
        let report = optimizer.step(model)?;
        Ok(TrainStats {
            batch,
            grad_norm: report.grad_norm,
            clipped: report.clipped,
        })
    }

    /// Steps 1 and 2 of the module doc, after this rank's pass: `local` is its outcome
    /// (`Ok(None)` for a rank with no sequences) on `n_local` sequences, whose mean
    /// gradients `model` holds. The ranks agree (a failure anywhere is every rank's
    /// [`DataParallelError::RankFailed`]), then every rank's gradients are replaced by the
    /// global batch's, `Σ_r (B_r / B) · grad_r` in rank order. Returns the global batch's
    /// statistics, the same on every rank. Collective.
    pub fn sum_gradients<E: MpiElement + Real, P: Parameters<E> + ?Sized>(
        &self,
        model: &mut P,
        local: Result<Option<BatchStats>, String>,
        n_local: usize,
    ) -> Result<BatchStats, DataParallelError> {
        let agreed = self.agree_step(local, n_local, model.n_params())?;
        let weight = n_local as f64 / agreed.n_batch as f64;
        self.reduce_gradients(model, weight, agreed.n_params)?;
        Ok(agreed.stats)
    }

    /// Step 1 of the module doc alone, for an evaluation: the ranks agree on their
    /// outcomes, and every rank gets the global batch's statistics (losses weighted by
    /// each rank's share of the sequences, summed in rank order). Collective.
    pub fn sum_stats(
        &self,
        local: Result<Option<BatchStats>, String>,
        n_local: usize,
    ) -> Result<BatchStats, DataParallelError> {
        Ok(self.agree_step(local, n_local, 0)?.stats)
    }

    /// Replaces every rank's gradients by `Σ_r weight_r · grad_r`, summed in rank order (see
    /// the module doc), so every rank ends with the same bits.
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
        sum_in_rank_order(&self.communicator, &mut sum).map_err(|_| {
            DataParallelError::TooLarge {
                what: "the parameter count",
                value: n_params,
                max: i64::from(Count::MAX),
            }
        })?;
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

    /// Step 1 of the module doc for a training step.
    fn agree_step(
        &self,
        local: Result<Option<BatchStats>, String>,
        n_local: usize,
        n_params: usize,
    ) -> Result<Agreement, DataParallelError> {
        let (status, loss, n_correct) = match local {
            Ok(stats) => (
                Ok(()),
                stats.map_or(0.0, |s| s.loss),
                stats.map_or(0, |s| s.n_correct),
            ),
            Err(error) => (Err(error), 0.0, 0),
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
