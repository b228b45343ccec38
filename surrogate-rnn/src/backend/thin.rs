//! Products with two short sides, streamed from memory: `(rows, k)·(k, n)` with `k` and
//! `n` of a few units (a layer of a few hidden units projecting every step: Table 3 at
//! n = 2²⁰ runs 1 × 4), and their weight gradients `(rows, m)ᵀ·(rows, n)`; also tall
//! products on a few inputs with many columns (`k ≤ 8`, `n ≥ 64`: Table 2's first layer),
//! where a general kernel does `k` multiply-adds per value it writes.
//!
//! Such a product reads and writes a handful of values per row; packing them for a
//! general kernel's tiles, as the `gemm` crate does on every call, costs more than the
//! arithmetic. Here each row is one short loop over the contiguous operands, compiled
//! for the CPU's widest vector instructions (`isa::vectorized`), and the products run at
//! the rate memory delivers the rows (see `examples/thin_products.rs`).
//!
//! Every sum runs in an order fixed by the shape, without fused multiply-adds (a tall
//! product's over `k` in increasing order; a long inner dimension's in blocks of
//! [`SUM_BLOCK`] rows, then parts, each added in order), so the results are the same for
//! any thread count and instruction set.

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use super::isa::{vectorized, Isa};
use super::product;
use super::rowwise::for_row_blocks;
use crate::Real;

/// The longest short side: products whose `k` and `n` (or `m` and `n`, for a long inner
/// dimension) are at most this go through this module. Chosen with
/// `examples/thin_products.rs` (idle Xeon, AVX-512, 2²⁰ and 2¹⁸ rows): the `gemm` crate was
/// as fast or faster from 16 on.
pub(super) const THIN: usize = 8;

/// The most values of `b` a [`Thin::Tall`] product takes (`k·n`): `(rows, 8)·(8, 8)` ran
/// at the `gemm` crate's time, `(rows, 4)·(4, 8)` and `(rows, 8)·(8, 4)` at half of it.
const TALL_MAX_WEIGHTS: usize = 32;

/// The fewest columns of a wide [`Thin::Tall`] product: `(rows, k)·(k, n)` with `k ≤ THIN`
/// and `n` at least this (a layer projecting a few inputs, Table 2's first layer at
/// `k = 4`), where the `gemm` crate's tiles do `k` multiply-adds per value they write.
const WIDE_MIN_COLUMNS: usize = 64;

/// The shortest inner dimension that [`Thin::LongInner`] takes: below it the product is
/// small whatever its route.
const LONG_MIN: usize = 1024;

/// Inner-dimension rows per part of a [`Thin::LongInner`] product, at most (unless `k`
/// exceeds `MAX_LONG_PARTS·LONG_PART`).
const LONG_PART: usize = 8192;

/// The most parts a [`Thin::LongInner`] product is cut into (its scratch is that many
/// `(m, n)` results).
const MAX_LONG_PARTS: usize = 64;

/// Which thin product an operand triple is, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Thin {
    /// `c (+)= a·b` for `k ≤ THIN` and `n ≤ THIN` (with `k·n ≤ TALL_MAX_WEIGHTS`) or
    /// `n ≥ WIDE_MIN_COLUMNS`, `a` and `c` in standard layout (`b` is copied).
    Tall,
    /// `c (+)= a·b` for `m, n ≤ THIN` and a long `k`, `a` a transpose of a matrix in
    /// standard layout (a weight gradient `Xᵀ·∂P`) and `b` in standard layout, cut into
    /// `parts` parts of `k` whose `(m, n)` results are summed in order.
    LongInner { parts: usize },
}

impl Thin {
    /// The thin product `c (+)= a·b` is, or `None` (shapes must fit, checked by the caller).
    pub(super) fn of<E>(a: &ArrayView2<'_, E>, b: &ArrayView2<'_, E>) -> Option<Self> {
        let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
        let narrow = n <= THIN && k * n <= TALL_MAX_WEIGHTS;
        if k <= THIN && (narrow || n >= WIDE_MIN_COLUMNS) && a.is_standard_layout() {
            return Some(Thin::Tall);
        }
        let long = m <= THIN && n <= THIN && k >= LONG_MIN;
        if long && a.t().is_standard_layout() && b.is_standard_layout() {
            let parts = k.div_ceil(LONG_PART).min(MAX_LONG_PARTS);
            return Some(Thin::LongInner { parts });
        }
        None
    }
}

