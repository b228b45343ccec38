//! What the two host-memory backends share: ndarray storage, views, shape checks, copies
//! and the scan through a [`LinearScan`].

use ndarray::{
    s, Array, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Dimension,
    IntoDimension,
};
use scan_core::{BackwardInputs, BackwardOutputs, Direction, ForwardInputs, LinearScan};

use super::ScanEnds;
use crate::error::check_shape;
use crate::{ModelError, Real};

/// The element count of an array of `shape` with elements of type `T`, or `None` when it
/// overflows `usize` or its bytes exceed `isize::MAX` (more than one allocation may hold).
fn element_count<T>(shape: &[usize]) -> Option<usize> {
    let len = shape.iter().try_fold(1_usize, |n, &d| n.checked_mul(d))?;
    let bytes = len.checked_mul(std::mem::size_of::<T>())?;
    (bytes <= isize::MAX as usize).then_some(len)
}

/// `rows·cols` as an element count, or an error when it overflows or cannot be allocated.
pub(crate) fn checked_len<E>(rows: usize, cols: usize) -> Result<usize, ModelError> {
    element_count::<E>(&[rows, cols]).ok_or_else(|| ModelError::InvalidConfig {
        reason: format!("a {rows} × {cols} matrix is too large to allocate"),
    })
}

/// An array of shape `dim` filled with `fill`, or `None` when its size overflows or it
/// cannot be allocated (instead of a panic or an abort).
pub(crate) fn try_filled<T: Clone, D: Dimension>(
    dim: impl IntoDimension<Dim = D>,
    fill: T,
) -> Option<Array<T, D>> {
    let dim = dim.into_dimension();
    let len = element_count::<T>(dim.slice())?;
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).ok()?;
    buffer.resize(len, fill);
    Array::from_shape_vec(dim, buffer).ok()
}

/// A fresh zero matrix; an error instead of an abort when it cannot be allocated.
pub(crate) fn try_zeros<E: Real>(rows: usize, cols: usize) -> Result<Array2<E>, ModelError> {
    checked_len::<E>(rows, cols)?;
    try_filled((rows, cols), E::zero()).ok_or_else(|| ModelError::InvalidConfig {
        reason: format!("cannot allocate a {rows} × {cols} matrix"),
    })
}

fn range_error(
    operation: &'static str,
    what: &str,
    start: usize,
    len: usize,
    size: usize,
) -> ModelError {
    ModelError::InvalidInput {
        operation,
        reason: format!("{what} {start}..{start}+{len} out of range for {size}"),
    }
}

fn in_range(start: usize, len: usize, size: usize) -> bool {
    start.checked_add(len).is_some_and(|end| end <= size)
}

pub(crate) fn rows<'a, E>(
    view: ArrayView2<'a, E>,
    start: usize,
    len: usize,
) -> Result<ArrayView2<'a, E>, ModelError> {
    if !in_range(start, len, view.nrows()) {
        return Err(range_error(
            "Backend::rows",
            "rows",
            start,
            len,
            view.nrows(),
        ));
    }
    Ok(view.slice_move(s![start..start + len, ..]))
}

pub(crate) fn rows_mut<'a, E>(
    view: ArrayViewMut2<'a, E>,
    start: usize,
    len: usize,
) -> Result<ArrayViewMut2<'a, E>, ModelError> {
    if !in_range(start, len, view.nrows()) {
        return Err(range_error(
            "Backend::rows_mut",
            "rows",
            start,
            len,
            view.nrows(),
        ));
    }
    Ok(view.slice_move(s![start..start + len, ..]))
}

pub(crate) fn columns<'a, E>(
    view: ArrayView2<'a, E>,
    start: usize,
    len: usize,
) -> Result<ArrayView2<'a, E>, ModelError> {
    if !in_range(start, len, view.ncols()) {
        return Err(range_error(
            "Backend::columns",
            "columns",
            start,
            len,
            view.ncols(),
        ));
    }
    Ok(view.slice_move(s![.., start..start + len]))
}

