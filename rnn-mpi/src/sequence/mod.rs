//! Sequence parallelism: one batch whose sequence is split over time across ranks.

#[cfg(feature = "mpi")]
mod backend;
mod error;
#[cfg(feature = "mpi")]
pub(crate) mod sum;

pub use error::SequenceError;

#[cfg(feature = "mpi")]
pub use parallel::SequenceParallel;

#[cfg(feature = "mpi")]
mod parallel {
    use std::hash::{DefaultHasher, Hash, Hasher};

    use mpi::topology::{Color, SimpleCommunicator};
    use mpi::traits::*;
    use scan_core::LinearScan;
    use scan_mpi::{DistributedScan, MpiElement};
    use surrogate_rnn::{
        softmax_cross_entropy, Adam, BatchStats, Classifier, InputKind, LayerKind, ModelError,
        ModelInput, Parameters, Real, Subnormals, TrainStats,
    };

    use super::backend::{Flushed, SplitBackend};
    use super::sum::sum_in_rank_order;
    use super::SequenceError;

    /// Trains a [`Classifier`] on batches whose sequences are split over time across the
    /// ranks of a communicator: rank `r` holds the `r`-th consecutive run of steps (any
    /// split; ranks with no steps take part in the gradient sum only).
    ///
    /// Every call is collective: every rank calls it with the same model (same parameters),
    /// its own steps and the batch's labels. The result equals
    /// [`Classifier::loss_and_grad`] on the whole sequence in one process, to rounding:
    /// each layer's scans run as [`DistributedScan`]s, the GILR-LSTM's look-back at a
    /// rank's first step reads the previous rank's last `h̃` (the scan's carry), the QRNN
    /// receives its window of `k − 1` inputs from the ranks before, and their gradients
    /// travel back. The head and the loss run on the last rank that holds steps; the loss
    /// is broadcast and the gradients are summed over the ranks in rank order (the same
    /// bits on every rank, deterministic for a given rank count).
    ///
    /// The local recurrences run on `S` (e.g. `scan_cpu::Parallel`), everything else on
    /// [`surrogate_rnn::CpuBackend`] with the model's buffer pool; all of it with
    /// subnormals flushed to zero, as `CpuBackend` computes by default.
    ///
    /// # Failures
    ///
    /// Arguments are checked on every rank and the ranks agree before the first exchange,
    /// so bad arguments on any rank give an error on every rank. A failure after that (out
    /// of memory, a bug) cannot be announced to ranks already waiting in an exchange: the
    /// failing rank prints its error and aborts the job (`MPI_Abort`), so no rank hangs.
    pub struct SequenceParallel<S> {
        world: SimpleCommunicator,
        local: S,
    }

    /// Where the steps are: how many each rank holds.
    struct Layout {
        steps: Vec<usize>,
    }

    impl Layout {
        /// The last rank holding steps (the one with the head and the loss).
        fn last_holder(&self) -> Option<usize> {
            self.steps.iter().rposition(|&n| n > 0)
        }
    }

    impl<S> SequenceParallel<S> {
        /// Runs over the ranks of `communicator` (in rank order), each rank's recurrences
        /// on `local`. Collective.
        pub fn new<C: Communicator>(communicator: &C, local: S) -> Self {
            Self {
                world: communicator.duplicate(),
                local,
            }
        }

        /// Loss and gradients of the mean cross-entropy of the batch whose steps are split
        /// over the ranks: this rank's steps `input` (`(T_r, B, ·)`, `T_r ≥ 0`) and the
        /// batch's `labels` (the same on every rank). **Sets** every parameter gradient to
        /// the whole batch's (on every rank), and returns the loss and accuracy (on every
        /// rank). Collective.
        pub fn loss_and_grad<E>(
            &self,
            model: &mut Classifier<E>,
            input: ModelInput<'_, E>,
            labels: &[usize],
        ) -> Result<BatchStats, SequenceError>
        where
            E: Real + MpiElement,
            S: LinearScan<E>,
        {
            let stats = self.pass(model, input, labels, true)?;
            let mut grads = Vec::with_capacity(model.n_params());
            model.visit_params(&mut |_, _, grad| grads.extend(grad.iter().copied()));
            sum_in_rank_order(&self.world, &mut grads)?;
            let mut offset = 0;
            model.visit_params_mut(&mut |_, mut param| {
                for (g, &sum) in param.grad.iter_mut().zip(&grads[offset..]) {
                    *g = sum;
                }
                offset += param.grad.len();
            });
            Ok(stats)
        }

