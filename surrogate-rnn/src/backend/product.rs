//! Matrix products of the CPU backend, `c = a·b` or `c += a·b` on ndarray views.
//!
//! Three routes, chosen with `examples/gemm_pick.rs` at the layers' shapes (products with
//! two short sides take `super::thin` instead):
//!
//! * [`gemm`]: the `gemm` crate (packed micro-kernels, AVX-512/AVX2/FMA chosen at run
//!   time), for every product the other routes do not take;
//! * [`gemm_split_k`]: a weight gradient with a small result over a long inner dimension
//!   ([`k_parts`]), as the sum of `gemm` products over parts of `k`, one per thread;
//! * [`few_rows`]: products whose result has at most [`FEW_ROWS`] rows and whose right
//!   operand has contiguous rows (a dense head on the last step), streamed straight from
//!   the weight's own layout: a packing library copies the whole weight into its packed
//!   layout on every call, which costs more than the product when `B` is small. (The
//!   LSTM's per-step products go through [`super::packed`] instead: the weight packed
//!   once per pass.)
//!   Each element of `c` is one FMA chain over `k` in a fixed order, so results do not
//!   depend on how the columns are split over threads. (A dot-product kernel for a
//!   transposed right operand, the LSTM's backward step, was slower than `gemm` at
//!   `n = 64` and is not used.)

use gemm::Parallelism;
use ndarray::parallel::prelude::*;
use ndarray::{s, ArrayView2, ArrayViewMut2, Axis};

use crate::Real;

/// The largest result row count that [`few_rows`] takes.
pub(super) const FEW_ROWS: usize = 16;

/// `c = a·b`, or `c += a·b` when `accumulate`, through the `gemm` crate, for operands of
/// matching shapes with any strides (a transpose is swapped strides).
///
/// # Panics
/// When the shapes do not match (a caller bug: `host::matmul_dims` checks them first).
#[track_caller]
#[allow(unsafe_code)]
pub(super) fn gemm<E: Real>(
    a: ArrayView2<'_, E>,
    b: ArrayView2<'_, E>,
    mut c: ArrayViewMut2<'_, E>,
    accumulate: bool,
    parallelism: Parallelism,
) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert!(
        b.nrows() == k && c.dim() == (m, n),
        "product operands do not fit"
    );
    let (sa, sb, sc) = (a.strides(), b.strides(), c.strides());
    let (sc_row, sc_col) = (sc[0], sc[1]);
    let dst = c.as_mut_ptr();
    // SAFETY: the shapes were checked above, so every index gemm touches, `(i, p)` of `a`,
    // `(p, j)` of `b` and `(i, j)` of `c` with `i < m`, `p < k`, `j < n`, lies inside the
    // views, which ndarray guarantees are valid for their shapes and strides (a view of no
    // elements is never read or written). `c` is a mutable borrow, so it aliases neither
    // `a` nor `b` and nothing else reads or writes it during the call. `E` is `f32` or
    // `f64` (`scan_core::Element` is sealed to them), the types gemm computes with.
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
            E::one(),
            E::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Inner-dimension rows per part of a product split over `k` ([`k_parts`]), at most
/// (unless `k` exceeds `MAX_K_PARTS·K_PART`).
const K_PART: usize = 8192;

/// The most parts [`k_parts`] splits `k` into: the partial results take `parts·m·n`
/// elements of scratch, so that stays at most 16 results' worth however long `k` is.
const MAX_K_PARTS: usize = 16;

/// The largest result (`m·n` elements) that [`k_parts`] splits over `k`.
const K_SPLIT_MAX_RESULT: usize = 512 * 512;

/// How many parts to split `(m, k)·(k, n)` into over `k`, for a product whose result is
/// small next to its inner dimension: a weight gradient over all steps, `Xᵀ·∂P` with
/// `k = T·B`, which the `gemm` crate splits over the result only and runs at half its
/// rate or less (`128 × 65536 × 64`: 90 GFLOP/s against 210 for the forward product of the
/// same layer). Depends on the shape only, so results do not depend on the thread count.
pub(super) fn k_parts(m: usize, k: usize, n: usize) -> Option<usize> {
    let small = m.saturating_mul(n) <= K_SPLIT_MAX_RESULT;
    let long = k >= 2 * K_PART && k >= m.max(n).saturating_mul(16);
    (small && long).then(|| k.div_ceil(K_PART).min(MAX_K_PARTS))
}