pub(crate) fn columns_mut<'a, E>(
    view: ArrayViewMut2<'a, E>,
    start: usize,
    len: usize,
) -> Result<ArrayViewMut2<'a, E>, ModelError> {
    if !in_range(start, len, view.ncols()) {
        return Err(range_error(
            "Backend::columns_mut",
            "columns",
            start,
            len,
            view.ncols(),
        ));
    }
    Ok(view.slice_move(s![.., start..start + len]))
}

/// Checks that two operands have the same shape.
pub(crate) fn same(
    operation: &'static str,
    argument: &'static str,
    expected: (usize, usize),
    actual: (usize, usize),
) -> Result<(), ModelError> {
    check_shape(
        operation,
        argument,
        &[expected.0, expected.1],
        &[actual.0, actual.1],
    )
}

/// Checks that `bias` is a `(1, n)` row for `(·, n)` operands.
pub(crate) fn bias_row<E>(
    operation: &'static str,
    bias: &ArrayView2<'_, E>,
    n: usize,
) -> Result<(), ModelError> {
    check_shape(operation, "bias", &[1, n], bias.shape())
}

/// `op(a)`: `a` itself, or its transpose (a view with the axes swapped, no copy).
pub(crate) fn oriented<'a, E>(
    a: ArrayView2<'a, E>,
    transpose: super::Transpose,
) -> ArrayView2<'a, E> {
    match transpose {
        super::Transpose::No => a,
        super::Transpose::Yes => a.reversed_axes(),
    }
}

/// Checks the operands of `c (+)= op(a)·op(b)`, returning `(m, k, n)`.
pub(crate) fn matmul_dims(
    operation: &'static str,
    a: (usize, usize),
    transpose_a: super::Transpose,
    b: (usize, usize),
    transpose_b: super::Transpose,
    c: (usize, usize),
) -> Result<(usize, usize, usize), ModelError> {
    let flip = |d: (usize, usize), t| {
        if t == super::Transpose::Yes {
            (d.1, d.0)
        } else {
            d
        }
    };
    let (a, b) = (flip(a, transpose_a), flip(b, transpose_b));
    check_shape(operation, "b", &[a.1, c.1], &[b.0, b.1])?;
    check_shape(operation, "c", &[a.0, b.1], &[c.0, c.1])?;
    Ok((a.0, a.1, b.1))
}

/// Checks the operands of an embedding lookup or its backward.
pub(crate) fn embed_dims<E>(
    table: (usize, usize),
    index: &[u32],
    scale: &ArrayView2<'_, E>,
    out: (usize, usize),
) -> Result<(), ModelError> {
    check_shape(
        "Backend::embed",
        "out",
        &[index.len(), table.1],
        &[out.0, out.1],
    )?;
    check_shape("Backend::embed", "scale", &[index.len(), 1], scale.shape())?;
    if let Some(bad) = index.iter().find(|&&i| i as usize >= table.0) {
        return Err(ModelError::InvalidInput {
            operation: "Backend::embed",
            reason: format!(
                "index {bad} is out of range for a table of {} rows",
                table.0
            ),
        });
    }
    Ok(())
}

/// A `(T·B, n)` block seen as the scan's `(T, B·n)` problem (no copy).
fn as_scan<'a, E>(
    block: ArrayView2<'a, E>,
    n_steps: usize,
) -> Result<ArrayView2<'a, E>, ModelError> {
    let n_features = block.len().checked_div(n_steps).unwrap_or(0);
    let dims = block.dim();
    block
        .into_shape_with_order((n_steps, n_features))
        .map_err(|_| not_scannable(dims, n_steps))
}

fn as_scan_mut<'a, E>(
    block: ArrayViewMut2<'a, E>,
    n_steps: usize,
) -> Result<ArrayViewMut2<'a, E>, ModelError> {
    let n_features = block.len().checked_div(n_steps).unwrap_or(0);
    let dims = block.dim();
    block
        .into_shape_with_order((n_steps, n_features))
        .map_err(|_| not_scannable(dims, n_steps))
}

fn as_state<'a, E>(state: ArrayView2<'a, E>) -> Result<ArrayView1<'a, E>, ModelError> {
    let (len, dims) = (state.len(), state.dim());
    state
        .into_shape_with_order(len)
        .map_err(|_| not_scannable(dims, 1))
}

