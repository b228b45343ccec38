//! Small numeric helpers shared by the layers: activations, matrix products, layouts.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, Axis, CowArray, Ix2};
use scan_core::{BackwardInputs, BackwardOutputs, Direction, ForwardInputs, LinearScan};

use crate::{ModelError, Real};

/// The logistic sigmoid `1 / (1 + e^{-x})`.
#[inline]
pub(crate) fn sigmoid<E: Real>(x: E) -> E {
    E::one() / (E::one() + (-x).exp())
}

/// `c = alpha·a·b + beta·c` through ndarray (matrixmultiply), any strides.
#[inline]
pub(crate) fn gemm<E: Real>(
    alpha: E,
    a: &ArrayView2<'_, E>,
    b: &ArrayView2<'_, E>,
    beta: E,
    c: &mut ArrayViewMut2<'_, E>,
) {
    general_mat_mul(alpha, a, b, beta, c);
}

/// A time-major `(T, B, F)` array as `(T·B, F)` rows, copied only if not contiguous.
pub(crate) fn rows<'a, E: Real>(x: ArrayView3<'a, E>) -> CowArray<'a, E, Ix2> {
    let (n_steps, n_batch, n_features) = x.dim();
    let shape = (n_steps * n_batch, n_features);
    if x.is_standard_layout() {
        CowArray::from(
            x.into_shape_with_order(shape)
                .expect("standard layout reshapes"),
        )
    } else {
        let owned = x.as_standard_layout().into_owned();
        CowArray::from(
            owned
                .into_shape_with_order(shape)
                .expect("standard layout reshapes"),
        )
    }
}

/// A contiguous `(T·B, n)` block seen as the scan's `(T, B·n)` problem (no copy).
pub(crate) fn as_scan<'a, E: Real>(block: ArrayView2<'a, E>, n_steps: usize) -> ArrayView2<'a, E> {
    let len = block.len();
    let n_features = len.checked_div(n_steps).unwrap_or(0);
    block
        .into_shape_with_order((n_steps, n_features))
        .expect("gate blocks are contiguous")
}

/// Mutable counterpart of [`as_scan`].
pub(crate) fn as_scan_mut<'a, E: Real>(
    block: ArrayViewMut2<'a, E>,
    n_steps: usize,
) -> ArrayViewMut2<'a, E> {
    let len = block.len();
    let n_features = len.checked_div(n_steps).unwrap_or(0);
    block
        .into_shape_with_order((n_steps, n_features))
        .expect("gate blocks are contiguous")
}

/// Runs the forward linear recurrence `h_t = a_t·h_{t-1} + x_t` over contiguous `(T·B, n)`
/// blocks, starting from zero.
pub(crate) fn scan_forward<E: Real>(
    scan: &dyn LinearScan<E>,
    n_steps: usize,
    decay: ArrayView2<'_, E>,
    impulse: ArrayView2<'_, E>,
    state: ArrayViewMut2<'_, E>,
) -> Result<(), ModelError> {
    let decay = as_scan(decay, n_steps);
    let impulse = as_scan(impulse, n_steps);
    let mut state = as_scan_mut(state, n_steps);
    scan.forward_into(
        ForwardInputs {
            decay: decay.view(),
            impulse: impulse.view(),
            initial: None,
            direction: Direction::Forward,
        },
        state.view_mut(),
    )?;
    Ok(())
}

/// The backward pass of [`scan_forward`]: writes ∂L/∂a and ∂L/∂x.
pub(crate) fn scan_backward<E: Real>(
    scan: &dyn LinearScan<E>,
    n_steps: usize,
    decay: ArrayView2<'_, E>,
    state: ArrayView2<'_, E>,
    grad_state: ArrayView2<'_, E>,
    grad_decay: ArrayViewMut2<'_, E>,
    grad_impulse: ArrayViewMut2<'_, E>,
) -> Result<(), ModelError> {
    let decay = as_scan(decay, n_steps);
    let state = as_scan(state, n_steps);
    let grad_state = as_scan(grad_state, n_steps);
    let mut grad_decay = as_scan_mut(grad_decay, n_steps);
    let mut grad_impulse = as_scan_mut(grad_impulse, n_steps);
    scan.backward_into(
        BackwardInputs {
            decay: decay.view(),
            state: state.view(),
            initial: None,
            grad_state: grad_state.view(),
            grad_last: None,
            direction: Direction::Forward,
        },
        BackwardOutputs {
            grad_decay: grad_decay.view_mut(),
            grad_impulse: grad_impulse.view_mut(),
            grad_initial: None,
        },
    )?;
    Ok(())
}