/// `c = a·b`, or `c += a·b` when `accumulate`, for a [`Thin::Tall`] product: blocks of at
/// least `min_rows` rows on rayon's current pool. Returns `false`, touching nothing, when
/// the operands do not have that form or do not fit together (the caller then uses
/// another route).
pub(super) fn tall<E: Real>(
    isa: Isa,
    a: ArrayView2<'_, E>,
    b: ArrayView2<'_, E>,
    c: ArrayViewMut2<'_, E>,
    accumulate: bool,
    min_rows: usize,
) -> bool {
    let (k, n) = b.dim();
    let fits = a.ncols() == k && c.dim() == (a.nrows(), n) && k <= THIN;
    if !fits || !c.is_standard_layout() || !a.is_standard_layout() {
        return false;
    }
    let mut c = c;
    if k == 0 || n == 0 {
        if !accumulate {
            c.fill(E::zero());
        }
        return true;
    }
    // `b` row-major, whatever its strides (at most `THIN·n` values).
    let weights: Vec<E> = b.iter().copied().collect();
    for_row_blocks((a, c), min_rows, &|(a, mut c): (ArrayView2<'_, E>, _)| {
        if let (Some(a), Some(c)) = (a.to_slice(), c.as_slice_mut()) {
            tall_rows(isa, a, &weights, c, k, n, accumulate);
        }
    });
    true
}

vectorized! {
    /// `c_r (+)= a_r·b` for every row `r` of `a` (`k` values each) and `c` (`n` each),
    /// `b` a row-major `(k, n)` slice; `k, n ≥ 1`.
    fn tall_rows(a: &[E], b: &[E], c: &mut [E], k: usize, n: usize, accumulate: bool) {
        for (a_row, c_row) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
            let mut j = 0;
            j = column_blocks::<E, 32>(a_row, b, n, j, c_row, accumulate);
            j = column_blocks::<E, 16>(a_row, b, n, j, c_row, accumulate);
            j = column_blocks::<E, 8>(a_row, b, n, j, c_row, accumulate);
            j = column_blocks::<E, 4>(a_row, b, n, j, c_row, accumulate);
            column_blocks::<E, 1>(a_row, b, n, j, c_row, accumulate);
        }
    }
}

/// One row of a tall product in blocks of `W` columns from column `j` while they fit;
/// returns where the next block starts.
#[inline(always)]
fn column_blocks<E: Real, const W: usize>(
    a_row: &[E],
    b: &[E],
    n: usize,
    mut j: usize,
    c_row: &mut [E],
    accumulate: bool,
) -> usize {
    while j + W <= n {
        row_columns::<E, W>(a_row, b, n, j, c_row, accumulate);
        j += W;
    }
    j
}

/// Columns `j..j + W` of one row of a tall product: `c (+)= Σ_p a_p·b[p, j..j + W]`,
/// `p` in increasing order.
#[inline(always)]
fn row_columns<E: Real, const W: usize>(
    a_row: &[E],
    b: &[E],
    n: usize,
    j: usize,
    c_row: &mut [E],
    accumulate: bool,
) {
    let Some(Ok(out)) = c_row.get_mut(j..j + W).map(<&mut [E; W]>::try_from) else {
        return;
    };
    let mut sum = if accumulate { *out } else { [E::zero(); W] };
    for (p, &x) in a_row.iter().enumerate() {
        let start = p * n + j;
        let Some(Ok(b_p)) = b.get(start..start + W).map(<&[E; W]>::try_from) else {
            return;
        };
        for (s, &v) in sum.iter_mut().zip(b_p) {
            *s = *s + x * v;
        }
    }
    *out = sum;
}

