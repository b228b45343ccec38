//! The layers, the primitives they are built from, and the contract they share.
//!
//! Activations are time-major `(T·B, features)` matrices on a [`Backend`]: the `B` rows
//! of step `t` are rows `t·B..(t+1)·B`. A recurrent layer's `forward` starts from an
//! optional incoming [`LayerState`] (zeros when `None`) and returns its output, a
//! [`LayerCache`] for `backward`, and its final state; `backward` takes the input and
//! output again (the caller keeps them anyway), consumes the cache (its buffers are
//! reused for gradients), takes the gradient of the final state (from the next chunk, or
//! `None`), accumulates ∂L/∂parameters into the layer's [`crate::Param`] gradients and
//! returns ∂L/∂input and, if the forward pass had an incoming state, ∂L/∂state. Running a
//! sequence in chunks with the state carried over is therefore the same code as one run.
//!
//! Each layer's file reads as its equations: the shared pieces — gate projections, the
//! gated scans and the output gate — are in [`primitives`], each with its own backward.

/// `Parameters` for a layer whose parameters are the listed `Param` fields, each visited
/// under its field name.
macro_rules! params_from_fields {
    ($layer:ident: $($field:ident),+) => {
        impl<E: Real> Parameters<E> for $layer<E> {
            fn visit_params(&self, visitor: &mut ParamVisitor<'_, E>) {
                $(
                    let (value, grad) = self.$field.views();
                    visitor(stringify!($field), value, grad);
                )+
            }

            fn visit_params_mut(&mut self, visitor: &mut ParamVisitorMut<'_, E>) {
                $(visitor(stringify!($field), self.$field.views_mut());)+
            }
        }
    };
}

#[macro_use]
mod recurrence;
mod dense;
mod embedding;
mod gilr;
mod gilr_lstm;
mod lstm;
pub mod primitives;
mod qrnn;
mod sru;

pub use dense::Dense;
pub use embedding::{Embedding, OneHotSequence};
pub use gilr::Gilr;
pub use gilr_lstm::GilrLstm;
pub use lstm::Lstm;
pub use qrnn::Qrnn;
pub use sru::Sru;

use crate::backend::Backend;
use crate::error::check_shape;
use crate::{ModelError, Parameters, Real};

/// The recurrent state at a chunk boundary (or its gradient), as `(rows, cols)` matrices
/// on a backend; which parts a layer has is listed by [`Layer::state_dims`] (GILR: `h`;
/// GILR-LSTM: `h̃`, `c`; QRNN: `c` and its last `k − 1` inputs; SRU: `c`; LSTM: `h`, `c`).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerState<M> {
    parts: Vec<M>,
}

impl<M> LayerState<M> {
    /// A state from its parts, in the order of [`Layer::state_dims`] (checked when a
    /// layer uses it).
    pub fn new(parts: Vec<M>) -> Self {
        Self { parts }
    }

    /// The parts.
    pub fn parts(&self) -> &[M] {
        &self.parts
    }

    /// The parts, by value.
    pub fn into_parts(self) -> Vec<M> {
        self.parts
    }
}

/// What a layer's `forward` keeps for its `backward`: its buffers, the shape of the run,
/// and a copy of the state it started from.
#[derive(Debug)]
pub struct LayerCache<M> {
    layer: &'static str,
    n_steps: usize,
    n_batch: usize,
    buffers: Vec<M>,
    initial: Option<LayerState<M>>,
}

impl<M> LayerCache<M> {
    /// The cache of a layer that keeps nothing (a dense layer).
    pub(crate) fn stateless(layer: &'static str, (n_steps, n_batch): (usize, usize)) -> Self {
        Self {
            layer,
            n_steps,
            n_batch,
            buffers: Vec::new(),
            initial: None,
        }
    }

    /// `(T, B)` of the forward run.
    pub fn dims(&self) -> (usize, usize) {
        (self.n_steps, self.n_batch)
    }

    /// Gives every buffer back to the backend's pool.
    pub fn recycle<E: Real, B: Backend<E, Matrix = M>>(self, backend: &B) {
        for buffer in self.buffers {
            backend.recycle(buffer);
        }
        if let Some(state) = self.initial {
            for part in state.parts {
                backend.recycle(part);
            }
        }
    }
}