fn as_state_mut<'a, E>(state: ArrayViewMut2<'a, E>) -> Result<ArrayViewMut1<'a, E>, ModelError> {
    let (len, dims) = (state.len(), state.dim());
    state
        .into_shape_with_order(len)
        .map_err(|_| not_scannable(dims, 1))
}

fn not_scannable(dims: (usize, usize), n_steps: usize) -> ModelError {
    ModelError::InvalidInput {
        operation: "Backend::scan",
        reason: format!(
            "a {dims:?} block is not a contiguous sequence of {n_steps} steps of equal size"
        ),
    }
}

/// The forward recurrence over contiguous `(T·B, n)` blocks on `scan`.
pub(crate) fn scan_forward<E: Real>(
    scan: &dyn LinearScan<E>,
    n_steps: usize,
    decay: ArrayView2<'_, E>,
    impulse: ArrayView2<'_, E>,
    ends: ScanEnds<ArrayView2<'_, E>>,
    state: ArrayViewMut2<'_, E>,
) -> Result<(), ModelError> {
    super::check_scan_views("Backend::scan", n_steps, decay, impulse, ends, &state)?;
    let (mut state, initial) = (state, ends.initial);
    let initial = initial.as_ref().map(|v| as_state(v.view())).transpose()?;
    scan.forward_into(
        ForwardInputs {
            decay: as_scan(decay.view(), n_steps)?,
            impulse: as_scan(impulse.view(), n_steps)?,
            initial,
            direction: Direction::Forward,
        },
        as_scan_mut(state.view_mut(), n_steps)?,
    )?;
    Ok(())
}

/// The backward pass of [`scan_forward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan_backward<E: Real>(
    scan: &dyn LinearScan<E>,
    n_steps: usize,
    decay: ArrayView2<'_, E>,
    state: ArrayView2<'_, E>,
    ends: ScanEnds<ArrayView2<'_, E>>,
    grad_state: ArrayView2<'_, E>,
    grad_decay: ArrayViewMut2<'_, E>,
    grad_impulse: ArrayViewMut2<'_, E>,
    grad_initial: Option<ArrayViewMut2<'_, E>>,
) -> Result<(), ModelError> {
    super::check_scan_backward_views(
        "Backend::scan_backward",
        n_steps,
        decay,
        state,
        ends,
        grad_state,
        &grad_decay,
        &grad_impulse,
        grad_initial.as_ref(),
    )?;
    let (mut grad_decay, mut grad_impulse, mut grad_initial) =
        (grad_decay, grad_impulse, grad_initial);
    let (initial, grad_last) = (ends.initial, ends.grad_last);
    scan.backward_into(
        BackwardInputs {
            decay: as_scan(decay.view(), n_steps)?,
            state: as_scan(state.view(), n_steps)?,
            initial: initial.as_ref().map(|v| as_state(v.view())).transpose()?,
            grad_state: as_scan(grad_state.view(), n_steps)?,
            grad_last: grad_last.as_ref().map(|v| as_state(v.view())).transpose()?,
            direction: Direction::Forward,
        },
        BackwardOutputs {
            grad_decay: as_scan_mut(grad_decay.view_mut(), n_steps)?,
            grad_impulse: as_scan_mut(grad_impulse.view_mut(), n_steps)?,
            grad_initial: grad_initial
                .as_mut()
                .map(|v| as_state_mut(v.view_mut()))
                .transpose()?,
        },
    )?;
    Ok(())
}