        /// Loss and accuracy of the batch whose steps are split over the ranks (arguments as
        /// for [`SequenceParallel::loss_and_grad`]), without gradients; on every rank.
        /// Collective. (`&mut` for the model's buffer pool; parameters and gradients are
        /// left as they are.)
        pub fn evaluate<E>(
            &self,
            model: &mut Classifier<E>,
            input: ModelInput<'_, E>,
            labels: &[usize],
        ) -> Result<BatchStats, SequenceError>
        where
            E: Real + MpiElement,
            S: LinearScan<E>,
        {
            self.pass(model, input, labels, false)
        }

        /// The agreement, then forward (and, with `backward`, backward from zeroed
        /// gradients) on the ranks that hold steps, and the loss from the last of them.
        fn pass<E>(
            &self,
            model: &mut Classifier<E>,
            input: ModelInput<'_, E>,
            labels: &[usize],
            backward: bool,
        ) -> Result<BatchStats, SequenceError>
        where
            E: Real + MpiElement,
            S: LinearScan<E>,
        {
            let layout = self.agree(model, &input, labels)?;
            let last = layout.last_holder().ok_or(SequenceError::NoSteps)?;
            if backward {
                model.zero_grad();
            }
            let rank = self.world.rank() as usize;
            let color = match layout.steps[rank] > 0 {
                true => Color::with_value(0),
                false => Color::undefined(),
            };
            // The ranks holding steps, in rank (= time) order.
            let chain = self.world.split_by_color(color);
            let mut summary = [0.0_f64; 2];
            if let Some(chain) = chain {
                let is_last = rank == last;
                match self.run(&chain, model, input, labels, (is_last, backward)) {
                    Ok(Some((loss, n_correct))) => summary = [loss, n_correct as f64],
                    Ok(None) => {}
                    Err(error) => self.abort(&error),
                }
            }
            self.world
                .process_at_rank(last as i32)
                .broadcast_into(&mut summary[..]);
            let n_correct = summary[1] as usize;
            Ok(BatchStats {
                loss: summary[0],
                accuracy: n_correct as f64 / labels.len().max(1) as f64,
                n_correct,
                n_sequences: labels.len(),
            })
        }

        /// One training iteration on every rank: [`SequenceParallel::loss_and_grad`], then
        /// the Adam update (the same on every rank, since parameters and gradients are).
        pub fn train_step<E>(
            &self,
            model: &mut Classifier<E>,
            optimizer: &mut Adam<E>,
            input: ModelInput<'_, E>,
            labels: &[usize],
        ) -> Result<TrainStats, SequenceError>
        where
            E: Real + MpiElement,
            S: LinearScan<E>,
        {
            let batch = self.loss_and_grad(model, input, labels)?;
            let report = optimizer.step(model)?;
            Ok(TrainStats {
                batch,
                grad_norm: report.grad_norm,
                clipped: report.clipped,
            })
        }

        /// Forward (and backward) on this rank's steps; the loss and the number of correct
        /// labels on the last rank.
        fn run<E>(
            &self,
            chain: &SimpleCommunicator,
            model: &mut Classifier<E>,
            input: ModelInput<'_, E>,
            labels: &[usize],
            (is_last, backward): (bool, bool),
        ) -> Result<Option<(f64, usize)>, ModelError>
        where
            E: Real + MpiElement,
            S: LinearScan<E>,
        {
            let local = Flushed {
                local: &self.local,
                mode: Subnormals::default(),
            };
            let scan = DistributedScan::new(chain, local);
            model.with_pooled_cpu(scan.local(), |model, cpu| {
                let backend = SplitBackend::new(cpu, &scan, chain);
                let (pass, _final_state) = model.forward_on(&backend, input, None)?;
                let loss = match is_last {
                    true => Some(softmax_cross_entropy(pass.logits(), labels)?),
                    false => None,
                };
                if backward {
                    let grad_logits = loss.as_ref().map(|l| l.grad_logits.view());
                    model.backward_params_on(&backend, input, pass, grad_logits, None)?;
                }
                Ok(loss.map(|l| (l.loss, l.n_correct)))
            })
        }

