//! The pieces every linear surrogate layer is made of, each a forward and its backward on
//! a [`Backend`]:
//!
//! * gate projections `P_k (+)= x·W_k` over column blocks of one weight matrix;
//! * the gated scan `c = scan(f, (1 − f) ⊙ v)` (GILR, GILR-LSTM's `h̃`, QRNN, SRU) and the
//!   input-gated scan `c = scan(f, i ⊙ z)` (GILR-LSTM's cell), gates activated in the
//!   same pass that forms the impulse;
//! * the output gate `h = o ⊙ c` (or SRU's highway `h = r ⊙ c + (1 − r) ⊙ x`).
//!
//! Conventions: gate matrices hold pre-activations on entry to a forward and the
//! activated gates on return; a backward overwrites them with the gradients of their
//! pre-activations. A scan's initial state and the gradient of its last state travel in
//! [`ScanEnds`].

use ndarray::{ArrayView1, Axis};

use crate::backend::{Backend, Candidate, ScanEnds, Transpose};
use crate::{ModelError, Real};

/// Block `k` (width `n`) of a host bias vector, as a `(1, n)` operand; an error when the
/// block lies outside `bias`.
pub fn bias_block<'a, E: Real, B: Backend<E>>(
    backend: &B,
    bias: ArrayView1<'a, E>,
    k: usize,
    n: usize,
) -> Result<B::View<'a>, ModelError> {
    let start = k.checked_mul(n).ok_or_else(|| ModelError::InvalidInput {
        operation: "bias_block",
        reason: format!("block {k} of width {n} starts past usize::MAX"),
    })?;
    backend.columns(backend.host(bias.insert_axis(Axis(0))), start, n)
}

/// `N` new `(rows, cols)` matrices, zeroed or unspecified.
pub fn matrices<E: Real, B: Backend<E>, const N: usize>(
    backend: &B,
    rows: usize,
    cols: usize,
    zeroed: bool,
) -> Result<[B::Matrix; N], ModelError> {
    let mut out = Vec::with_capacity(N);
    for _ in 0..N {
        out.push(if zeroed {
            backend.zeros(rows, cols)?
        } else {
            backend.scratch(rows, cols)?
        });
    }
    out.try_into().map_err(|_| ModelError::InvalidInput {
        operation: "matrices",
        reason: "buffer count".into(),
    })
}

/// The width of one of `n_gates` column blocks of `w`.
fn block_width<E: Real, B: Backend<E>>(
    backend: &B,
    w: B::View<'_>,
    n_gates: usize,
) -> Result<usize, ModelError> {
    let cols = backend.dims(w).1;
    match cols.checked_div(n_gates) {
        Some(n) if n * n_gates == cols => Ok(n),
        _ => Err(ModelError::InvalidInput {
            operation: "project",
            reason: format!("{cols} weight columns do not split into {n_gates} gate blocks"),
        }),
    }
}