/// The storage, view, host and copy methods of a backend whose matrices are ndarray
/// `Array2`s in host memory.
macro_rules! host_storage {
    () => {
        type Matrix = ndarray::Array2<E>;
        type View<'a> = ndarray::ArrayView2<'a, E>;
        type ViewMut<'a> = ndarray::ArrayViewMut2<'a, E>;

        fn view<'a>(&self, matrix: &'a Self::Matrix) -> Self::View<'a> {
            matrix.view()
        }

        fn view_mut<'a>(&self, matrix: &'a mut Self::Matrix) -> Self::ViewMut<'a> {
            matrix.view_mut()
        }

        fn reborrow<'b>(&self, view: &'b mut Self::ViewMut<'_>) -> Self::ViewMut<'b> {
            view.view_mut()
        }

        fn shorten<'b>(&self, view: &'b Self::View<'_>) -> Self::View<'b> {
            view.view()
        }

        fn dims(&self, view: Self::View<'_>) -> (usize, usize) {
            view.dim()
        }

        fn matrix_dims(&self, matrix: &Self::Matrix) -> (usize, usize) {
            matrix.dim()
        }

        fn rows<'a>(
            &self,
            view: Self::View<'a>,
            start: usize,
            len: usize,
        ) -> Result<Self::View<'a>, ModelError> {
            super::host::rows(view, start, len)
        }

        fn rows_mut<'a>(
            &self,
            view: Self::ViewMut<'a>,
            start: usize,
            len: usize,
        ) -> Result<Self::ViewMut<'a>, ModelError> {
            super::host::rows_mut(view, start, len)
        }

        fn columns<'a>(
            &self,
            view: Self::View<'a>,
            start: usize,
            len: usize,
        ) -> Result<Self::View<'a>, ModelError> {
            super::host::columns(view, start, len)
        }

        fn columns_mut<'a>(
            &self,
            view: Self::ViewMut<'a>,
            start: usize,
            len: usize,
        ) -> Result<Self::ViewMut<'a>, ModelError> {
            super::host::columns_mut(view, start, len)
        }

        fn host<'a>(&self, array: ndarray::ArrayView2<'a, E>) -> Self::View<'a> {
            array
        }

        fn host_mut<'a>(&self, array: ndarray::ArrayViewMut2<'a, E>) -> Self::ViewMut<'a> {
            array
        }

        fn upload(&self, array: ndarray::Array2<E>) -> Self::Matrix {
            array
        }

        fn download(&self, view: Self::View<'_>) -> ndarray::Array2<E> {
            view.to_owned()
        }

        fn copy(&self, src: Self::View<'_>, mut dst: Self::ViewMut<'_>) -> Result<(), ModelError> {
            super::host::same("Backend::copy", "src", dst.dim(), src.dim())?;
            dst.assign(&src);
            Ok(())
        }

        fn add_assign(
            &self,
            src: Self::View<'_>,
            mut dst: Self::ViewMut<'_>,
        ) -> Result<(), ModelError> {
            super::host::same("Backend::add_assign", "src", dst.dim(), src.dim())?;
            self.serial(|| dst.zip_mut_with(&src, |d, &s| *d = *d + s));
            Ok(())
        }

        fn scan(
            &self,
            n_steps: usize,
            decay: Self::View<'_>,
            impulse: Self::View<'_>,
            ends: super::ScanEnds<Self::View<'_>>,
            state: Self::ViewMut<'_>,
        ) -> Result<(), ModelError> {
            self.on_pool(|| {
                super::host::scan_forward(self.linear_scan(), n_steps, decay, impulse, ends, state)
            })
        }

        fn scan_backward(
            &self,
            n_steps: usize,
            decay: Self::View<'_>,
            state: Self::View<'_>,
            ends: super::ScanEnds<Self::View<'_>>,
            grad_state: Self::View<'_>,
            grad_decay: Self::ViewMut<'_>,
            grad_impulse: Self::ViewMut<'_>,
            grad_initial: Option<Self::ViewMut<'_>>,
        ) -> Result<(), ModelError> {
            self.on_pool(|| {
                super::host::scan_backward(
                    self.linear_scan(),
                    n_steps,
                    decay,
                    state,
                    ends,
                    grad_state,
                    grad_decay,
                    grad_impulse,
                    grad_initial,
                )
            })
        }

        fn fill_rows(
            &self,
            row: Self::View<'_>,
            mut dst: Self::ViewMut<'_>,
        ) -> Result<(), ModelError> {
            super::host::bias_row("Backend::fill_rows", &row, dst.ncols())?;
            let row = row.row(0);
            for mut target in dst.rows_mut() {
                target.assign(&row);
            }
            Ok(())
        }
    };
}
pub(crate) use host_storage;