/// `c = a·b`, or `c += a·b` when `accumulate`, for a [`Thin::LongInner`] product: `k` cut
/// into as many parts as `partials` (`(parts·m, n)` in standard layout, any contents) has
/// `(m, n)` blocks, each part on rayon's current pool (when `parallel`) into its block,
/// then the blocks added to `c` in order. Returns `false`, touching nothing, when the
/// operands do not have that form or do not fit together.
pub(super) fn long_inner<E: Real>(
    isa: Isa,
    a: ArrayView2<'_, E>,
    b: ArrayView2<'_, E>,
    mut c: ArrayViewMut2<'_, E>,
    accumulate: bool,
    partials: ArrayViewMut2<'_, E>,
    parallel: bool,
) -> bool {
    let ((m, k), n) = (a.dim(), b.ncols());
    let parts = partials.nrows().checked_div(m).unwrap_or(1);
    let (a_t, mut partials) = (a.reversed_axes(), partials);
    let fits = m <= THIN
        && n <= THIN
        && b.nrows() == k
        && c.dim() == (m, n)
        && parts > 0
        && a_t.is_standard_layout()
        && b.is_standard_layout()
        && parts.checked_mul(m) == Some(partials.nrows())
        && partials.ncols() == n
        && partials.is_standard_layout();
    let (Some(a_t), Some(b)) = (a_t.to_slice(), b.to_slice()) else {
        return false;
    };
    if !fits {
        return false;
    }
    if !accumulate {
        c.fill(E::zero());
    }
    if m == 0 || n == 0 || k == 0 {
        return true;
    }
    let bound = |i: usize| product::part_bound(k, parts, i);
    let part = |(i, mut sums): (usize, ArrayViewMut2<'_, E>)| {
        let rows = bound(i)..bound(i + 1);
        let (a_part, b_part) = (
            &a_t[rows.start * m..rows.end * m],
            &b[rows.start * n..rows.end * n],
        );
        if let Some(sums) = sums.as_slice_mut() {
            sums.fill(E::zero());
            outer_sums(isa, a_part, b_part, sums, m, n);
        }
    };
    let blocks = partials.axis_chunks_iter_mut(Axis(0), m).enumerate();
    if parallel {
        use rayon::prelude::*;
        blocks.collect::<Vec<_>>().into_par_iter().for_each(part);
    } else {
        blocks.for_each(part);
    }
    for sums in partials.axis_chunks_iter(Axis(0), m) {
        c.zip_mut_with(&sums, |x, &y| *x = *x + y);
    }
    true
}

/// Rows of a [`Thin::LongInner`] part summed in registers before they are added to the
/// part's sums.
const SUM_BLOCK: usize = 16;

vectorized! {
    /// `sums += Σ_r a_rᵀ·b_r` over the rows `r` of `a` (`m` values each) and `b` (`n`
    /// each), `sums` a row-major `(m, n)` slice; `m, n ≥ 1`. Blocks of [`SUM_BLOCK`] rows
    /// are summed first, each in row order.
    fn outer_sums(a: &[E], b: &[E], sums: &mut [E], m: usize, n: usize) {
        for (a, b) in a.chunks(SUM_BLOCK * m).zip(b.chunks(SUM_BLOCK * n)) {
            let mut j = 0;
            if j + 8 <= n {
                block_columns::<E, 8>(a, b, sums, m, n, j);
                j += 8;
            }
            if j + 4 <= n {
                block_columns::<E, 4>(a, b, sums, m, n, j);
                j += 4;
            }
            while j < n {
                block_columns::<E, 1>(a, b, sums, m, n, j);
                j += 1;
            }
        }
    }
}

