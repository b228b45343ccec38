//! Products whose right operand is laid out once for many calls: the LSTM's recurrent
//! weight, used by one small `(B, n)·(n, 4n)` product per time step.
//!
//! The columns of `op(b)` (`k × n`) are stored in panels one vector register wide (`L` =
//! 16 `f32` or 8 `f64` with AVX-512, half that with AVX2): panel `q` holds columns
//! `q·L..(q+1)·L` as `k` rows of `L` contiguous values, the last one zero-padded. A kernel
//! keeps a tile of `c` (up to 8 rows × 3 panels in AVX-512 registers) for the whole inner
//! dimension, reading its panels as straight streams and broadcasting `a`: one load of
//! `op(b)` per row tile instead of the reload and store of `c` for every few rows of `b`
//! that a kernel on the unpacked weight needs, and no packing on every call as a library
//! product does. `gemm_pick` on the idle Xeon (2 threads, `f32`): `(8, 512)·(512, 2048)`
//! at 146 GFLOP/s against 77 through `CpuBackend::matmul` on the unpacked weight (the
//! main README has the table).
//!
//! Each element of `c` is one FMA chain over `k` in increasing order, starting from `c`
//! (or zero): results do not depend on the tiling or the threads, and equal those of
//! [`few_rows`](super::product::few_rows) (which takes at most 16 rows). Without FMA (or
//! off x86-64) the operand is kept as it is and the product goes through the `gemm`
//! crate.

#[cfg(target_arch = "x86_64")]
use std::any::TypeId;

use gemm::Parallelism;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};

use super::isa::Isa;
use super::product;
use crate::{ModelError, Real};

/// A right operand `op(b)` of shape `(k, n)` laid out in panels one vector register wide,
/// as [`CpuBackend`](super::CpuBackend) prepares it for
/// [`Backend::matmul_packed`](super::Backend::matmul_packed).
#[derive(Debug)]
pub struct PackedMatrix<E> {
    /// `(panels, k·L)` in panels, or `(k, n)` as it is for [`Isa::None`].
    buffer: Array2<E>,
    k: usize,
    n: usize,
    /// An instruction set that runs on this CPU (checked by [`pack`]).
    isa: Isa,
}

impl<E> PackedMatrix<E> {
    /// `(k, n)`: the shape of the operand it holds.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The storage, to give back to a pool.
    pub(crate) fn into_buffer(self) -> Array2<E> {
        self.buffer
    }
}

/// The most values a panel holds (AVX-512 `f32`).
const MAX_LANES: usize = 16;

/// Values per panel: one vector register of `isa` (0 for [`Isa::None`]), at most
/// [`MAX_LANES`].
fn lanes<E>(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 64 / std::mem::size_of::<E>(),
        Isa::Avx2 => 32 / std::mem::size_of::<E>(),
        Isa::None => 0,
    }
}

/// The shape of the buffer that holds a `(k, n)` operand for `isa`.
pub(crate) fn buffer_dims<E>(isa: Isa, k: usize, n: usize) -> Result<(usize, usize), ModelError> {
    let too_large = || ModelError::InvalidConfig {
        reason: format!("a packed {k} × {n} matrix does not fit in memory"),
    };
    match lanes::<E>(isa) {
        0 => Ok((k, n)),
        l => {
            let width = k.checked_mul(l).ok_or_else(too_large)?;
            let panels = n.div_ceil(l);
            panels.checked_mul(width).ok_or_else(too_large)?;
            Ok((panels, width))
        }
    }
}

/// Lays `b` (`(k, n)`, any strides) out for `isa` in `buffer` (of [`buffer_dims`]'s shape,
/// any contents). An `isa` that this CPU does not run is replaced by [`Isa::None`], which
/// needs a buffer of `b`'s shape.
///
/// # Panics
/// When `buffer` has the wrong shape (a caller bug: the backend sizes it).
#[track_caller]
pub(crate) fn pack<E: Real>(
    isa: Isa,
    b: ArrayView2<'_, E>,
    mut buffer: Array2<E>,
) -> PackedMatrix<E> {
    let isa = if isa.runs_here() { isa } else { Isa::None };
    let (k, n) = b.dim();
    let l = lanes::<E>(isa);
    assert!(
        buffer_dims::<E>(isa, k, n).is_ok_and(|dims| dims == buffer.dim()),
        "packing buffer of the wrong shape"
    );
    if l == 0 {
        buffer.assign(&b);
    } else {
        for (q, mut panel) in buffer.outer_iter_mut().enumerate() {
            let columns = b.slice(s![.., q * l..((q + 1) * l).min(n)]);
            for (row, values) in panel.exact_chunks_mut(l).into_iter().zip(columns.rows()) {
                let mut row = row;
                row.fill(E::zero());
                row.slice_mut(s![..values.len()]).assign(&values);
            }
        }
    }
    PackedMatrix { buffer, k, n, isa }
}

