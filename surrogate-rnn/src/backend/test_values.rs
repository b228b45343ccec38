//! Operands for the product kernels' unit tests.

use ndarray::Array2;

use crate::Real;

/// Deterministic values in [−1, 1], different per `seed`.
pub(super) fn filled<E: Real>(rows: usize, cols: usize, seed: u64) -> Array2<E> {
    Array2::from_shape_fn((rows, cols), |(r, j)| {
        let x = (r as u64 * 31 + j as u64 * 17 + seed * 7) % 23;
        E::from_f64(x as f64 / 11.0 - 1.0)
    })
}