/// Splits a gate-major `(G, T·B, n)` array into its `G` blocks.
///
/// # Panics
/// If the array does not have exactly `G` blocks (a bug in the calling layer).
#[track_caller]
pub(crate) fn gate_blocks_mut<E, const G: usize>(
    gates: &mut Array3<E>,
) -> [ArrayViewMut2<'_, E>; G] {
    let blocks: Vec<_> = gates.outer_iter_mut().collect();
    match blocks.try_into() {
        Ok(blocks) => blocks,
        Err(_) => panic!("gate array has the wrong number of blocks"),
    }
}

/// The fewest elements one task of a parallel elementwise pass gets: about 10–50 µs of
/// work, well above rayon's cost of splitting off a task (≈ 1 µs), so small arrays (tests,
/// short sequences) run serially and large ones are split into many tasks that balance
/// across busy cores.
pub(crate) const PAR_MIN_ELEMENTS: usize = 1 << 14;

/// `Zip::from(a).and(b)…` run in parallel on rayon's pool: the arrays are split along their
/// rows into tasks of at least [`PAR_MIN_ELEMENTS`] elements, and `body` runs once per
/// element with the same expression as a serial `for_each`, so every result is bit-for-bit
/// the serial one whatever the number of threads.
///
/// `par_zip!((&mut out, &x, &y), |o, &x, &y| *o = x * y)`.
macro_rules! par_zip {
    (($first:expr $(, $rest:expr)* $(,)?), |$($p:pat_param),+ $(,)?| $body:expr) => {{
        use ::ndarray::parallel::prelude::*;
        ::ndarray::Zip::from($first)
            $(.and($rest))*
            .into_par_iter()
            .with_min_len($crate::ops::PAR_MIN_ELEMENTS)
            .for_each(|($($p,)+)| $body)
    }};
}
pub(crate) use par_zip;

/// `bias` seen as a `(rows, n)` matrix whose rows are all `bias` (stride 0, no copy), to
/// zip with a `(rows, n)` gate block.
///
/// # Panics
/// If `bias` is not `n` long (a bug in the calling layer).
#[track_caller]
pub(crate) fn rows_of<'a, E>(
    bias: &'a ndarray::ArrayView1<'_, E>,
    n_rows: usize,
) -> ArrayView2<'a, E> {
    bias.broadcast((n_rows, bias.len()))
        .expect("a vector broadcasts to rows of its length")
}

/// Adds the column sums of `block` to `grad_bias`.
pub(crate) fn add_column_sums<E: Real>(
    mut grad_bias: ndarray::ArrayViewMut1<'_, E>,
    block: ArrayView2<'_, E>,
) {
    let sums = block.sum_axis(Axis(0));
    grad_bias.zip_mut_with(&sums, |g, &s| *g = *g + s);
}

/// Reshapes a `(T·B, n)` array to `(T, B, n)`.
pub(crate) fn to_3d<E>(rows: Array2<E>, n_steps: usize, n_batch: usize) -> Array3<E> {
    let n = rows.ncols();
    rows.into_shape_with_order((n_steps, n_batch, n))
        .expect("row count is T·B")
}

/// The column block `k` (width `n`) of a `(·, G·n)` matrix.
pub(crate) fn block<'a, E>(w: ArrayView2<'a, E>, k: usize, n: usize) -> ArrayView2<'a, E> {
    w.slice_move(ndarray::s![.., k * n..(k + 1) * n])
}

/// Input projections of all gates at once: `gates[k] = x · W_k` (`W_k` the k-th column
/// block of `W`), one matrix product per gate block, writing (not adding) the result.
pub(crate) fn project_gates<E: Real>(
    x: ArrayView2<'_, E>,
    w: ArrayView2<'_, E>,
    gates: &mut Array3<E>,
) {
    let n = gates.dim().2;
    for (k, mut out) in gates.outer_iter_mut().enumerate() {
        gemm(E::one(), &x, &block(w, k, n), E::zero(), &mut out);
    }
}

/// Backward of [`project_gates`] plus a per-gate bias: `∂W_k += xᵀ·∂gates[k]`,
/// `∂b_k += Σ_rows ∂gates[k]`, `∂x += ∂gates[k]·W_kᵀ` (`grad_x` is accumulated into).
pub(crate) fn project_gates_backward<E: Real>(
    x: ArrayView2<'_, E>,
    w: ArrayView2<'_, E>,
    grad_w: &mut Array2<E>,
    grad_b: &mut ndarray::Array1<E>,
    grad_gates: &Array3<E>,
    grad_x: &mut ArrayViewMut2<'_, E>,
) {
    let n = grad_gates.dim().2;
    for (k, dp) in grad_gates.outer_iter().enumerate() {
        let mut gw = grad_w.slice_mut(ndarray::s![.., k * n..(k + 1) * n]);
        gemm(E::one(), &x.t(), &dp, E::one(), &mut gw);
        add_column_sums(grad_b.slice_mut(ndarray::s![k * n..(k + 1) * n]), dp);
        gemm(E::one(), &dp, &block(w, k, n).t(), E::one(), grad_x);
    }
}