/// `c = a·b`, or `c += a·b` when `accumulate`, split over the columns on the current rayon
/// pool when `parallel`. Shapes must match (checked by the caller).
///
/// # Panics
/// When the shapes do not match (a caller bug).
#[track_caller]
pub(crate) fn matmul<E: Real>(
    a: ArrayView2<'_, E>,
    b: &PackedMatrix<E>,
    mut c: ArrayViewMut2<'_, E>,
    accumulate: bool,
    parallel: bool,
) {
    assert!(
        a.ncols() == b.k && c.dim() == (a.nrows(), b.n),
        "product operands do not fit"
    );
    let l = lanes::<E>(b.isa);
    if c.is_empty() {
        return;
    }
    if l == 0 {
        let threads = match parallel {
            true => Parallelism::Rayon(0),
            false => Parallelism::None,
        };
        product::gemm(a, b.buffer.view(), c, accumulate, threads);
        return;
    }
    if !accumulate {
        c.fill(E::zero());
    }
    if c.ncols() > 1 && c.strides()[1] != 1 {
        // Rows with gaps: computed in a contiguous copy (no layer passes such a `c`).
        let mut copy = Array2::zeros(c.raw_dim());
        copy.assign(&c);
        matmul(a, b, copy.view_mut(), true, parallel);
        c.assign(&copy);
        return;
    }
    let full = b.n / l;
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let (full_panels, tail_panel) = b.buffer.view().split_at(Axis(0), full);
    let (c_full, c_tail) = c.split_at(Axis(1), full * l);
    split_panels(b.isa, a, full_panels, c_full, threads);
    if c_tail.ncols() > 0 {
        tail(b.isa, a, tail_panel, c_tail);
    }
}

/// Splits the panels (and the columns of `c`) into `parts` blocks run with `rayon::join`.
fn split_panels<E: Real>(
    isa: Isa,
    a: ArrayView2<'_, E>,
    panels: ArrayView2<'_, E>,
    c: ArrayViewMut2<'_, E>,
    parts: usize,
) {
    let count = panels.nrows();
    let left = count / parts.max(1) * (parts / 2);
    if parts < 2 || left == 0 || left >= count {
        run(isa, a, panels, c);
        return;
    }
    let (panels_left, panels_right) = panels.split_at(Axis(0), left);
    let (c_left, c_right) = c.split_at(Axis(1), left * lanes::<E>(isa));
    rayon::join(
        || split_panels(isa, a, panels_left, c_left, parts / 2),
        || split_panels(isa, a, panels_right, c_right, parts - parts / 2),
    );
}

/// Rows of `c` done per pass over the zero-padded last panel.
const TAIL_ROWS: usize = 16;

/// The last, partial panel: its columns of `c` go through a zero-padded copy one panel
/// wide, `TAIL_ROWS` rows at a time (no allocation).
fn tail<E: Real>(
    isa: Isa,
    a: ArrayView2<'_, E>,
    panel: ArrayView2<'_, E>,
    mut c: ArrayViewMut2<'_, E>,
) {
    let l = lanes::<E>(isa);
    let mut staged = [E::zero(); TAIL_ROWS * MAX_LANES];
    for r0 in (0..c.nrows()).step_by(TAIL_ROWS) {
        let rows = TAIL_ROWS.min(c.nrows() - r0);
        let mut padded = ArrayViewMut2::from_shape((rows, l), &mut staged[..rows * l])
            .expect("a panel is at most MAX_LANES wide");
        padded.fill(E::zero());
        let mut block = c.slice_mut(s![r0..r0 + rows, ..]);
        let width = block.ncols();
        padded.slice_mut(s![.., ..width]).assign(&block);
        run(
            isa,
            a.slice(s![r0..r0 + rows, ..]),
            panel,
            padded.view_mut(),
        );
        block.assign(&padded.slice(s![.., ..width]));
    }
}