/// Gate projections: `gates[k] = x·W_k` (or `+=` when `accumulate`), `W_k` the k-th of
/// `gates.len()` column blocks of `w`, one product per gate.
pub fn project<E: Real, B: Backend<E>>(
    backend: &B,
    x: B::View<'_>,
    w: B::View<'_>,
    gates: &mut [B::ViewMut<'_>],
    accumulate: bool,
) -> Result<(), ModelError> {
    let n = block_width(backend, w, gates.len())?;
    for (k, gate) in gates.iter_mut().enumerate() {
        let w_k = backend.columns(w, k * n, n)?;
        let gate = backend.reborrow(gate);
        backend.matmul(x, Transpose::No, w_k, Transpose::No, gate, accumulate)?;
    }
    Ok(())
}

/// Backward of [`project`] (plus a per-gate bias when `grad_bias` is given), per gate in
/// order: `∂W_k += xᵀ·∂P_k`, `∂b_k += Σ_rows ∂P_k`, and `∂x += ∂P_k·W_kᵀ` when `grad_x`
/// is given.
pub fn project_backward<E: Real, B: Backend<E>>(
    backend: &B,
    x: B::View<'_>,
    w: B::View<'_>,
    mut grad_w: B::ViewMut<'_>,
    mut grad_bias: Option<B::ViewMut<'_>>,
    grad_gates: &[B::View<'_>],
    mut grad_x: Option<B::ViewMut<'_>>,
) -> Result<(), ModelError> {
    let n = block_width(backend, w, grad_gates.len())?;
    for (k, &dp) in grad_gates.iter().enumerate() {
        let gw = backend.columns_mut(backend.reborrow(&mut grad_w), k * n, n)?;
        backend.matmul(x, Transpose::Yes, dp, Transpose::No, gw, true)?;
        if let Some(grad_bias) = grad_bias.as_mut() {
            let gb = backend.columns_mut(backend.reborrow(grad_bias), k * n, n)?;
            backend.add_column_sums(dp, gb)?;
        }
        if let Some(grad_x) = grad_x.as_mut() {
            let w_k = backend.columns(w, k * n, n)?;
            let gx = backend.reborrow(grad_x);
            backend.matmul(dp, Transpose::No, w_k, Transpose::Yes, gx, true)?;
        }
    }
    Ok(())
}

/// The states of a scan, and the state that entered the backend's part of the sequence
/// if it came from an earlier part rather than from the given initial state
/// ([`Backend::scan_part`]).
pub type Scanned<M> = (M, Option<M>);

/// Runs `gates` (which activates the gates in place and writes the impulse), then the
/// scan `state_t = decay_t ⊙ state_{t−1} + impulse_t` from `initial`.
fn scan_with<E: Real, B: Backend<E>>(
    backend: &B,
    n_steps: usize,
    decay: &mut B::Matrix,
    initial: Option<B::View<'_>>,
    gates: impl FnOnce(&mut B::Matrix, B::ViewMut<'_>) -> Result<(), ModelError>,
) -> Result<Scanned<B::Matrix>, ModelError> {
    let (rows, n) = backend.matrix_dims(decay);
    let mut impulse = backend.scratch(rows, n)?;
    gates(decay, backend.view_mut(&mut impulse))?;
    let mut state = backend.scratch(rows, n)?;
    let ends = ScanEnds {
        initial,
        grad_last: None,
    };
    let result = backend.scan_part(
        n_steps,
        backend.view(decay),
        backend.view(&impulse),
        ends,
        backend.view_mut(&mut state),
    );
    backend.recycle(impulse);
    result.map(|entered| (state, entered))
}

/// The backward scan (giving `∂decay`, `∂impulse` and, when wanted, the gradient of the
/// initial state), then `gates` to turn them into pre-activation gradients.
fn scan_backward_with<E: Real, B: Backend<E>>(
    backend: &B,
    n_steps: usize,
    decay: &mut B::Matrix,
    grad: ScanGrad<B::View<'_>>,
    gates: impl FnOnce(&mut B::Matrix, B::View<'_>, B::View<'_>) -> Result<(), ModelError>,
) -> Result<Option<B::Matrix>, ModelError> {
    let (rows, n) = backend.matrix_dims(decay);
    let [mut grad_decay, mut grad_impulse] = matrices::<E, B, 2>(backend, rows, n, false)?;
    let mut grad_initial = match grad.want_initial {
        true => Some(backend.scratch(rows / n_steps.max(1), n)?),
        false => None,
    };
    backend.scan_backward(
        n_steps,
        backend.view(decay),
        grad.state,
        grad.ends,
        grad.grad_state,
        backend.view_mut(&mut grad_decay),
        backend.view_mut(&mut grad_impulse),
        grad_initial.as_mut().map(|g| backend.view_mut(g)),
    )?;
    gates(
        decay,
        backend.view(&grad_decay),
        backend.view(&grad_impulse),
    )?;
    backend.recycle(grad_decay);
    backend.recycle(grad_impulse);
    Ok(grad_initial)
}

/// The gated scan `c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ v_t` with `f = σ(P_f + b_f)`,
/// `v = act(P_v + b_v)`: activates `decay` and `candidate` in place and returns `c` (and
/// the state that entered from an earlier part, see [`Scanned`]).
#[allow(clippy::too_many_arguments)]
pub fn gated_scan<E: Real, B: Backend<E>>(
    backend: &B,
    n_steps: usize,
    decay: &mut B::Matrix,
    decay_bias: B::View<'_>,
    candidate: &mut B::Matrix,
    candidate_bias: B::View<'_>,
    activation: Candidate,
    initial: Option<B::View<'_>>,
) -> Result<Scanned<B::Matrix>, ModelError> {
    scan_with(backend, n_steps, decay, initial, |decay, impulse| {
        let (f, v) = (backend.view_mut(decay), backend.view_mut(candidate));
        backend.decay_gates(f, decay_bias, v, candidate_bias, activation, impulse)
    })
}

/// What the backward pass of a scan primitive reads: the forward pass's states, its
/// initial state and the gradient of its last state (`ends`), `∂L/∂state`, and whether
/// `∂L/∂initial` is wanted.
#[derive(Clone, Copy, Debug)]
pub struct ScanGrad<V> {
    /// The states of the forward pass, `(T·B, n)`.
    pub state: V,
    /// The forward pass's initial state and the gradient on its last state.
    pub ends: ScanEnds<V>,
    /// `∂L/∂state`, `(T·B, n)`.
    pub grad_state: V,
    /// Whether to return `∂L/∂initial`.
    pub want_initial: bool,
}

/// Backward of [`gated_scan`]: given the activated gates `[f, v]` and `grad` (with, in
/// `grad.ends.grad_last`, a gradient on the last state), overwrites the gates with `∂P_f`,
/// `∂P_v` and returns `∂L/∂c_0` when wanted.
pub fn gated_scan_backward<E: Real, B: Backend<E>>(
    backend: &B,
    n_steps: usize,
    [decay, candidate]: [&mut B::Matrix; 2],
    activation: Candidate,
    grad: ScanGrad<B::View<'_>>,
) -> Result<Option<B::Matrix>, ModelError> {
    scan_backward_with(
        backend,
        n_steps,
        decay,
        grad,
        |decay, grad_decay, grad_impulse| {
            let (f, v) = (backend.view_mut(decay), backend.view_mut(candidate));
            backend.decay_gates_backward(f, v, activation, grad_decay, grad_impulse)
        },
    )
}

/// The input-gated scan `c_t = f_t ⊙ c_{t−1} + i_t ⊙ z_t` with `f, i = σ(P + b)`,
/// `z = tanh(P_z + b_z)`: activates the three gates in place and returns `c` (and the
/// state that entered from an earlier part, see [`Scanned`]). `gates` are `[f, i, z]`,
/// `biases` their `(1, n)` biases.
pub fn input_gated_scan<E: Real, B: Backend<E>>(
    backend: &B,
    n_steps: usize,
    [forget, input, candidate]: [&mut B::Matrix; 3],
    [b_f, b_i, b_z]: [B::View<'_>; 3],
    initial: Option<B::View<'_>>,
) -> Result<Scanned<B::Matrix>, ModelError> {
    scan_with(backend, n_steps, forget, initial, |forget, impulse| {
        let f = backend.view_mut(forget);
        let (i, z) = (backend.view_mut(input), backend.view_mut(candidate));
        backend.input_gates(f, b_f, i, b_i, z, b_z, impulse)
    })
}

/// Backward of [`input_gated_scan`]: overwrites `[f, i, z]` with their pre-activation
/// gradients and returns `∂L/∂c_0` when wanted.
pub fn input_gated_scan_backward<E: Real, B: Backend<E>>(
    backend: &B,
    n_steps: usize,
    [forget, input, candidate]: [&mut B::Matrix; 3],
    grad: ScanGrad<B::View<'_>>,
) -> Result<Option<B::Matrix>, ModelError> {
    scan_backward_with(
        backend,
        n_steps,
        forget,
        grad,
        |forget, grad_decay, grad_impulse| {
            let f = backend.view_mut(forget);
            let (i, z) = (backend.view_mut(input), backend.view_mut(candidate));
            backend.input_gates_backward(f, i, z, grad_decay, grad_impulse)
        },
    )
}

/// The output gate `h = o ⊙ c` with `o = σ(P_o + b_o)` (or, with a `skip` input `x`,
/// the highway `h = o ⊙ c + (1 − o) ⊙ x`): activates `gate` in place and returns `h`.
pub fn output_gate<E: Real, B: Backend<E>>(
    backend: &B,
    gate: &mut B::Matrix,
    bias: B::View<'_>,
    cell: B::View<'_>,
    skip: Option<B::View<'_>>,
) -> Result<B::Matrix, ModelError> {
    let (rows, n) = backend.matrix_dims(gate);
    let mut out = backend.scratch(rows, n)?;
    backend.output_gate(
        backend.view_mut(gate),
        bias,
        cell,
        skip,
        backend.view_mut(&mut out),
    )?;
    Ok(out)
}

/// Backward of [`output_gate`]: overwrites `gate` with `∂P_o` and returns `∂L/∂c` and,
/// with a skip input, `∂L/∂x` through the highway.
pub fn output_gate_backward<E: Real, B: Backend<E>>(
    backend: &B,
    gate: &mut B::Matrix,
    cell: B::View<'_>,
    skip: Option<B::View<'_>>,
    grad_out: B::View<'_>,
) -> Result<(B::Matrix, Option<B::Matrix>), ModelError> {
    let (rows, n) = backend.matrix_dims(gate);
    let mut grad_cell = backend.scratch(rows, n)?;
    let mut grad_skip = skip.map(|_| backend.scratch(rows, n)).transpose()?;
    backend.output_gate_backward(
        backend.view_mut(gate),
        cell,
        skip,
        grad_out,
        backend.view_mut(&mut grad_cell),
        grad_skip.as_mut().map(|g| backend.view_mut(g)),
    )?;
    Ok((grad_cell, grad_skip))
}

/// `G` new gate matrices `P_k = x·W_k` from a layer's input weight `(m, G·n)`.
pub(crate) fn project_input<E: Real, B: Backend<E>, const G: usize>(
    backend: &B,
    x: B::View<'_>,
    weight: &crate::Param<E, ndarray::Ix2>,
) -> Result<[B::Matrix; G], ModelError> {
    let n = weight.value.ncols() / G.max(1);
    let mut gates = matrices::<E, B, G>(backend, backend.dims(x).0, n, false)?;
    let w = backend.host(weight.value.view());
    project(
        backend,
        x,
        w,
        &mut gates.each_mut().map(|g| backend.view_mut(g)),
        false,
    )?;
    Ok(gates)
}

/// Backward of [`project_input`] plus a per-gate bias: `∂W`, `∂b` accumulate into the
/// parameters' gradients, `∂x` into `grad_x` (if given), which is returned.
pub(crate) fn project_input_backward<E: Real, B: Backend<E>>(
    backend: &B,
    x: B::View<'_>,
    weight: &mut crate::Param<E, ndarray::Ix2>,
    bias: &mut crate::Param<E, ndarray::Ix1>,
    grad_gates: &[B::Matrix],
    mut grad_x: Option<B::Matrix>,
) -> Result<Option<B::Matrix>, ModelError> {
    let grad_bias = backend.host_mut(bias.grad.view_mut().insert_axis(Axis(0)));
    let w = backend.host(weight.value.view());
    let grad_w = backend.host_mut(weight.grad.view_mut());
    let views: Vec<_> = grad_gates.iter().map(|g| backend.view(g)).collect();
    let gx = grad_x.as_mut().map(|g| backend.view_mut(g));
    project_backward(backend, x, w, grad_w, Some(grad_bias), &views, gx)?;
    Ok(grad_x)
}

#[cfg(test)]
mod tests {
    use ndarray::arr1;

    use super::*;
    use crate::ReferenceBackend;

    #[test]
    fn bias_block_rejects_blocks_outside_the_bias() {
        let backend = ReferenceBackend;
        let bias = arr1(&[1.0_f64, 2.0, 3.0, 4.0]);
        let block = bias_block(&backend, bias.view(), 1, 2).unwrap();
        assert_eq!(backend.dims(block), (1, 2));
        // `k·n` overflows (and would wrap to block 0 in release builds).
        let err = bias_block(&backend, bias.view(), 1 << (usize::BITS - 1), 2).unwrap_err();
        assert!(err.to_string().contains("past usize::MAX"), "{err}");
        assert!(bias_block(&backend, bias.view(), 2, 2).is_err());
    }
}