/// The result of a layer's forward pass.
#[derive(Debug)]
pub struct LayerOutput<M> {
    /// The output, `(T·B, n)`.
    pub output: M,
    /// What `backward` needs.
    pub cache: LayerCache<M>,
    /// The state after the last step (the next chunk's incoming state).
    pub state: LayerState<M>,
}

/// The result of a layer's backward pass.
#[derive(Debug)]
pub struct LayerGrads<M> {
    /// ∂L/∂input, `(T·B, m)`.
    pub input: M,
    /// ∂L/∂(incoming state), if the forward pass had one.
    pub initial: Option<LayerState<M>>,
}

/// A layer mapping `(T·B, m)` sequences to `(T·B, n)` sequences, carrying a state across
/// calls.
pub trait Layer<E: Real>: Parameters<E> {
    /// The number of input features m.
    fn input_size(&self) -> usize;

    /// The number of output features n.
    fn output_size(&self) -> usize;

    /// The `(rows, cols)` of each part of the state for a batch of `n_batch`.
    fn state_dims(&self, n_batch: usize) -> Vec<(usize, usize)>;

    /// Runs the layer over `input` `(T·B, m)` from `initial` (zeros when `None`).
    fn forward<'a, B: Backend<E>>(
        &self,
        backend: &B,
        input: B::View<'a>,
        n_batch: usize,
        initial: Option<&'a LayerState<B::Matrix>>,
    ) -> Result<LayerOutput<B::Matrix>, ModelError>;

    /// Given the `input` and `output` of the matching `forward` call, its `cache`,
    /// ∂L/∂output and ∂L/∂(final state), accumulates the parameter gradients and returns
    /// ∂L/∂input and ∂L/∂(incoming state).
    fn backward<'a, B: Backend<E>>(
        &mut self,
        backend: &B,
        input: B::View<'a>,
        output: B::View<'a>,
        cache: LayerCache<B::Matrix>,
        grad_output: B::View<'a>,
        grad_final: Option<&'a LayerState<B::Matrix>>,
    ) -> Result<LayerGrads<B::Matrix>, ModelError>;

    /// [`Layer::backward`] for an input that needs no gradient (the model's data, not
    /// another layer's output): accumulates the parameter gradients and returns only
    /// ∂L/∂(incoming state). The recurrent layers skip the products that form ∂L/∂input;
    /// the parameter gradients are the same as [`Layer::backward`]'s.
    fn backward_params<'a, B: Backend<E>>(
        &mut self,
        backend: &B,
        input: B::View<'a>,
        output: B::View<'a>,
        cache: LayerCache<B::Matrix>,
        grad_output: B::View<'a>,
        grad_final: Option<&'a LayerState<B::Matrix>>,
    ) -> Result<Option<LayerState<B::Matrix>>, ModelError> {
        let grads = self.backward(backend, input, output, cache, grad_output, grad_final)?;
        backend.recycle(grads.input);
        Ok(grads.initial)
    }
}

/// A state with the part shapes it must have.
pub(crate) type StateCheck<'s, M> = Option<(&'s LayerState<M>, Vec<(usize, usize)>)>;

/// Checks a forward call's input and incoming state, returning `T`.
pub(crate) fn check_forward<E: Real, B: Backend<E>>(
    backend: &B,
    operation: &'static str,
    input: B::View<'_>,
    n_batch: usize,
    input_size: usize,
    state: StateCheck<'_, B::Matrix>,
) -> Result<usize, ModelError> {
    let (rows, m) = backend.dims(input);
    if n_batch == 0 || rows == 0 || rows % n_batch != 0 {
        return Err(ModelError::InvalidInput {
            operation,
            reason: format!("{rows} input rows are not T ≥ 1 steps of a batch of {n_batch}"),
        });
    }
    check_shape(operation, "input", &[rows, input_size], &[rows, m])?;
    if let Some((state, dims)) = state {
        check_state(backend, operation, state, &dims)?;
    }
    Ok(rows / n_batch)
}

/// Checks that `state` has parts of exactly `dims`.
pub(crate) fn check_state<E: Real, B: Backend<E>>(
    backend: &B,
    operation: &'static str,
    state: &LayerState<B::Matrix>,
    dims: &[(usize, usize)],
) -> Result<(), ModelError> {
    check_shape(
        operation,
        "state parts",
        &[dims.len()],
        &[state.parts.len()],
    )?;
    for (part, &(rows, cols)) in state.parts.iter().zip(dims) {
        let actual = backend.matrix_dims(part);
        check_shape(operation, "state", &[rows, cols], &[actual.0, actual.1])?;
    }
    Ok(())
}