/// `c = a·b`, or `c += a·b` when `accumulate`, as the sum in order of the products over
/// `parts` equal parts of `k`, each computed on one thread of the current rayon pool into
/// its `(m, n)` block of `partials` (`(parts·m, n)`, any contents).
///
/// # Panics
/// When the shapes do not match or `parts` is 0 (a caller bug).
#[track_caller]
pub(super) fn gemm_split_k<E: Real>(
    a: ArrayView2<'_, E>,
    b: ArrayView2<'_, E>,
    mut c: ArrayViewMut2<'_, E>,
    accumulate: bool,
    parts: usize,
    mut partials: ArrayViewMut2<'_, E>,
) {
    let (m, k) = a.dim();
    let fits = b.nrows() == k
        && c.dim() == (m, b.ncols())
        && parts > 0
        && parts.checked_mul(m) == Some(partials.nrows())
        && partials.ncols() == c.ncols();
    assert!(fits, "product operands do not fit");
    if !accumulate {
        c.fill(E::zero());
    }
    if c.is_empty() {
        return;
    }
    let bound = |i: usize| part_bound(k, parts, i);
    partials
        .axis_chunks_iter_mut(Axis(0), m)
        .into_par_iter()
        .enumerate()
        .for_each(|(i, part)| {
            let rows = bound(i)..bound(i + 1);
            let (a_part, b_part) = (a.slice(s![.., rows.clone()]), b.slice(s![rows, ..]));
            gemm(a_part, b_part, part, false, Parallelism::None);
        });
    for part in partials.axis_chunks_iter(Axis(0), m) {
        c.zip_mut_with(&part, |x, &y| *x = *x + y);
    }
}

/// Where part `i` of `0..k` cut into `parts` nearly equal parts (the first `k % parts` one
/// longer) starts; part `parts` starts at `k`. `parts ≥ 1`.
pub(super) fn part_bound(k: usize, parts: usize, i: usize) -> usize {
    k / parts * i + (k % parts).min(i)
}

fn contiguous_rows<E>(view: &ArrayView2<'_, E>) -> bool {
    view.nrows() == 0 || view.row(0).as_slice().is_some()
}

/// `c (+)= a·b` for a `c` of at most [`FEW_ROWS`] contiguous rows and a `b` with
/// contiguous rows, split over the columns of `c` on the current rayon pool when
/// `parallel`. Returns `false`, touching nothing, when the operands do not have that form
/// or the CPU has no FMA (the caller then uses [`gemm`]). Shapes must match (checked by
/// the caller).
pub(super) fn few_rows<E: Real>(
    a: ArrayView2<'_, E>,
    b: ArrayView2<'_, E>,
    mut c: ArrayViewMut2<'_, E>,
    accumulate: bool,
    parallel: bool,
) -> bool {
    if c.nrows() > FEW_ROWS || !kernels::available() || !contiguous_rows(&b) {
        return false;
    }
    let c_rows = c.nrows() == 0 || c.row_mut(0).as_slice_mut().is_some();
    let fits = a.nrows() == c.nrows() && b.nrows() == a.ncols() && b.ncols() == c.ncols();
    if !c_rows || !fits {
        return false;
    }
    if !accumulate {
        c.fill(E::zero());
    }
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    split_columns(a, b, c, threads);
    true
}

/// Splits the columns of `b` and `c` into `parts` blocks (multiples of 64 columns) and
/// runs them with `rayon::join`.
fn split_columns<E: Real>(
    a: ArrayView2<'_, E>,
    b: ArrayView2<'_, E>,
    c: ArrayViewMut2<'_, E>,
    parts: usize,
) {
    let n = c.ncols();
    let half = (n / parts.max(1) * (parts / 2)).next_multiple_of(64);
    if parts < 2 || half == 0 || half >= n {
        kernels::run(a, b, c);
        return;
    }
    let (b_left, b_right) = b.split_at(Axis(1), half);
    let (c_left, c_right) = c.split_at(Axis(1), half);
    let left_parts = parts / 2;
    rayon::join(
        || split_columns(a, b_left, c_left, left_parts),
        || split_columns(a, b_right, c_right, parts - left_parts),
    );
}

/// Columns of `c` (and `b`) done per block: a block of `c` (`FEW_ROWS` rows at most) stays
/// in the L1 cache while `b`'s rows stream past.
const BLOCK: usize = 512;

