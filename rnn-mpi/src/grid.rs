//! Sequence and data parallelism together: a 2-D grid of ranks.
//!
//! The world is split twice (`MPI_Comm_split`): each **data group** (the `S` consecutive
//! ranks `d·S .. (d+1)·S`) is one [`SequenceParallel`] over its share of the batch, and
//! the ranks holding the same part of the steps in every group form an **across** group,
//! a [`DataParallel`] over the `D` groups. A step:
//!
//! 1. every data group runs its sequence-parallel pass, which sums the gradients over its
//!    `S` ranks in rank order (the group's mean gradient, on each of its ranks);
//! 2. every rank agrees with the whole world on the outcome, so a failure in one group is
//!    every rank's error before any rank enters step 3;
//! 3. each across group sums the groups' gradients weighted by their share of the batch, in
//!    group order, as [`DataParallel`] does. All `S` across groups add the same values in the
//!    same order, so every rank ends with the same bits, deterministic for a given grid.

use mpi::collective::SystemOperation;
use mpi::topology::{Color, Communicator, SimpleCommunicator};
use mpi::traits::*;
use scan_core::LinearScan;
use scan_mpi::MpiElement;
use surrogate_rnn::{Adam, BatchStats, Classifier, ModelInput, Parameters, Real, TrainStats};

use crate::{DataParallel, GridError, GridPosition, GridShape, SequenceError, SequenceParallel};

/// Trains a [`Classifier`] over a [`GridShape`] of ranks: `D` data groups, each splitting
/// its sequences over `S` ranks (see the module doc).
///
/// Every call is collective: every rank calls it with the same model, its data group's
/// labels and its own steps of them (`GridShape::batch_share`, `GridShape::step_share`).
/// The result equals [`Classifier::loss_and_grad`] on the whole batch and the whole
/// sequence in one process, to rounding. A data group may have no sequences (a batch
/// smaller than `D`): its ranks pass none and take part in the exchanges only.
pub struct GridParallel<S> {
    shape: GridShape,
    position: GridPosition,
    /// This rank's data group, for the check that its ranks agree on having sequences.
    group: SimpleCommunicator,
    /// All ranks: the agreement on every step's outcome, and the replica check.
    world: DataParallel,
    /// This rank's data group.
    sequence: SequenceParallel<S>,
    /// The ranks holding this rank's part of the steps, one per data group.
    across: DataParallel,
}

impl<S> GridParallel<S> {
    /// The grid over the ranks of `communicator` with `sequence_ranks` ranks per data
    /// group, each rank's recurrences on `local`. Collective; the shape error (when
    /// `sequence_ranks` does not divide the rank count) is the same on every rank.
    pub fn new<C: Communicator>(
        communicator: &C,
        sequence_ranks: usize,
        local: S,
    ) -> Result<Self, GridError> {
        let rank = communicator.rank() as usize;
        let shape = GridShape::new(communicator.size() as usize, sequence_ranks)?;
        let position = shape.position(rank);
        let color = |value: usize| Color::with_value(value as i32);
        let group = communicator
            .split_by_color_with_key(color(position.data_group), position.sequence_rank as i32)
            .expect("every rank has a color");
        let across = communicator
            .split_by_color_with_key(color(position.sequence_rank), position.data_group as i32)
            .expect("every rank has a color");
        Ok(Self {
            shape,
            position,
            group: group.duplicate(),
            world: DataParallel::new(communicator),
            sequence: SequenceParallel::new(&group, local),
            across: DataParallel::new(&across),
        })
    }

    /// The grid's shape.
    pub fn shape(&self) -> GridShape {
        self.shape
    }

    /// Where this rank sits.
    pub fn position(&self) -> GridPosition {
        self.position
    }

    /// Checks that every rank of the grid holds the same model and optimizer state (see
    /// [`DataParallel::check_replicas`]). Collective.
    pub fn check_replicas<E: Real, P: Parameters<E> + ?Sized>(
        &self,
        model: &P,
        optimizer: &Adam<E>,
    ) -> Result<(), GridError> {
        Ok(self.world.check_replicas(model, optimizer)?)
    }

