//! In-register scans for narrow contiguous problems (AVX2 + FMA, x86-64 only).
//!
//! When a job is one contiguous run of memory with 1, 2 or 4 features (f32) or 1 or 2
//! (f64), a 256-bit register holds several consecutive time steps. Each register is
//! scanned in place with log₂ steps of "shift by s lanes, then combine"
//! (`(A, X)_j ← (A, X)_{j−s} ∘ (A, X)_j`), four registers are composed with each other,
//! and only then is the running state applied: `h = A·state + X`. The dependency chain
//! through the state is one FMA and one permute per four registers instead of one FMA
//! per time step, which is where a narrow scan gains over the loop over time.

use std::any::TypeId;
use std::arch::x86_64::*;

use scan_core::Element;

use super::flat_avx512::{self, Wide};
use super::Job;

/// Element-type-specific operations on a 256-bit register (always seen as `__m256`).
pub(super) trait Lane: Copy + 'static {
    /// 32-bit lanes per element.
    const WIDTH32: usize;
    /// Elements per register.
    const PER_REG: usize = 8 / Self::WIDTH32;
    unsafe fn load(p: *const Self) -> __m256;
    unsafe fn store(p: *mut Self, v: __m256);
    unsafe fn mul(a: __m256, b: __m256) -> __m256;
    /// `v` with every element below the smallest normal number in magnitude set to zero
    /// (NaN and infinities kept).
    unsafe fn flush(v: __m256) -> __m256;
    /// `a·b + c` with one rounding.
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256;
    unsafe fn splat(v: Self) -> __m256;
    fn one() -> Self;
    fn zero() -> Self;
    fn madd(a: Self, b: Self, c: Self) -> Self;
    fn mul1(a: Self, b: Self) -> Self;
    /// `a`, or zero when it is below the smallest normal number in magnitude.
    fn flush1(a: Self) -> Self;
}

impl Lane for f32 {
    const WIDTH32: usize = 1;
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut Self, v: __m256) {
        // SAFETY: the caller guarantees 8 writable floats at `p`.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX is enabled by the calling kernel's target features.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn flush(v: __m256) -> __m256 {
        // SAFETY: AVX is enabled by the calling kernel's target features.
        unsafe {
            let magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
            let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(magnitude, _mm256_set1_ps(f32::MIN_POSITIVE));
            _mm256_andnot_ps(tiny, v)
        }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: FMA is enabled by the calling kernel's target features.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn splat(v: Self) -> __m256 {
        // SAFETY: AVX is enabled by the calling kernel's target features.
        unsafe { _mm256_set1_ps(v) }
    }
    fn one() -> Self {
        1.0
    }
    fn zero() -> Self {
        0.0
    }
    #[inline(always)]
    fn madd(a: Self, b: Self, c: Self) -> Self {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn mul1(a: Self, b: Self) -> Self {
        a * b
    }
    fn flush1(a: Self) -> Self {
        super::flush_subnormal(a)
    }
}

