//! Shared by the product examples (`gemm_pick`, `thin_products`): operands and a plain
//! call of the `gemm` crate.

use gemm::Parallelism;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// Deterministic values in [−1, 1).
pub fn filled(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    Array2::from_shape_simple_fn((rows, cols), || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1_u64 << 23) as f32 - 1.0
    })
}

/// `c (+)= a·b` with the `gemm` crate, on the calling thread or split over rayon's pool.
pub fn gemm_product(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    mut c: ArrayViewMut2<'_, f32>,
    accumulate: bool,
    parallelism: Parallelism,
) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert!(b.nrows() == k && c.dim() == (m, n));
    let (sa, sb, sc) = (a.strides(), b.strides(), c.strides());
    let (sc_row, sc_col) = (sc[0], sc[1]);
    let dst = c.as_mut_ptr();
    // SAFETY: shapes checked above, so every index gemm touches lies inside the views,
    // which ndarray keeps valid for their shapes and strides; `c` is a unique borrow.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            sc_col,
            sc_row,
            accumulate,
            a.as_ptr(),
            sa[1],
            sa[0],
            b.as_ptr(),
            sb[1],
            sb[0],
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