/// Columns `j..j + W` of every row of the sums: `sums[i, j..j + W] += Σ_r a[r, i]·b[r, j..j + W]`
/// over a block of rows, summed in row order in registers first.
#[inline(always)]
fn block_columns<E: Real, const W: usize>(
    a: &[E],
    b: &[E],
    sums: &mut [E],
    m: usize,
    n: usize,
    j: usize,
) {
    for i in 0..m {
        let mut acc = [E::zero(); W];
        for (a_row, b_row) in a.chunks_exact(m).zip(b.chunks_exact(n)) {
            let (Some(&x), Some(Ok(b_j))) =
                (a_row.get(i), b_row.get(j..j + W).map(<&[E; W]>::try_from))
            else {
                return;
            };
            for (s, &v) in acc.iter_mut().zip(b_j) {
                *s = *s + x * v;
            }
        }
        let start = i * n + j;
        let Some(Ok(out)) = sums.get_mut(start..start + W).map(<&mut [E; W]>::try_from) else {
            return;
        };
        for (s, a) in out.iter_mut().zip(acc) {
            *s = *s + a;
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{s, Array2};
    use proptest::prelude::*;

    use super::*;
    use crate::backend::test_values::filled;

    /// `c + a·b` by plain loops in `f64`.
    fn expected(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>, c: &Array2<f64>) -> Array2<f64> {
        let mut out = c.clone();
        for ((r, j), x) in out.indexed_iter_mut() {
            *x += (0..a.ncols()).map(|p| a[[r, p]] * b[[p, j]]).sum::<f64>();
        }
        out
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    fn close(got: &Array2<f64>, want: &Array2<f64>, k: usize) -> Result<(), TestCaseError> {
        for (x, y) in got.iter().zip(want) {
            let tolerance = 1e-13 * (1.0 + k as f64) * (1.0 + y.abs());
            prop_assert!((x - y).abs() <= tolerance, "{x} vs {y}");
        }
        Ok(())
    }

    proptest! {
        /// A tall product, narrow or wide, is the plain product (to rounding) from a `b`
        /// that is a transpose or a column block, with and without accumulation, and the
        /// same bits in one block on one thread as in blocks of 3 rows on two.
        #[test]
        fn a_tall_product_is_the_plain_product(
            m in 0_usize..200,
            k in 0..=THIN,
            n in prop_oneof![0..=THIN, WIDE_MIN_COLUMNS..WIDE_MIN_COLUMNS + 100],
            b_layout in 0_usize..3,
            accumulate in any::<bool>(),
        ) {
            let a = filled::<f64>(m, k, 1);
            let stored = filled::<f64>(k + 2, n + 3, 2);
            let stored_t = stored.t().to_owned();
            let b = match b_layout {
                0 => stored.slice(s![..k, ..n]),
                1 => stored.slice(s![1..k + 1, 2..n + 2]),
                _ => stored_t.t().slice_move(s![..k, ..n]),
            };
            let start = filled::<f64>(m, n, 3);
            let run = |threads: usize, min_rows: usize| {
                let mut c = start.clone();
                let done = pool(threads).install(|| {
                    tall(Isa::None, a.view(), b, c.view_mut(), accumulate, min_rows)
                });
                (done, c)
            };
            let (whole, split) = (run(1, usize::MAX), run(2, 3));
            prop_assert!(whole.0 && split.0);
            prop_assert_eq!(&whole.1, &split.1);
            let base = if accumulate { start.clone() } else { Array2::zeros((m, n)) };
            close(&split.1, &expected(a.view(), b, &base), k)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// A product with a long inner dimension is the plain product (to rounding), with
        /// and without accumulation, and bit for bit the same serially as on two threads;
        /// its parts depend on the shape only.
        #[test]
        fn a_long_inner_product_is_the_plain_product(
            m in 0..=THIN,
            n in 0..=THIN,
            k in LONG_MIN..3 * LONG_PART + 100,
            accumulate in any::<bool>(),
        ) {
            let Some(Thin::LongInner { parts }) = Thin::of(
                &filled::<f64>(k, m.max(1), 0).t(),
                &filled::<f64>(k, n.max(1), 0).view(),
            ) else {
                return Err(TestCaseError::fail("not a long inner product"));
            };
            prop_assert_eq!(parts, k.div_ceil(LONG_PART));
            let stored_a = filled::<f64>(k, m, 1);
            let b = filled::<f64>(k, n, 2);
            let start = filled::<f64>(m, n, 3);
            let run = |threads: usize, parallel: bool| {
                let mut c = start.clone();
                let mut partials = Array2::from_elem((parts * m, n), f64::NAN);
                let done = pool(threads).install(|| {
                    let (a, c, p) = (stored_a.t(), c.view_mut(), partials.view_mut());
                    long_inner(Isa::None, a, b.view(), c, accumulate, p, parallel)
                });
                (done, c)
            };
            let (one, two) = (run(1, false), run(2, true));
            prop_assert!(one.0 && two.0);
            prop_assert_eq!(&one.1, &two.1);
            let base = if accumulate { start.clone() } else { Array2::zeros((m, n)) };
            close(&two.1, &expected(stored_a.t(), b.view(), &base), k)?;
        }
    }

    /// An inner dimension longer than `MAX_LONG_PARTS` parts of `LONG_PART` rows is cut
    /// into `MAX_LONG_PARTS` longer parts, still the plain product, the same on one thread
    /// as on two.
    #[test]
    fn a_very_long_inner_dimension_keeps_the_most_parts() {
        let (m, n, k) = (3, 5, MAX_LONG_PARTS * LONG_PART + 1001);
        let (x, y) = (filled::<f64>(k, m, 1), filled::<f64>(k, n, 2));
        let parts = Some(Thin::LongInner {
            parts: MAX_LONG_PARTS,
        });
        assert_eq!(Thin::of(&x.t(), &y.view()), parts);
        let run = |threads: usize, parallel: bool| {
            let mut c = filled::<f64>(m, n, 3);
            let mut partials = Array2::from_elem((MAX_LONG_PARTS * m, n), f64::NAN);
            pool(threads).install(|| {
                let (a, c, p) = (x.t(), c.view_mut(), partials.view_mut());
                assert!(long_inner(Isa::None, a, y.view(), c, true, p, parallel));
            });
            c
        };
        let (one, two) = (run(1, false), run(2, true));
        assert_eq!(one, two);
        let want = expected(x.t(), y.view(), &filled::<f64>(m, n, 3));
        close(&two, &want, k).unwrap();
    }

    /// Every instruction set this CPU has gives the baseline's bits, in `f32`, for every
    /// short side up to `THIN` and a wide tall product that ends in every column-block
    /// width of the kernels (32, 16, 8, 4 and 1 columns).
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        for n in (1..=THIN).chain([WIDE_MIN_COLUMNS + 61]) {
            let (a, b) = (filled::<f32>(37, 5, 1), filled::<f32>(5, n, 2));
            let (x, y) = (filled::<f32>(LONG_MIN, 6, 3), filled::<f32>(LONG_MIN, n, 4));
            let run = |isa: Isa| {
                let mut c = filled::<f32>(37, n, 5);
                assert!(tall(isa, a.view(), b.view(), c.view_mut(), true, 8));
                let mut sums = Array2::zeros((6, n));
                let mut partials = Array2::zeros((6, n));
                let (x_t, p) = (x.t(), partials.view_mut());
                let long = long_inner(isa, x_t, y.view(), sums.view_mut(), false, p, false);
                assert_eq!(long, n <= THIN, "long inner products take n ≤ THIN only");
                (c, sums)
            };
            let baseline = run(Isa::None);
            for isa in Isa::supported() {
                assert_eq!(run(isa), baseline, "{isa:?}, n = {n}");
            }
        }
    }

    /// The products of a layer of 4 units with 8 inputs, as `CpuBackend::matmul` orients
    /// them, take the thin routes: `X·V`, `∂P·Uᵀ`, `Xᵀ·∂P`.
    #[test]
    fn a_small_layers_products_are_thin() {
        let rows = 2 * LONG_MIN;
        let (x, v, grad, u) = (
            filled::<f32>(rows, 8, 1),
            filled::<f32>(8, 4, 2),
            filled::<f32>(rows, 4, 3),
            filled::<f32>(4, 4, 4),
        );
        assert_eq!(Thin::of(&x.view(), &v.view()), Some(Thin::Tall));
        assert_eq!(Thin::of(&grad.view(), &u.t()), Some(Thin::Tall));
        let parts = Some(Thin::LongInner { parts: 1 });
        assert_eq!(Thin::of(&x.t(), &grad.view()), parts);
        // Table 2's first layer: 4 inputs onto 256 units per gate.
        let (inputs, v_gate) = (filled::<f32>(rows, 4, 5), filled::<f32>(4, 256, 6));
        assert_eq!(Thin::of(&inputs.view(), &v_gate.view()), Some(Thin::Tall));
    }

    /// Operands the kernels cannot stream are left to the general route, untouched.
    #[test]
    fn other_layouts_are_left_alone() {
        let (a, b) = (filled::<f64>(40, 4, 1), filled::<f64>(4, 4, 2));
        let mut wide = Array2::<f64>::ones((40, 8));
        let strided = wide.slice_mut(s![.., ..;2]);
        assert!(!tall(Isa::None, a.view(), b.view(), strided, false, 8));
        assert!(Thin::of(&a.t().t(), &b.view()).is_some());
        let a_t = a.t().as_standard_layout().into_owned();
        assert_eq!(
            Thin::of(&a_t.t(), &b.view()),
            None,
            "a column-major tall operand"
        );
        let long = filled::<f64>(LONG_MIN, 4, 3);
        assert_eq!(
            Thin::of(&long.t().as_standard_layout().view(), &long.view()),
            None,
            "a row-major left operand of a long inner product"
        );
        // Partial sums that are not a whole number of `(m, n)` blocks.
        let mut partials = Array2::zeros((5, 4));
        let (x, c) = (long.t(), wide.slice_mut(s![..4, ..4]));
        assert!(!long_inner(
            Isa::None,
            x,
            long.view(),
            c,
            false,
            partials.view_mut(),
            false
        ));
        assert!(wide.iter().all(|&x| x == 1.0));
        assert!(Thin::of(
            &filled::<f64>(8, 9, 1).view(),
            &filled::<f64>(9, 2, 1).view()
        )
        .is_none());
        assert!(Thin::of(
            &filled::<f64>(8, 8, 1).view(),
            &filled::<f64>(8, 8, 1).view()
        )
        .is_none());
        // Between the narrow and the wide tall products, and a wide one with k > THIN.
        let x = filled::<f64>(8, THIN, 1);
        let between = filled::<f64>(THIN, WIDE_MIN_COLUMNS - 1, 2);
        assert!(Thin::of(&x.view(), &between.view()).is_none());
        let wide = filled::<f64>(THIN + 1, WIDE_MIN_COLUMNS, 2);
        assert!(Thin::of(&filled::<f64>(8, THIN + 1, 1).view(), &wide.view()).is_none());
    }
}