impl Lane for f64 {
    const WIDTH32: usize = 2;
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m256 {
        // SAFETY: the caller guarantees 4 readable doubles at `p`.
        unsafe { _mm256_castpd_ps(_mm256_loadu_pd(p)) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut Self, v: __m256) {
        // SAFETY: the caller guarantees 4 writable doubles at `p`.
        unsafe { _mm256_storeu_pd(p, _mm256_castps_pd(v)) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX is enabled by the calling kernel's target features.
        unsafe { _mm256_castpd_ps(_mm256_mul_pd(_mm256_castps_pd(a), _mm256_castps_pd(b))) }
    }
    #[inline(always)]
    unsafe fn flush(v: __m256) -> __m256 {
        // SAFETY: AVX is enabled by the calling kernel's target features.
        unsafe {
            let v = _mm256_castps_pd(v);
            let magnitude = _mm256_andnot_pd(_mm256_set1_pd(-0.0), v);
            let tiny = _mm256_cmp_pd::<_CMP_LT_OQ>(magnitude, _mm256_set1_pd(f64::MIN_POSITIVE));
            _mm256_castpd_ps(_mm256_andnot_pd(tiny, v))
        }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: FMA is enabled by the calling kernel's target features.
        unsafe {
            _mm256_castpd_ps(_mm256_fmadd_pd(
                _mm256_castps_pd(a),
                _mm256_castps_pd(b),
                _mm256_castps_pd(c),
            ))
        }
    }
    #[inline(always)]
    unsafe fn splat(v: Self) -> __m256 {
        // SAFETY: AVX is enabled by the calling kernel's target features.
        unsafe { _mm256_castpd_ps(_mm256_set1_pd(v)) }
    }
    fn one() -> Self {
        1.0
    }
    fn zero() -> Self {
        0.0
    }
    #[inline(always)]
    fn madd(a: Self, b: Self, c: Self) -> Self {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn mul1(a: Self, b: Self) -> Self {
        a * b
    }
    fn flush1(a: Self) -> Self {
        super::flush_subnormal(a)
    }
}

/// Base addresses (lowest in memory) of the job's arrays, as the lane type.
#[derive(Clone, Copy)]
pub(super) struct Bases<L> {
    pub decay: *const L,
    pub impulse: *const L,
    pub out: *mut L,
    pub prev_state: *const L,
    pub grad_decay: *mut L,
}

impl<L> Bases<L> {
    /// Prefetches the `bytes` from element `offset` of every sequence a kernel in `MODE`
    /// touches (see `super::prefetch`).
    #[inline(always)]
    pub(super) fn prefetch<const MODE: u8>(&self, offset: usize, bytes: usize) {
        let at = |p: *const L| p.wrapping_add(offset);
        super::prefetch(at(self.decay), bytes);
        super::prefetch(at(self.impulse), bytes);
        if MODE != REDUCE {
            super::prefetch(at(self.out), bytes);
        }
        if MODE == SCAN_FUSED {
            super::prefetch(at(self.prev_state), bytes);
            super::prefetch(at(self.grad_decay), bytes);
        }
    }
}

/// What the kernel does with each step.
const SCAN: u8 = 0;
pub(super) const SCAN_FUSED: u8 = 1;
pub(super) const REDUCE: u8 = 2;

/// Tries the in-register kernel on `job`; returns `false` (having done nothing) when the
/// width or element type is not one it handles. With `product`, the job is reduced:
/// `carry` accumulates from its value and `product` multiplies, nothing is written.
///
/// # Safety
/// As for [`super::scan`]; additionally every sequence of `job` has row stride `stride`
/// (= ±width) and unit column stride, and the CPU supports AVX2 and FMA.
pub(super) unsafe fn try_scan<E: Element>(
    job: &Job<E>,
    stride: isize,
    carry: &mut [E],
    product: Option<&mut [E]>,
    avx512: bool,
) -> bool {
    let width = job.width;
    if TypeId::of::<E>() == TypeId::of::<f32>() && matches!(width, 1 | 2 | 4) {
        // SAFETY: E is f32, so the casts inside are identity casts.
        unsafe { run_as::<E, f32>(job, stride, carry, product, avx512) };
        true
    } else if TypeId::of::<E>() == TypeId::of::<f64>() && matches!(width, 1 | 2) {
        // SAFETY: E is f64, so the casts inside are identity casts.
        unsafe { run_as::<E, f64>(job, stride, carry, product, avx512) };
        true
    } else {
        false
    }
}

/// # Safety
/// `E` and `L` are the same type; otherwise as [`try_scan`].
unsafe fn run_as<E: Element, L: Wide>(
    job: &Job<E>,
    stride: isize,
    carry: &mut [E],
    product: Option<&mut [E]>,
    avx512: bool,
) {
    let n_elems = job.n_rows * job.width;
    // The lowest address of a sequence whose rows run at `stride`.
    let low = |p: *mut E| -> *mut L {
        let back = if stride < 0 {
            (job.n_rows as isize - 1) * stride
        } else {
            0
        };
        p.wrapping_offset(back).cast::<L>()
    };
    let fused = job.fused;
    let bases = Bases {
        decay: low(job.decay.ptr),
        impulse: low(job.impulse.ptr),
        out: low(job.out.ptr),
        prev_state: fused.map_or(std::ptr::null(), |f| low(f.prev_state.ptr)),
        grad_decay: fused.map_or(std::ptr::null_mut(), |f| low(f.grad_decay.ptr)),
    };
    // SAFETY: E and L are the same type (the caller's contract), so the slices are
    // reinterpreted as themselves.
    let carry =
        unsafe { std::slice::from_raw_parts_mut(carry.as_mut_ptr().cast::<L>(), carry.len()) };
    let mut unit = [L::one(); 4];
    let (product, mode) = match product {
        // SAFETY: as above.
        Some(p) => (
            unsafe { std::slice::from_raw_parts_mut(p.as_mut_ptr().cast::<L>(), p.len()) },
            REDUCE,
        ),
        None if fused.is_some() => (&mut unit[..job.width], SCAN_FUSED),
        None => (&mut unit[..job.width], SCAN),
    };
    // SAFETY: the caller's contract (valid memory, AVX2 + FMA present).
    unsafe {
        let (reverse, width) = (stride < 0, job.width);
        let args = (bases, n_elems, width);
        match (avx512, width * L::WIDTH32) {
            (false, 1) => dispatch_mode::<L, 1, false>(reverse, mode, args, carry, product),
            (false, 2) => dispatch_mode::<L, 2, false>(reverse, mode, args, carry, product),
            (false, _) => dispatch_mode::<L, 4, false>(reverse, mode, args, carry, product),
            (true, 1) => dispatch_mode::<L, 1, true>(reverse, mode, args, carry, product),
            (true, 2) => dispatch_mode::<L, 2, true>(reverse, mode, args, carry, product),
            (true, _) => dispatch_mode::<L, 4, true>(reverse, mode, args, carry, product),
        }
    }
}

/// # Safety
/// As for [`kernel`]; with `AVX512`, the CPU supports AVX-512 F.
unsafe fn dispatch_mode<L: Wide, const GROUP: usize, const AVX512: bool>(
    reverse: bool,
    mode: u8,
    args: (Bases<L>, usize, usize),
    carry: &mut [L],
    product: &mut [L],
) {
    macro_rules! run {
        ($rev:literal, $mode:ident) => {
            if AVX512 {
                flat_avx512::kernel::<L, $rev, $mode, GROUP>(args, carry, product)
            } else {
                kernel::<L, $rev, $mode, GROUP>(args, carry, product)
            }
        };
    }
    // SAFETY: the caller guarantees every sequence addresses n_rows × width valid
    // elements, that outputs alias neither inputs nor each other, and the instruction set.
    unsafe {
        match (reverse, mode) {
            (false, SCAN) => run!(false, SCAN),
            (false, SCAN_FUSED) => run!(false, SCAN_FUSED),
            (false, _) => run!(false, REDUCE),
            (true, SCAN) => run!(true, SCAN),
            (true, SCAN_FUSED) => run!(true, SCAN_FUSED),
            (true, _) => run!(true, REDUCE),
        }
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn lanes_i32(values: [i32; 8]) -> __m256i {
    // SAFETY: reading 8 i32 from a local array.
    unsafe { _mm256_loadu_si256(values.as_ptr().cast()) }
}

/// Broadcast of the last group of `group` 32-bit lanes (in processing order) to all groups.
#[inline]
#[target_feature(enable = "avx2")]
fn last_group<const REV: bool>(group: usize) -> __m256i {
    let mut index = [0i32; 8];
    for (j, slot) in index.iter_mut().enumerate() {
        *slot = if REV {
            j % group
        } else {
            8 - group + j % group
        } as i32;
    }
    lanes_i32(index)
}

/// One combine step `(A, X)_j ← (A, X)_{j−s} ∘ (A, X)_j` given the shifted registers.
#[inline(always)]
unsafe fn combine<L: Lane>(
    a: __m256,
    x: __m256,
    a_prev: __m256,
    x_prev: __m256,
) -> (__m256, __m256) {
    // SAFETY: the caller runs with AVX2 + FMA enabled.
    unsafe { (L::mul(a, a_prev), L::fma(a, x_prev, x)) }
}

/// Shift by `S` 32-bit lanes inside each 128-bit half (toward later time), filling the
/// emptied lanes with the identity (1 for A, 0 for X).
#[inline(always)]
unsafe fn step_in_half<L: Lane, const REV: bool, const S: usize>(
    a: __m256,
    x: __m256,
    one: __m256,
) -> (__m256, __m256) {
    // SAFETY: the caller runs with AVX2 + FMA enabled.
    unsafe {
        let (ai, xi) = (_mm256_castps_si256(a), _mm256_castps_si256(x));
        let (a_prev, x_prev) = match (REV, S) {
            (false, 1) => (
                _mm256_blend_ps::<0x11>(_mm256_castsi256_ps(_mm256_slli_si256::<4>(ai)), one),
                _mm256_castsi256_ps(_mm256_slli_si256::<4>(xi)),
            ),
            (false, _) => (
                _mm256_blend_ps::<0x33>(_mm256_castsi256_ps(_mm256_slli_si256::<8>(ai)), one),
                _mm256_castsi256_ps(_mm256_slli_si256::<8>(xi)),
            ),
            (true, 1) => (
                _mm256_blend_ps::<0x88>(_mm256_castsi256_ps(_mm256_srli_si256::<4>(ai)), one),
                _mm256_castsi256_ps(_mm256_srli_si256::<4>(xi)),
            ),
            (true, _) => (
                _mm256_blend_ps::<0xCC>(_mm256_castsi256_ps(_mm256_srli_si256::<8>(ai)), one),
                _mm256_castsi256_ps(_mm256_srli_si256::<8>(xi)),
            ),
        };
        combine::<L>(a, x, a_prev, x_prev)
    }
}

/// The step across the two halves: the upper half (lower, in reverse) is composed after
/// the last group of the other half.
#[inline(always)]
unsafe fn step_across<L: Lane, const REV: bool, const GROUP: usize>(
    a: __m256,
    x: __m256,
    one: __m256,
) -> (__m256, __m256) {
    // SAFETY: the caller runs with AVX2 + FMA enabled.
    unsafe {
        let zero = _mm256_setzero_ps();
        // First broadcast the boundary group within each half, then move it across.
        let spread = |v: __m256| match (REV, GROUP) {
            (_, 4) => v,
            (false, 2) => _mm256_permute_ps::<0xEE>(v),
            (false, _) => _mm256_permute_ps::<0xFF>(v),
            (true, 2) => _mm256_permute_ps::<0x44>(v),
            (true, _) => _mm256_permute_ps::<0x00>(v),
        };
        let (sa, sx) = (spread(a), spread(x));
        let (a_prev, x_prev) = if REV {
            (
                _mm256_permute2f128_ps::<0x31>(sa, one),
                _mm256_permute2f128_ps::<0x31>(sx, zero),
            )
        } else {
            (
                _mm256_permute2f128_ps::<0x02>(sa, one),
                _mm256_permute2f128_ps::<0x02>(sx, zero),
            )
        };
        combine::<L>(a, x, a_prev, x_prev)
    }
}

/// Scans one register in place: (A, X) become prefix compositions within it.
#[inline(always)]
unsafe fn local<L: Lane, const REV: bool, const GROUP: usize>(
    a: __m256,
    x: __m256,
    one: __m256,
) -> (__m256, __m256) {
    // SAFETY: the caller runs with AVX2 + FMA enabled.
    unsafe {
        let (mut a, mut x) = (a, x);
        if GROUP == 1 {
            (a, x) = step_in_half::<L, REV, 1>(a, x, one);
        }
        if GROUP <= 2 {
            (a, x) = step_in_half::<L, REV, 2>(a, x, one);
        }
        step_across::<L, REV, GROUP>(a, x, one)
    }
}

/// A register holding `values[e % width]` in element e.
#[inline(always)]
unsafe fn pattern<L: Lane>(values: &[L], width: usize) -> __m256 {
    let mut lanes = [L::zero(); 8];
    for (e, lane) in lanes.iter_mut().take(L::PER_REG).enumerate() {
        *lane = values[e % width];
    }
    // SAFETY: the local array holds at least PER_REG elements.
    unsafe { L::load(lanes.as_ptr()) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<L: Lane, const REV: bool, const MODE: u8, const GROUP: usize>(
    (bases, n_elems, width): (Bases<L>, usize, usize),
    carry: &mut [L],
    product: &mut [L],
) {
    let per = L::PER_REG;
    debug_assert_eq!(GROUP, width * L::WIDTH32);
    let last = last_group::<REV>(GROUP);
    // SAFETY: AVX is enabled for this function.
    let one = unsafe { L::splat(L::one()) };
    let zero = _mm256_setzero_ps();
    // SAFETY: throughout this body, every register access below is at an offset < n_elems from a
    // base that addresses n_elems valid elements (the caller's contract).
    // SAFETY: `carry` holds `width` values; AVX is enabled for this function.
    let mut state = unsafe { pattern(carry, width) };
    // SAFETY: as above, for `product`.
    let mut prod = unsafe { pattern(product, width) };

    let n_regs = n_elems / per;
    let tail = n_elems - n_regs * per;
    // Element offset of register k in processing order.
    let offset = |k: usize| -> usize {
        if REV {
            tail + (n_regs - 1 - k) * per
        } else {
            k * per
        }
    };
    // SAFETY: AVX2 + FMA are enabled for this function.
    let local = |a: __m256, x: __m256| unsafe { local::<L, REV, GROUP>(a, x, one) };
    let emit = |k: usize, h: __m256| {
        let o = offset(k);
        // SAFETY: o + per <= n_elems.
        unsafe {
            if MODE != REDUCE {
                L::store(bases.out.add(o), h);
            }
            if MODE == SCAN_FUSED {
                let prev = L::load(bases.prev_state.add(o));
                L::store(bases.grad_decay.add(o), L::mul(prev, h));
            }
        }
    };

    // Loads registers k..k+4 and turns them into prefix compositions from the block's
    // start: each register is scanned in place, then pairs are composed, then the second
    // pair after the first (two dependent links instead of three).
    let prepare = |k: usize| -> ([__m256; 4], [__m256; 4]) {
        let mut a = [zero; 4];
        let mut x = [zero; 4];
        for j in 0..4 {
            let o = offset(k + j);
            // SAFETY: o + per <= n_elems.
            let (aj, xj) = unsafe { (L::load(bases.decay.add(o)), L::load(bases.impulse.add(o))) };
            (a[j], x[j]) = local(aj, xj);
        }
        let after = |a: &mut [__m256; 4], x: &mut [__m256; 4], from: usize, to: usize| {
            let a_before = _mm256_permutevar8x32_ps(a[from], last);
            let x_before = _mm256_permutevar8x32_ps(x[from], last);
            // SAFETY: AVX2 + FMA are enabled for this function.
            unsafe {
                x[to] = L::fma(a[to], x_before, x[to]);
                a[to] = L::mul(a[to], a_before);
            }
        };
        after(&mut a, &mut x, 0, 1);
        after(&mut a, &mut x, 2, 3);
        let a_before = _mm256_permutevar8x32_ps(a[1], last);
        let x_before = _mm256_permutevar8x32_ps(x[1], last);
        for j in 2..4 {
            // SAFETY: AVX2 + FMA are enabled for this function.
            unsafe {
                x[j] = L::fma(a[j], x_before, x[j]);
                a[j] = L::mul(a[j], a_before);
            }
        }
        (a, x)
    };
    // Non-finite states: the compositions above multiply decays together, and a product
    // that underflows to 0 turns an infinite state into NaN where the serial loop keeps the
    // infinity (see `scan_core`'s contract; a reduction owes its state the same classes, as
    // it is a chunk map's impulse). So the first register group with a non-finite state is
    // neither written nor composed into the product; the job continues from the state before it with the serial
    // loop, which gives the serial IEEE result by construction. Finite data never pays more
    // than a multiply and an OR per register.
    // SAFETY: AVX is enabled for this function.
    let not_finite = |h: &[__m256]| unsafe {
        let mut any = zero;
        for &v in h {
            any = _mm256_or_ps(any, L::mul(v, zero));
        }
        _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(any, any)) != 0
    };
    let mut serial_from = None;
    // Registers to prefetch ahead (see `super::PREFETCH_BYTES`), four at a time: the
    // lowest address of the four and the 128 bytes from it (the next group's prefetch
    // covers a line the four straddle).
    let ahead = super::PREFETCH_BYTES / 32;
    let mut k = 0;
    while k + 4 <= n_regs {
        if k + ahead + 4 <= n_regs {
            let lowest = offset(k + ahead).min(offset(k + ahead + 3));
            bases.prefetch::<MODE>(lowest, 128);
        }
        let (a, x) = prepare(k);
        let mut h = [zero; 4];
        for j in 0..4 {
            // SAFETY: AVX2 + FMA are enabled for this function.
            h[j] = unsafe { L::fma(a[j], state, x[j]) };
        }
        if not_finite(&h) {
            serial_from = Some(k);
            break;
        }
        for (j, &h) in h.iter().enumerate() {
            emit(k + j, h);
        }
        state = _mm256_permutevar8x32_ps(h[3], last);
        if MODE == REDUCE {
            // SAFETY: AVX is enabled for this function.
            prod = unsafe { L::flush(L::mul(prod, _mm256_permutevar8x32_ps(a[3], last))) };
        }
        k += 4;
    }
    while serial_from.is_none() && k < n_regs {
        let o = offset(k);
        // SAFETY: o + per <= n_elems.
        let (a, x) = local(unsafe { L::load(bases.decay.add(o)) }, unsafe {
            L::load(bases.impulse.add(o))
        });
        // SAFETY: AVX2 + FMA are enabled for this function.
        let h = unsafe { L::fma(a, state, x) };
        if not_finite(&[h]) {
            serial_from = Some(k);
            break;
        }
        emit(k, h);
        state = _mm256_permutevar8x32_ps(h, last);
        if MODE == REDUCE {
            // SAFETY: AVX is enabled for this function.
            prod = unsafe { L::flush(L::mul(prod, _mm256_permutevar8x32_ps(a, last))) };
        }
        k += 1;
    }

    // Back to one value per feature, then the leftover steps one element at a time.
    let mut lanes = [L::zero(); 8];
    // SAFETY: the local array has room for a whole register.
    unsafe { L::store(lanes.as_mut_ptr(), state) };
    carry.copy_from_slice(&lanes[..width]);
    // SAFETY: as above.
    unsafe { L::store(lanes.as_mut_ptr(), prod) };
    if MODE == REDUCE {
        product.copy_from_slice(&lanes[..width]);
    }
    // The elements left in processing order: the tail, or everything from the register
    // where a non-finite output appeared.
    // SAFETY: every element index below is < n_elems.
    unsafe {
        match (REV, serial_from) {
            (true, None) => {
                serial_elements::<L, MODE>(bases, (0..tail).rev(), width, carry, product)
            }
            (true, Some(k)) => {
                serial_elements::<L, MODE>(bases, (0..offset(k) + per).rev(), width, carry, product)
            }
            (false, None) => {
                serial_elements::<L, MODE>(bases, n_regs * per..n_elems, width, carry, product)
            }
            (false, Some(k)) => {
                serial_elements::<L, MODE>(bases, offset(k)..n_elems, width, carry, product)
            }
        }
    }
}

/// The serial loop over the given elements (in processing order) of a flat job: what the
/// in-register kernels run for their leftover elements and after a non-finite output.
///
/// # Safety
/// Every element index is below the job's element count.
#[inline(always)]
pub(super) unsafe fn serial_elements<L: Lane, const MODE: u8>(
    bases: Bases<L>,
    elements: impl Iterator<Item = usize>,
    width: usize,
    carry: &mut [L],
    product: &mut [L],
) {
    for e in elements {
        let f = e % width;
        // SAFETY: e < n_elems (the caller's contract).
        unsafe {
            let a = *bases.decay.add(e);
            let h = L::madd(a, carry[f], *bases.impulse.add(e));
            carry[f] = h;
            if MODE == REDUCE {
                product[f] = L::flush1(L::mul1(product[f], a));
            } else {
                *bases.out.add(e) = h;
            }
            if MODE == SCAN_FUSED {
                *bases.grad_decay.add(e) = L::mul1(*bases.prev_state.add(e), h);
            }
        }
    }
}