/// Raw operands of a kernel: `c[r, q·L + j] += Σ_p a[r, p]·panel_q[p·L + j]` for `r < m`,
/// `q < count`, `j < L`.
#[cfg(target_arch = "x86_64")]
struct Operands<E> {
    a: *const E,
    a_row: isize,
    a_col: isize,
    m: usize,
    k: usize,
    panels: *const E,
    c: *mut E,
    c_row: isize,
    count: usize,
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
impl<E> Operands<E> {
    /// # Safety
    /// `r < m`, `p < k`.
    #[inline(always)]
    unsafe fn a_at(&self, r: usize, p: usize) -> *const E {
        // SAFETY: in bounds of the view `a` was taken from, by the caller's indices.
        unsafe {
            self.a
                .offset(r as isize * self.a_row + p as isize * self.a_col)
        }
    }

    /// The first of `L` values at `offset` into panel `q`.
    ///
    /// # Safety
    /// `q < count` and `offset + L ≤ k·L` (offsets are multiples of `L`, so `offset < k·L`
    /// suffices).
    #[inline(always)]
    unsafe fn panel_at(&self, q: usize, offset: usize, lanes: usize) -> *const E {
        // SAFETY: panel `q` starts `q·k·L` values into the contiguous panels, which hold
        // `count·k·L` values.
        unsafe { self.panels.add(q * self.k * lanes + offset) }
    }

    /// The first of `L` values of row `r` of `c` from `column`.
    ///
    /// # Safety
    /// `r < m` and `column + L ≤ count·L` (columns are multiples of `L`).
    #[inline(always)]
    unsafe fn c_at(&self, r: usize, column: usize) -> *mut E {
        // SAFETY: `c` has unit column stride, so row `r` holds `count·L` values there.
        unsafe { self.c.offset(r as isize * self.c_row).add(column) }
    }