        /// Checks this rank's arguments and agrees with the other ranks on the outcome,
        /// the batch size and the model; returns every rank's step count.
        fn agree<E: Real>(
            &self,
            model: &Classifier<E>,
            input: &ModelInput<'_, E>,
            labels: &[usize],
        ) -> Result<Layout, SequenceError> {
            let (n_steps, n_batch) = input.dim();
            let checked = check(model, input, labels);
            let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            let local = [
                i64::from(checked.is_err()),
                as_i64(n_steps),
                as_i64(n_batch),
                fingerprint(model),
            ];
            let mut all = vec![0_i64; 4 * self.world.size() as usize];
            self.world.all_gather_into(&local[..], &mut all[..]);
            let failures = all.chunks_exact(4).filter(|r| r[0] != 0).count();
            checked?;
            if failures > 0 {
                return Err(SequenceError::OtherRankFailed { count: failures });
            }
            if all.chunks_exact(4).any(|r| r[2] != local[2]) {
                return Err(SequenceError::Disagreement {
                    what: "the batch size",
                });
            }
            if all.chunks_exact(4).any(|r| r[3] != local[3]) {
                return Err(SequenceError::Disagreement { what: "the model" });
            }
            Ok(Layout {
                steps: all.chunks_exact(4).map(|r| r[1] as usize).collect(),
            })
        }

        /// Prints `error` and ends the job: other ranks may be waiting in an exchange.
        fn abort(&self, error: &ModelError) -> ! {
            eprintln!(
                "rank {}: sequence-parallel pass failed after the ranks agreed to run it: {error}",
                self.world.rank()
            );
            self.world.abort(1)
        }
    }

    /// This rank's arguments: a model whose layers can be split, an input it reads, one
    /// label per sequence.
    fn check<E: Real>(
        model: &Classifier<E>,
        input: &ModelInput<'_, E>,
        labels: &[usize],
    ) -> Result<(), SequenceError> {
        let config = model.config();
        if config.layer == LayerKind::Lstm {
            return Err(SequenceError::NotSplittable {
                layer: config.layer.label(),
            });
        }
        let invalid = |reason: String| {
            SequenceError::Model(ModelError::InvalidInput {
                operation: "SequenceParallel",
                reason,
            })
        };
        let (_, n_batch) = input.dim();
        if n_batch == 0 || labels.len() != n_batch {
            return Err(invalid(format!(
                "{} labels for a batch of {n_batch} sequences",
                labels.len()
            )));
        }
        if let Some(bad) = labels.iter().find(|&&l| l >= config.classes) {
            return Err(invalid(format!(
                "label {bad} is out of range for {} classes",
                config.classes
            )));
        }
        let reads = match (input, config.input) {
            (ModelInput::Dense(x), InputKind::Dense { size }) => x.dim().2 == size,
            (ModelInput::OneHot(x), InputKind::OneHot { vocab }) => x.vocab() == vocab,
            _ => false,
        };
        if !reads {
            return Err(invalid(format!(
                "the input does not fit the model's {:?} input",
                config.input
            )));
        }
        Ok(())
    }

    /// A hash of the architecture and every parameter value: equal on ranks that hold
    /// the same model.
    fn fingerprint<E: Real>(model: &Classifier<E>) -> i64 {
        let mut hasher = DefaultHasher::new();
        format!("{:?}", model.config()).hash(&mut hasher);
        model.visit_params(&mut |name, value, _| {
            name.hash(&mut hasher);
            for v in value.iter() {
                v.as_f64().to_bits().hash(&mut hasher);
            }
        });
        hasher.finish() as i64
    }
}
