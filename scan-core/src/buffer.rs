//! Buffers sized by the caller's arrays, allocated fallibly: a size that overflows `usize`
//! or that the allocator refuses is a [`ScanError::AllocationFailed`], never a panic or an
//! abort (a broadcast view can describe far more elements than memory holds).

use ndarray::Array2;

use crate::ScanError;

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1_usize, |n, &d| n.checked_mul(d))
}

fn allocation_failed<E>(
    operation: &'static str,
    buffer: &'static str,
    shape: &[usize],
) -> ScanError {
    ScanError::AllocationFailed {
        operation,
        buffer,
        shape: shape.to_vec(),
        bytes: element_count(shape).and_then(|n| n.checked_mul(std::mem::size_of::<E>())),
    }
}

/// Collects `values`, the elements of an array of `shape`, into memory reserved up front.
pub(crate) fn try_collect<E>(
    operation: &'static str,
    buffer: &'static str,
    shape: &[usize],
    values: impl IntoIterator<Item = E>,
) -> Result<Vec<E>, ScanError> {
    let failed = || allocation_failed::<E>(operation, buffer, shape);
    let len = element_count(shape).ok_or_else(failed)?;
    let mut collected = Vec::new();
    collected.try_reserve_exact(len).map_err(|_| failed())?;
    collected.extend(values);
    Ok(collected)
}

/// A (rows, columns) array of `values` in row-major order, allocated as by [`try_collect`].
pub(crate) fn try_array_2d<E>(
    operation: &'static str,
    buffer: &'static str,
    dim: (usize, usize),
    values: impl IntoIterator<Item = E>,
) -> Result<Array2<E>, ScanError> {
    let collected = try_collect(operation, buffer, &[dim.0, dim.1], values)?;
    Array2::from_shape_vec(dim, collected)
        .map_err(|_| allocation_failed::<E>(operation, buffer, &[dim.0, dim.1]))
}