    /// Loss and gradients of the mean cross-entropy of the global batch: this rank's steps
    /// `input` (`(T_r, B_d, ·)`) of its data group's sequences, whose `labels` every rank
    /// of the group passes. **Sets** every parameter gradient to the global batch's, the
    /// same bits on every rank; returns the global loss and accuracy. Collective.
    pub fn loss_and_grad<E>(
        &self,
        model: &mut Classifier<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
    ) -> Result<BatchStats, GridError>
    where
        E: Real + MpiElement,
        S: LinearScan<E>,
    {
        // A group without sequences adds zeros (weighted by 0, but never NaN).
        model.zero_grad();
        let local =
            self.group_pass(labels, || self.sequence.loss_and_grad(model, input, labels))?;
        Ok(self.across.sum_gradients(model, local, labels.len())?)
    }

    /// Loss and accuracy of the global batch (arguments as for
    /// [`GridParallel::loss_and_grad`]), without gradients; on every rank. Collective.
    pub fn evaluate<E>(
        &self,
        model: &mut Classifier<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
    ) -> Result<BatchStats, GridError>
    where
        E: Real + MpiElement,
        S: LinearScan<E>,
    {
        let local = self.group_pass(labels, || self.sequence.evaluate(model, input, labels))?;
        Ok(self.across.sum_stats(local, labels.len())?)
    }

    /// One training iteration: [`GridParallel::loss_and_grad`], then the same Adam update
    /// on every rank.
    pub fn train_step<E>(
        &self,
        model: &mut Classifier<E>,
        optimizer: &mut Adam<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
    ) -> Result<TrainStats, GridError>
    where
        E: Real + MpiElement,
        S: LinearScan<E>,
    {
        let batch = self.loss_and_grad(model, input, labels)?;
        let report = optimizer
            .step(model)
            .map_err(crate::DataParallelError::Optimizer)?;
        Ok(TrainStats {
            batch,
            grad_norm: report.grad_norm,
            clipped: report.clipped,
        })
    }

    /// Step 1 (`pass`, unless the group has no sequences) and step 2 of the module doc.
    fn group_pass(
        &self,
        labels: &[usize],
        pass: impl FnOnce() -> Result<BatchStats, SequenceError>,
    ) -> Result<Result<Option<BatchStats>, String>, GridError> {
        let local = match self.group_has_sequences(labels) {
            Ok(true) => pass().map(Some),
            Ok(false) => Ok(None),
            Err(error) => Err(error),
        };
        self.agree(local)
    }

    /// Step 2 of the module doc: every rank learns whether any group failed, with the
    /// message of the lowest rank whose own arguments were wrong. (A rank whose group
    /// failed elsewhere holds `OtherRankFailed`; some rank of its group holds the cause.)
    fn agree(
        &self,
        local: Result<Option<BatchStats>, SequenceError>,
    ) -> Result<Result<Option<BatchStats>, String>, GridError> {
        let own = match &local {
            Err(error) if !matches!(error, SequenceError::OtherRankFailed { .. }) => {
                Err(error.to_string())
            }
            _ => Ok(()),
        };
        self.world.agree(own)?;
        Ok(local.map_err(|error| error.to_string()))
    }

    /// Whether this rank's data group has sequences: all its ranks must pass some, or all
    /// none (one all-reduce over the group, so its ranks take the same path). Collective.
    fn group_has_sequences(&self, labels: &[usize]) -> Result<bool, SequenceError> {
        let empty = u8::from(labels.is_empty());
        let mut either = [0_u8; 2];
        self.group.all_reduce_into(
            &[empty, 1 - empty][..],
            &mut either[..],
            SystemOperation::max(),
        );
        match either {
            [1, 1] => Err(SequenceError::Disagreement {
                what: "whether the data group has sequences",
            }),
            [empty, _] => Ok(empty == 0),
        }
    }
}
