//! The trait every scan backend implements.

use std::iter::repeat_n;

use ndarray::{Array1, Array2, ArrayView2};

use crate::buffer::{try_array_2d, try_collect};
use crate::{
    backward_chunk_map, forward_chunk_map, BackwardInputs, BackwardOutputs, BackwardProblem,
    ChunkMap, Direction, Element, ForwardInputs, ForwardProblem, ScanError,
};

/// The gradients of the backward pass, as owned arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients<E> {
    /// ∂L/∂a, shape (T, F).
    pub decay: Array2<E>,
    /// ∂L/∂x, shape (T, F).
    pub impulse: Array2<E>,
    /// ∂L/∂h0, shape (F).
    pub initial: Array1<E>,
}

/// A backend that evaluates the linear recurrence and its gradient for element type `E`.
///
/// Implementors write [`LinearScan::forward_checked`] and [`LinearScan::backward_checked`],
/// which receive problems whose shapes are already validated; callers use the provided
/// methods, which validate first. Backends are plain values chosen at run time.
///
/// ```
/// use ndarray::array;
/// use scan_core::{Direction, ForwardInputs, LinearScan, Reference};
/// let decay = array![[0.5_f64], [0.5]];
/// let impulse = array![[1.0], [1.0]];
/// let h = Reference
///     .forward(ForwardInputs {
///         decay: decay.view(),
///         impulse: impulse.view(),
///         initial: None,
///         direction: Direction::Forward,
///     })
///     .unwrap();
/// assert_eq!(h, array![[1.0], [1.5]]);
/// ```
pub trait LinearScan<E: Element>: Send + Sync {
    /// A short name for messages and benchmark labels.
    fn name(&self) -> &'static str;

    /// Runs the forward recurrence of a validated problem, writing `problem.state`.
    fn forward_checked(&self, problem: ForwardProblem<'_, '_, E>) -> Result<(), ScanError>;

    /// Runs the backward pass of a validated problem, writing `problem.outputs`.
    fn backward_checked(&self, problem: BackwardProblem<'_, '_, E>) -> Result<(), ScanError>;

    /// Validates shapes, then writes the states h into `state`.
    fn forward_into(
        &self,
        inputs: ForwardInputs<'_, E>,
        state: ndarray::ArrayViewMut2<'_, E>,
    ) -> Result<(), ScanError> {
        self.forward_checked(ForwardProblem::new(inputs, state)?)
    }

    /// Validates shapes, then writes ∂L/∂a, ∂L/∂x and (if asked for) ∂L/∂h0.
    fn backward_into(
        &self,
        inputs: BackwardInputs<'_, E>,
        outputs: BackwardOutputs<'_, E>,
    ) -> Result<(), ScanError> {
        self.backward_checked(BackwardProblem::new(inputs, outputs)?)
    }

    /// Validates shapes and returns the states h in a new (T, F) array, or
    /// [`ScanError::AllocationFailed`] when that array does not fit in memory.
    fn forward(&self, inputs: ForwardInputs<'_, E>) -> Result<Array2<E>, ScanError> {
        let (dim, len) = (inputs.decay.dim(), inputs.decay.len());
        let mut state = try_array_2d("forward", "state", dim, repeat_n(E::zero(), len))?;
        self.forward_into(inputs, state.view_mut())?;
        Ok(state)
    }

    /// Validates shapes and returns all three gradients in new arrays, or
    /// [`ScanError::AllocationFailed`] when they do not fit in memory.
    fn backward(&self, inputs: BackwardInputs<'_, E>) -> Result<Gradients<E>, ScanError> {
        const OP: &str = "backward";
        let (dim, len) = (inputs.decay.dim(), inputs.decay.len());
        let zeros = || repeat_n(E::zero(), len);
        let mut grads = Gradients {
            decay: try_array_2d(OP, "grad_decay", dim, zeros())?,
            impulse: try_array_2d(OP, "grad_impulse", dim, zeros())?,
            initial: Array1::from_vec(try_collect(
                OP,
                "grad_initial",
                &[dim.1],
                repeat_n(E::zero(), dim.1),
            )?),
        };
        self.backward_into(
            inputs,
            BackwardOutputs {
                grad_decay: grads.decay.view_mut(),
                grad_impulse: grads.impulse.view_mut(),
                grad_initial: Some(grads.initial.view_mut()),
            },
        )?;
        Ok(grads)
    }

    /// Reduces a forward chunk to the affine map it applies to its entering state (what
    /// a sequence split over threads or processes exchanges). The default is the serial
    /// reduction [`forward_chunk_map`]; a backend may override it with a faster one.
    fn forward_map(
        &self,
        decay: ArrayView2<'_, E>,
        impulse: ArrayView2<'_, E>,
        direction: Direction,
    ) -> Result<ChunkMap<E>, ScanError> {
        forward_chunk_map(decay, impulse, direction)
    }

    /// Reduces a backward chunk to the affine map from its `grad_last` to its ∂L/∂h0. The
    /// default is the serial reduction [`backward_chunk_map`].
    fn backward_map(
        &self,
        decay: ArrayView2<'_, E>,
        grad_state: ArrayView2<'_, E>,
        direction: Direction,
    ) -> Result<ChunkMap<E>, ScanError> {
        backward_chunk_map(decay, grad_state, direction)
    }
}

impl<E: Element, B: LinearScan<E> + ?Sized> LinearScan<E> for &B {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn forward_checked(&self, problem: ForwardProblem<'_, '_, E>) -> Result<(), ScanError> {
        (**self).forward_checked(problem)
    }

    fn backward_checked(&self, problem: BackwardProblem<'_, '_, E>) -> Result<(), ScanError> {
        (**self).backward_checked(problem)
    }

    fn forward_map(
        &self,
        decay: ArrayView2<'_, E>,
        impulse: ArrayView2<'_, E>,
        direction: Direction,
    ) -> Result<ChunkMap<E>, ScanError> {
        (**self).forward_map(decay, impulse, direction)
    }

    fn backward_map(
        &self,
        decay: ArrayView2<'_, E>,
        grad_state: ArrayView2<'_, E>,
        direction: Direction,
    ) -> Result<ChunkMap<E>, ScanError> {
        (**self).backward_map(decay, grad_state, direction)
    }
}