/// `c[r, ·] += Σ_p a[r, p]·b[p, ·]`, `p` in increasing order, four rows of `b` per pass over
/// `c` (each element one FMA chain).
#[inline(always)]
fn by_rows<E: Real>(a: ArrayView2<'_, E>, b: ArrayView2<'_, E>, mut c: ArrayViewMut2<'_, E>) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    // The rows of `c` as slices, taken once (`few_rows` checked that they are contiguous).
    let mut rows: [&mut [E]; FEW_ROWS] = Default::default();
    for (slot, row) in rows.iter_mut().zip(c.rows_mut()) {
        *slot = row.into_slice().unwrap_or_default();
    }
    let rows = &mut rows[..m];
    for j0 in (0..n).step_by(BLOCK) {
        let j1 = (j0 + BLOCK).min(n);
        let row_of_b = |p: usize| b.row(p).to_slice().unwrap_or_default().get(j0..j1);
        let mut p = 0;
        while p + 4 <= k {
            let (Some(b0), Some(b1), Some(b2), Some(b3)) = (
                row_of_b(p),
                row_of_b(p + 1),
                row_of_b(p + 2),
                row_of_b(p + 3),
            ) else {
                return;
            };
            for (r, row) in rows.iter_mut().enumerate() {
                let s = [a[[r, p]], a[[r, p + 1]], a[[r, p + 2]], a[[r, p + 3]]];
                let out = row.get_mut(j0..j1).unwrap_or_default();
                for ((((x, &u0), &u1), &u2), &u3) in out.iter_mut().zip(b0).zip(b1).zip(b2).zip(b3)
                {
                    *x = s[3].mul_add(u3, s[2].mul_add(u2, s[1].mul_add(u1, s[0].mul_add(u0, *x))));
                }
            }
            p += 4;
        }
        for p in p..k {
            let Some(b0) = row_of_b(p) else { return };
            for (r, row) in rows.iter_mut().enumerate() {
                let s = a[[r, p]];
                let out = row.get_mut(j0..j1).unwrap_or_default();
                for (x, &u) in out.iter_mut().zip(b0) {
                    *x = s.mul_add(u, *x);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod kernels {
    //! [`by_rows`] compiled for AVX-512 and for AVX2 (both with FMA), picked at run time.

    use ndarray::{ArrayView2, ArrayViewMut2};

    use super::by_rows;
    use crate::backend::isa::{self, Isa};
    use crate::Real;

    /// Whether this CPU runs the kernel (FMA with AVX2 or AVX-512; without FMA, `mul_add`
    /// would be a library call).
    pub(super) fn available() -> bool {
        isa::widest() != Isa::None
    }

    #[target_feature(enable = "avx512f,fma")]
    fn avx512<E: Real>(a: ArrayView2<'_, E>, b: ArrayView2<'_, E>, c: ArrayViewMut2<'_, E>) {
        by_rows(a, b, c)
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2<E: Real>(a: ArrayView2<'_, E>, b: ArrayView2<'_, E>, c: ArrayViewMut2<'_, E>) {
        by_rows(a, b, c)
    }

    /// Runs the kernel compiled for this CPU's widest instruction set.
    pub(super) fn run<E: Real>(
        a: ArrayView2<'_, E>,
        b: ArrayView2<'_, E>,
        c: ArrayViewMut2<'_, E>,
    ) {
        match isa::widest() {
            // SAFETY: `widest()` found AVX-512F and FMA on this CPU, all that `avx512` enables.
            Isa::Avx512 => unsafe { avx512(a, b, c) },
            // SAFETY: `widest()` found AVX2 and FMA on this CPU, all that `avx2` enables.
            Isa::Avx2 => unsafe { avx2(a, b, c) },
            Isa::None => by_rows(a, b, c),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernels {
    //! Elsewhere every product goes through the `gemm` crate.

    use ndarray::{ArrayView2, ArrayViewMut2};

    use crate::Real;

    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn run<E: Real>(
        a: ArrayView2<'_, E>,
        b: ArrayView2<'_, E>,
        c: ArrayViewMut2<'_, E>,
    ) {
        super::by_rows(a, b, c)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{s, Array2};
    use proptest::prelude::*;

    use super::*;
    use crate::backend::test_values::filled;

    /// `c + a·b` by plain loops in `f64`.
    fn expected(a: &Array2<f64>, b: ArrayView2<'_, f64>, c: &Array2<f64>) -> Array2<f64> {
        let mut out = c.clone();
        for ((r, j), x) in out.indexed_iter_mut() {
            *x += (0..a.ncols()).map(|p| a[[r, p]] * b[[p, j]]).sum::<f64>();
        }
        out
    }

    proptest! {
        /// With and without accumulation, on one thread and split, from a `b` that is a
        /// column block of a wider matrix or not: the few-rows kernel gives the plain
        /// product (to rounding), for sizes that are not multiples of any block.
        #[test]
        fn few_rows_is_the_plain_product(
            m in 0..=FEW_ROWS,
            k in 0_usize..150,
            n in 0_usize..700,
            block in any::<bool>(),
            accumulate in any::<bool>(),
            parallel in any::<bool>(),
        ) {
            let a = filled::<f64>(m, k, 1);
            let stored = filled::<f64>(k, n + 3, 2);
            let b = if block { stored.slice(s![.., 1..n + 1]) } else { stored.slice(s![.., ..n]) };
            let start = filled::<f64>(m, n, 3);
            let mut c = start.clone();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            let done = pool.install(|| few_rows(a.view(), b, c.view_mut(), accumulate, parallel));
            prop_assert_eq!(done, kernels::available());
            if done {
                let base = if accumulate { start } else { Array2::zeros((m, n)) };
                let want = expected(&a, b, &base);
                for (x, y) in c.iter().zip(&want) {
                    prop_assert!((x - y).abs() <= 1e-12 * (1.0 + k as f64), "{x} vs {y}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// A product split over `k` is the plain product (to rounding), with or without
        /// accumulation, from transposed operands, and bit for bit the same on one thread
        /// as on two.
        #[test]
        fn a_product_split_over_k_is_the_plain_product(
            m in 0_usize..6,
            n in 0_usize..7,
            k in 2 * K_PART..3 * K_PART + 100,
            accumulate in any::<bool>(),
        ) {
            let parts = k_parts(m.max(1), k, n.max(1)).unwrap();
            prop_assert_eq!(parts, k.div_ceil(K_PART));
            let stored_a = filled::<f64>(k, m, 1);
            let b = filled::<f64>(k, n, 2);
            let start = filled::<f64>(m, n, 3);
            let run = |threads: usize| {
                let mut c = start.clone();
                let mut partials = Array2::from_elem((parts * m, n), f64::NAN);
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let (a, c, p) = (stored_a.t(), c.view_mut(), partials.view_mut());
                    gemm_split_k(a, b.view(), c, accumulate, parts, p)
                });
                c
            };
            let (one, two) = (run(1), run(2));
            prop_assert_eq!(&one, &two);
            let base = if accumulate { start } else { Array2::zeros((m, n)) };
            let want = expected(&stored_a.t().to_owned(), b.view(), &base);
            for (x, y) in two.iter().zip(&want) {
                prop_assert!((x - y).abs() <= 1e-9 * k as f64, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn only_small_results_of_long_inner_dimensions_are_split_over_k() {
        assert_eq!(k_parts(128, 65536, 64), Some(8));
        assert_eq!(k_parts(512, 8192, 512), None);
        assert_eq!(k_parts(64, 2 * K_PART - 1, 64), None);
        assert_eq!(k_parts(1024, 65536, 512), None);
        assert_eq!(k_parts(8, 4 * K_PART, 4 * K_PART), None);
        // However long `k` is, the scratch stays at MAX_K_PARTS results.
        assert_eq!(k_parts(512, 1 << 24, 512), Some(MAX_K_PARTS));
        assert_eq!(k_parts(usize::MAX, usize::MAX, 2), None);
    }

    #[test]
    fn other_layouts_are_left_to_gemm() {
        let a = filled::<f64>(4, 8, 1);
        let b = filled::<f64>(16, 8, 2);
        let mut c = Array2::zeros((4, 16));
        assert!(c.row_mut(0).as_slice_mut().is_some());
        // `b` transposed (contiguous columns), then with strided rows.
        assert!(!few_rows(a.view(), b.t(), c.view_mut(), false, false));
        let wide = filled::<f64>(8, 32, 2);
        let strided = wide.slice(s![.., ..;2]);
        assert!(!few_rows(a.view(), strided, c.view_mut(), false, false));
        // A result with more than FEW_ROWS rows.
        let tall = filled::<f64>(FEW_ROWS + 1, 8, 1);
        let mut c_tall = Array2::zeros((FEW_ROWS + 1, 16));
        assert!(!few_rows(
            tall.view(),
            b.t(),
            c_tall.view_mut(),
            false,
            false
        ));
        assert!(c.iter().chain(&c_tall).all(|&x| x == 0.0));
    }
}