    /// The same pointers as another element type (only sound to use where `T` is `E`).
    fn cast<T>(&self) -> Operands<T> {
        Operands {
            a: self.a.cast(),
            a_row: self.a_row,
            a_col: self.a_col,
            m: self.m,
            k: self.k,
            panels: self.panels.cast(),
            c: self.c.cast(),
            c_row: self.c_row,
            count: self.count,
        }
    }
}

/// Panels per column block: each row tile of a block reads the same panels, which stay in
/// the L2 cache between row tiles (divisible by every tile width below).
#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 24;

/// Runs the kernel of `isa` (not [`Isa::None`]) on whole panels: `panels` is
/// `(count, k·L)` in standard layout, `c` is `(m, count·L)` with unit column stride.
///
/// # Panics
/// When the operands do not have that form (a caller bug: `matmul` and `tail` make it).
#[allow(unsafe_code)]
#[track_caller]
fn run<E: Real>(
    isa: Isa,
    a: ArrayView2<'_, E>,
    panels: ArrayView2<'_, E>,
    c: ArrayViewMut2<'_, E>,
) {
    let l = lanes::<E>(isa);
    let (m, k) = a.dim();
    let fits = l > 0
        && panels.is_standard_layout()
        && panels.ncols() == k * l
        && c.dim() == (m, panels.nrows() * l)
        && (c.ncols() <= 1 || c.strides()[1] == 1);
    assert!(fits, "panel kernel operands do not fit");
    if m == 0 || panels.nrows() == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut c = c;
        let operands = Operands {
            a: a.as_ptr(),
            a_row: a.strides()[0],
            a_col: a.strides()[1],
            m,
            k,
            panels: panels.as_ptr(),
            c: c.as_mut_ptr(),
            c_row: c.strides()[0],
            count: panels.nrows(),
        };
        let f32 = TypeId::of::<E>() == TypeId::of::<f32>();
        // SAFETY: `isa` came from a `PackedMatrix`, whose `pack` admits only instruction
        // sets that `runs_here()`, all that the kernels enable. The pointers and strides are
        // those of the views checked above (`a` is `(m, k)`, the panels `count` rows of
        // `k·L`, `c` `(m, count·L)` with unit column stride), which is what the kernels
        // index; `c` is a mutable borrow, so nothing else reads or writes it meanwhile.
        // `cast` turns `E` into the type `TypeId` just matched (`E` is `f32` or `f64`: the
        // element trait is sealed).
        unsafe {
            match (isa, f32) {
                (Isa::Avx512, true) => avx512_f32::run(&operands.cast()),
                (Isa::Avx512, false) => avx512_f64::run(&operands.cast()),
                (Isa::Avx2, true) => avx2_f32::run(&operands.cast()),
                (Isa::Avx2, false) => avx2_f64::run(&operands.cast()),
                (Isa::None, _) => unreachable!("checked above: l > 0"),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no panel kernels here: `pack` keeps `Isa::None`, which has no panels");
}

/// One kernel for one instruction set and element type: the tile shapes, as rows and the
/// panel counts tried in turn (ending with 1), in decreasing rows ending with one row,
/// each tile fitting the register file with its panel loads. Narrower tiles take what is
/// left of a column block, so a short row of panels still keeps several FMA chains going.
#[cfg(target_arch = "x86_64")]
macro_rules! panel_kernel {
    ($module:ident, $feature:literal, $elem:ty, $lanes:literal,
     $vector:ident, $load:ident, $store:ident, $splat:ident, $fma:ident,
     $(($rows:literal, [$($width:literal),+])),+) => {
        #[allow(unsafe_code)]
        mod $module {
            use std::arch::x86_64::*;

            use super::Operands;

            const LANES: usize = $lanes;

            /// `c[r0..r0+R, q0·L..(q0+G)·L] += a[r0..r0+R, ·]·panels q0..q0+G`.
            ///
            /// # Safety
            /// `r0 + R ≤ m`, `q0 + G ≤ count`, the operands valid, the features enabled.
            #[inline(always)]
            unsafe fn tile<const R: usize, const G: usize>(o: &Operands<$elem>, r0: usize, q0: usize) {
                // SAFETY: rows `r0..r0+R` and panels `q0..q0+G` are inside the operands (the
                // caller's bounds), `p < k`, and every offset is a multiple of `L`.
                unsafe {
                    let mut acc: [[$vector; G]; R] = [[$splat(0.0); G]; R];
                    for (r, row) in acc.iter_mut().enumerate() {
                        for (g, v) in row.iter_mut().enumerate() {
                            *v = $load(o.c_at(r0 + r, (q0 + g) * LANES));
                        }
                    }
                    for p in 0..o.k {
                        let mut b: [$vector; G] = [$splat(0.0); G];
                        for (g, v) in b.iter_mut().enumerate() {
                            *v = $load(o.panel_at(q0 + g, p * LANES, LANES));
                        }
                        for (r, row) in acc.iter_mut().enumerate() {
                            let s = $splat(*o.a_at(r0 + r, p));
                            for (v, &panel) in row.iter_mut().zip(&b) {
                                *v = $fma(s, panel, *v);
                            }
                        }
                    }
                    for (r, row) in acc.iter().enumerate() {
                        for (g, &v) in row.iter().enumerate() {
                            $store(o.c_at(r0 + r, (q0 + g) * LANES), v);
                        }
                    }
                }
            }

            /// The whole product, column block by column block.
            ///
            /// # Safety
            /// The operands valid and the features enabled on this CPU.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn run(o: &Operands<$elem>) {
                for q0 in (0..o.count).step_by(super::BLOCK) {
                    let q1 = (q0 + super::BLOCK).min(o.count);
                    let mut r = 0;
                    $(
                        while o.m - r >= $rows {
                            let mut q = q0;
                            $(
                                while q1 - q >= $width {
                                    // SAFETY: `r + rows ≤ m`, `q + width ≤ q1 ≤ count`.
                                    unsafe { tile::<$rows, $width>(o, r, q) };
                                    q += $width;
                                }
                            )+
                            r += $rows;
                        }
                    )+
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
panel_kernel!(
    avx512_f32,
    "avx512f,fma",
    f32,
    16,
    __m512,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    (8, [3, 1]),
    (4, [6, 3, 1]),
    (2, [8, 4, 2, 1]),
    (1, [8, 4, 2, 1])
);
#[cfg(target_arch = "x86_64")]
panel_kernel!(
    avx512_f64,
    "avx512f,fma",
    f64,
    8,
    __m512d,
    _mm512_loadu_pd,
    _mm512_storeu_pd,
    _mm512_set1_pd,
    _mm512_fmadd_pd,
    (8, [3, 1]),
    (4, [6, 3, 1]),
    (2, [8, 4, 2, 1]),
    (1, [8, 4, 2, 1])
);
#[cfg(target_arch = "x86_64")]
panel_kernel!(
    avx2_f32,
    "avx2,fma",
    f32,
    8,
    __m256,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    (4, [3, 1]),
    (2, [4, 2, 1]),
    (1, [8, 4, 2, 1])
);
#[cfg(target_arch = "x86_64")]
panel_kernel!(
    avx2_f64,
    "avx2,fma",
    f64,
    4,
    __m256d,
    _mm256_loadu_pd,
    _mm256_storeu_pd,
    _mm256_set1_pd,
    _mm256_fmadd_pd,
    (4, [3, 1]),
    (2, [4, 2, 1]),
    (1, [8, 4, 2, 1])
);

#[cfg(test)]
mod tests {
    use ndarray::{s, Array2};
    use proptest::prelude::*;

    use super::*;
    use crate::backend::test_values::filled;

    /// `c + a·b`, each element one `mul_add` chain over `k` in increasing order.
    fn fma_chains<E: Real>(a: ArrayView2<'_, E>, b: ArrayView2<'_, E>, c: &Array2<E>) -> Array2<E> {
        let mut out = c.clone();
        for ((r, j), x) in out.indexed_iter_mut() {
            *x = (0..a.ncols()).fold(*x, |sum, p| a[[r, p]].mul_add(b[[p, j]], sum));
        }
        out
    }

    /// Packs `b` for `isa` and runs the product on a pool of two threads.
    fn packed_product<E: Real>(
        isa: Isa,
        a: ArrayView2<'_, E>,
        b: ArrayView2<'_, E>,
        c: ArrayViewMut2<'_, E>,
        accumulate: bool,
        parallel: bool,
    ) -> Isa {
        let (rows, cols) = buffer_dims::<E>(isa, b.nrows(), b.ncols()).unwrap();
        let packed = pack(isa, b, Array2::from_elem((rows, cols), E::nan()));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| matmul(a, &packed, c, accumulate, parallel));
        packed.isa
    }

    /// Every instruction set this CPU runs gives, for every element type, operand layout
    /// and size (multiples of a panel or not), exactly the FMA chains of the few-rows
    /// kernel; the `gemm` route for `Isa::None` the same product to rounding.
    fn check<E: Real>(
        m: usize,
        k: usize,
        n: usize,
        layouts: [bool; 3],
        accumulate: bool,
        parallel: bool,
    ) -> Result<(), TestCaseError> {
        let [b_transposed, a_strided, c_in_block] = layouts;
        let stored_b = filled::<E>(n.max(k) + 1, n.max(k) + 1, 2);
        let b = match b_transposed {
            true => stored_b.slice(s![..n, ..k]).reversed_axes(),
            false => stored_b.slice(s![..k, ..n]),
        };
        let stored_a = filled::<E>(m, 2 * k, 1);
        let a = match a_strided {
            true => stored_a.slice(s![.., ..;2]),
            false => stored_a.slice(s![.., ..k]),
        };
        let start = filled::<E>(m, n, 3);
        let base = if accumulate {
            start.clone()
        } else {
            Array2::zeros((m, n))
        };
        let want = fma_chains(a, b, &base);
        for isa in Isa::supported() {
            let mut wide = filled::<E>(m, n + 5, 4);
            let mut own = start.clone();
            let c = match c_in_block {
                true => {
                    wide.slice_mut(s![.., 2..n + 2]).assign(&start);
                    wide.slice_mut(s![.., 2..n + 2])
                }
                false => own.view_mut(),
            };
            let used = packed_product(isa, a, b, c, accumulate, parallel);
            prop_assert_eq!(used, isa);
            let got = match c_in_block {
                true => wide.slice(s![.., 2..n + 2]).to_owned(),
                false => own,
            };
            if c_in_block {
                prop_assert!(
                    wide.slice(s![.., ..2]) == filled::<E>(m, n + 5, 4).slice(s![.., ..2])
                );
                prop_assert!(
                    wide.slice(s![.., n + 2..]) == filled::<E>(m, n + 5, 4).slice(s![.., n + 2..])
                );
            }
            let tolerance = E::from_f64(1e-5 * (1.0 + k as f64));
            for (x, y) in got.iter().zip(&want) {
                match isa {
                    Isa::None => prop_assert!((*x - *y).abs() <= tolerance, "{isa:?}: {x} vs {y}"),
                    _ => prop_assert!(x == y, "{isa:?}: {x} vs {y}"),
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn packed_products_are_the_fma_chains(
            m in 0_usize..20,
            k in 0_usize..70,
            n in 0_usize..90,
            layouts in any::<[bool; 3]>(),
            accumulate in any::<bool>(),
            parallel in any::<bool>(),
            f64 in any::<bool>(),
        ) {
            match f64 {
                true => check::<f64>(m, k, n, layouts, accumulate, parallel)?,
                false => check::<f32>(m, k, n, layouts, accumulate, parallel)?,
            }
        }
    }

    /// Exactly the FMA chains, through every instruction set this CPU runs with panels.
    fn exact_for_every_isa<E: Real>(m: usize, k: usize, n: usize, gaps: bool, parallel: bool) {
        let a = filled::<E>(m, k, 1);
        let b = filled::<E>(k, n, 2);
        let start = filled::<E>(m, n, 3);
        let want = fma_chains(a.view(), b.view(), &start);
        for isa in Isa::supported().into_iter().filter(|&isa| isa != Isa::None) {
            let mut c_t = start.t().as_standard_layout().into_owned();
            let mut c = start.clone();
            let out = match gaps {
                true => c_t.view_mut().reversed_axes(),
                false => c.view_mut(),
            };
            packed_product(isa, a.view(), b.view(), out, true, parallel);
            let got = if gaps { c_t.t().to_owned() } else { c };
            assert!(
                got == want,
                "{isa:?}, {} ({m}, {k}, {n}), gaps {gaps}",
                E::NAME
            );
        }
    }

    #[test]
    fn a_result_with_gaps_between_columns_is_computed_too() {
        exact_for_every_isa::<f64>(19, 5, 21, true, false);
        exact_for_every_isa::<f32>(19, 5, 37, true, true);
    }

    /// More panels than a column block holds (25 or more with every instruction set), on
    /// one thread and split, with more rows than one tile.
    #[test]
    fn products_wider_than_a_column_block_are_exact() {
        for parallel in [false, true] {
            exact_for_every_isa::<f32>(9, 13, 401, false, parallel);
            exact_for_every_isa::<f64>(11, 7, 401, false, parallel);
            exact_for_every_isa::<f32>(1, 64, 256, false, parallel);
        }
    }

    /// With at most `FEW_ROWS` rows, the packed product equals the few-rows kernel on the
    /// unpacked operand bit for bit (both are one FMA chain per element in `k` order), so
    /// moving the LSTM's steps to it changed no number.
    #[test]
    fn packed_products_equal_the_few_rows_kernel() {
        let isa = crate::backend::isa::widest();
        if isa == Isa::None {
            return;
        }
        for (m, k, n) in [
            (8, 512, 2048),
            (1, 64, 256),
            (8, 256, 64),
            (16, 33, 100),
            (3, 7, 5),
        ] {
            let a = filled::<f32>(m, k, 1);
            let b = filled::<f32>(k, n, 2);
            let mut few = filled::<f32>(m, n, 3);
            let mut packed = few.clone();
            assert!(product::few_rows(
                a.view(),
                b.view(),
                few.view_mut(),
                true,
                false
            ));
            packed_product(isa, a.view(), b.view(), packed.view_mut(), true, true);
            assert!(few == packed, "({m}, {k}, {n})");
        }
    }

    /// (On a CPU with both instruction sets, as the Xeon and Zen 4 we measured, this only
    /// checks that each is kept.)
    #[test]
    fn an_isa_this_cpu_lacks_falls_back_to_the_plain_layout() {
        let b = filled::<f32>(4, 9, 2);
        for isa in [Isa::Avx512, Isa::Avx2] {
            let want = if isa.runs_here() { isa } else { Isa::None };
            let dims = buffer_dims::<f32>(want, 4, 9).unwrap();
            assert_eq!(pack(isa, b.view(), Array2::zeros(dims)).isa, want);
        }
    }
}