/// Checks a backward call's operands against the cache, returning `(T, B)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_backward<E: Real, B: Backend<E>>(
    backend: &B,
    operation: &'static str,
    cache: &LayerCache<B::Matrix>,
    input: B::View<'_>,
    input_size: usize,
    output: B::View<'_>,
    grad_output: B::View<'_>,
    output_size: usize,
    grad_final: StateCheck<'_, B::Matrix>,
) -> Result<(usize, usize), ModelError> {
    let (n_steps, n_batch) = cache.dims();
    let rows = n_steps * n_batch;
    let (r, c) = backend.dims(input);
    check_shape(operation, "input", &[rows, input_size], &[r, c])?;
    let (r, c) = backend.dims(output);
    check_shape(operation, "output", &[rows, output_size], &[r, c])?;
    let (r, c) = backend.dims(grad_output);
    check_shape(operation, "grad_output", &[rows, output_size], &[r, c])?;
    if let Some((state, dims)) = grad_final {
        check_state(backend, operation, state, &dims)?;
    }
    Ok((n_steps, n_batch))
}

/// A copy of a state in fresh buffers.
pub(crate) fn copy_state<E: Real, B: Backend<E>>(
    backend: &B,
    state: &LayerState<B::Matrix>,
) -> Result<LayerState<B::Matrix>, ModelError> {
    let parts = state
        .parts
        .iter()
        .map(|part| copy_matrix(backend, backend.view(part)))
        .collect::<Result<_, _>>()?;
    Ok(LayerState { parts })
}

/// A copy of a view in a fresh buffer.
pub(crate) fn copy_matrix<E: Real, B: Backend<E>>(
    backend: &B,
    view: B::View<'_>,
) -> Result<B::Matrix, ModelError> {
    let (rows, cols) = backend.dims(view);
    let mut copy = backend.scratch(rows, cols)?;
    backend.copy(view, backend.view_mut(&mut copy))?;
    Ok(copy)
}

/// The last `n_batch` rows (the last step) of a `(T·B, n)` matrix, copied.
pub(crate) fn last_step<E: Real, B: Backend<E>>(
    backend: &B,
    matrix: &B::Matrix,
    n_batch: usize,
) -> Result<B::Matrix, ModelError> {
    let (rows, _) = backend.matrix_dims(matrix);
    let last = backend.rows(
        backend.view(matrix),
        rows - n_batch.min(rows),
        n_batch.min(rows),
    )?;
    copy_matrix(backend, last)
}

/// Gives every matrix back to the backend's pool.
pub(crate) fn recycle<E: Real, B: Backend<E>>(
    backend: &B,
    matrices: impl IntoIterator<Item = B::Matrix>,
) {
    for matrix in matrices {
        backend.recycle(matrix);
    }
}

/// An array of results as the result of an array.
pub(crate) fn all_ok<T, const N: usize>(
    results: [Result<T, ModelError>; N],
) -> Result<[T; N], ModelError> {
    let values = results.into_iter().collect::<Result<Vec<T>, _>>()?;
    values.try_into().map_err(|_| ModelError::InvalidInput {
        operation: "all_ok",
        reason: "array length".into(),
    })
}

/// Rows `start..start + len` of each matrix, as mutable views.
pub(crate) fn rows_of_each<'a, E: Real, B: Backend<E>, const N: usize>(
    backend: &B,
    matrices: [&'a mut B::Matrix; N],
    start: usize,
    len: usize,
) -> Result<[B::ViewMut<'a>; N], ModelError> {
    all_ok(matrices.map(|m| backend.rows_mut(backend.view_mut(m), start, len)))
}

/// Rows `start..start + len` of each matrix, as views.
pub(crate) fn rows_of_each_ref<'a, E: Real, B: Backend<E>, const N: usize>(
    backend: &B,
    matrices: [&'a B::Matrix; N],
    start: usize,
    len: usize,
) -> Result<[B::View<'a>; N], ModelError> {
    all_ok(matrices.map(|m| backend.rows(backend.view(m), start, len)))
}
