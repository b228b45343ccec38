//! In-register scans with 512-bit registers (AVX-512 F), for the narrow contiguous jobs of
//! `flat_x86` on CPUs that have AVX-512.
//!
//! The AVX2 kernel is bound by its shuffles (about ten per 8 lanes: in-lane shifts, the
//! 128-bit halves, the group compositions). Here a shift by any number of lanes toward
//! later time is one `valignd` with the identity shifted in, so a register of 16 lanes is
//! scanned with log₂(16/width) shift-and-combine steps, and the state is applied to every
//! register as it comes (one FMA and one permute on the chain per 16 lanes): about half the
//! shuffles per element. Registers are seen as sixteen 32-bit lanes whatever the element
//! type (an f64 is two lanes), as in `flat_x86`.

use std::arch::x86_64::*;

use super::flat_x86::{serial_elements, Bases, Lane, REDUCE, SCAN_FUSED};

/// The element-type-specific 512-bit operations.
pub(super) trait Wide: Lane {
    unsafe fn load512(p: *const Self) -> __m512;
    unsafe fn store512(p: *mut Self, v: __m512);
    unsafe fn mul512(a: __m512, b: __m512) -> __m512;
    /// `v` with every element below the smallest normal number in magnitude set to zero.
    unsafe fn flush512(v: __m512) -> __m512;
    /// `a·b + c` with one rounding.
    unsafe fn fma512(a: __m512, b: __m512, c: __m512) -> __m512;
    unsafe fn splat512(v: Self) -> __m512;
}

impl Wide for f32 {
    #[inline(always)]
    unsafe fn load512(p: *const Self) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats at `p` and AVX-512 F.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store512(p: *mut Self, v: __m512) {
        // SAFETY: the caller guarantees 16 writable floats at `p` and AVX-512 F.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn mul512(a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512 F is enabled by the calling kernel.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn flush512(v: __m512) -> __m512 {
        // SAFETY: AVX-512 F is enabled by the calling kernel.
        unsafe {
            let min = _mm512_set1_ps(f32::MIN_POSITIVE);
            let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(v), min);
            _mm512_mask_mov_ps(v, tiny, _mm512_setzero_ps())
        }
    }
    #[inline(always)]
    unsafe fn fma512(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: AVX-512 F is enabled by the calling kernel.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn splat512(v: Self) -> __m512 {
        // SAFETY: AVX-512 F is enabled by the calling kernel.
        unsafe { _mm512_set1_ps(v) }
    }
}

impl Wide for f64 {
    #[inline(always)]
    unsafe fn load512(p: *const Self) -> __m512 {
        // SAFETY: the caller guarantees 8 readable doubles at `p` and AVX-512 F.
        unsafe { _mm512_castpd_ps(_mm512_loadu_pd(p)) }
    }
    #[inline(always)]
    unsafe fn store512(p: *mut Self, v: __m512) {
        // SAFETY: the caller guarantees 8 writable doubles at `p` and AVX-512 F.
        unsafe { _mm512_storeu_pd(p, _mm512_castps_pd(v)) }
    }
    #[inline(always)]
    unsafe fn mul512(a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512 F is enabled by the calling kernel.
        unsafe { _mm512_castpd_ps(_mm512_mul_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))) }
    }
    #[inline(always)]
    unsafe fn flush512(v: __m512) -> __m512 {
        // SAFETY: AVX-512 F is enabled by the calling kernel.
        unsafe {
            let v = _mm512_castps_pd(v);
            let min = _mm512_set1_pd(f64::MIN_POSITIVE);
            let tiny = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_abs_pd(v), min);
            _mm512_castpd_ps(_mm512_mask_mov_pd(v, tiny, _mm512_setzero_pd()))
        }
    }
    #[inline(always)]
    unsafe fn fma512(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: AVX-512 F is enabled by the calling kernel.
        unsafe {
            _mm512_castpd_ps(_mm512_fmadd_pd(
                _mm512_castps_pd(a),
                _mm512_castps_pd(b),
                _mm512_castps_pd(c),
            ))
        }
    }
    #[inline(always)]
    unsafe fn splat512(v: Self) -> __m512 {
        // SAFETY: AVX-512 F is enabled by the calling kernel.
        unsafe { _mm512_castpd_ps(_mm512_set1_pd(v)) }
    }
}

/// `v` moved `lanes` 32-bit lanes (1, 2, 4 or 8) toward later time in processing order,
/// the emptied lanes taken from `fill`.
#[inline(always)]
unsafe fn shift<const REV: bool>(v: __m512, fill: __m512, lanes: usize) -> __m512 {
    // SAFETY: AVX-512 F is enabled by the calling kernel.
    unsafe {
        let (v, fill) = (_mm512_castps_si512(v), _mm512_castps_si512(fill));
        // Forward: lane j takes v[j − s] (fill below s): the top 16 lanes of (v : fill)
        // shifted right by 16 − s. Reverse: lane j takes v[j + s] (fill above 16 − s).
        let shifted = match (REV, lanes) {
            (false, 1) => _mm512_alignr_epi32::<15>(v, fill),
            (false, 2) => _mm512_alignr_epi32::<14>(v, fill),
            (false, 4) => _mm512_alignr_epi32::<12>(v, fill),
            (false, _) => _mm512_alignr_epi32::<8>(v, fill),
            (true, 1) => _mm512_alignr_epi32::<1>(fill, v),
            (true, 2) => _mm512_alignr_epi32::<2>(fill, v),
            (true, 4) => _mm512_alignr_epi32::<4>(fill, v),
            (true, _) => _mm512_alignr_epi32::<8>(fill, v),
        };
        _mm512_castsi512_ps(shifted)
    }
}

/// A register holding `values[e % width]` in element e.
#[inline(always)]
unsafe fn pattern<L: Wide>(values: &[L], width: usize) -> __m512 {
    let per = 16 / L::WIDTH32;
    let mut lanes = [L::zero(); 16];
    for (e, lane) in lanes.iter_mut().take(per).enumerate() {
        *lane = values[e % width];
    }
    // SAFETY: the local array holds at least 16 / WIDTH32 elements.
    unsafe { L::load512(lanes.as_ptr()) }
}

/// Scans the job's registers of 16 lanes in processing order, then the leftover elements
/// (and, from the first register with a non-finite output, everything) with the serial
/// loop, exactly as the AVX2 kernel does.
///
/// # Safety
/// As for `flat_x86::kernel`, and the CPU supports AVX-512 F.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub(super) unsafe fn kernel<L: Wide, const REV: bool, const MODE: u8, const GROUP: usize>(
    (bases, n_elems, width): (Bases<L>, usize, usize),
    carry: &mut [L],
    product: &mut [L],
) {
    let per = 16 / L::WIDTH32;
    let n_regs = n_elems / per;
    let tail = n_elems - n_regs * per;
    let offset = |k: usize| -> usize {
        if REV {
            tail + (n_regs - 1 - k) * per
        } else {
            k * per
        }
    };
    // The last group (in processing order) broadcast to every group.
    let mut index = [0i32; 16];
    for (j, slot) in index.iter_mut().enumerate() {
        *slot = if REV {
            j % GROUP
        } else {
            16 - GROUP + j % GROUP
        } as i32;
    }
    // SAFETY: reading 16 i32 from a local array; AVX-512 F is enabled.
    let last = unsafe { _mm512_loadu_si512(index.as_ptr().cast()) };
    // SAFETY: AVX-512 F is enabled for this function.
    let one = unsafe { L::splat512(L::one()) };
    let zero = _mm512_setzero_ps();
    // SAFETY: `carry` and `product` hold `width` values.
    let (mut state, mut prod) = unsafe { (pattern(carry, width), pattern(product, width)) };
    let mut serial_from = None;
    // Registers (one cache line each) to prefetch ahead; see `super::PREFETCH_BYTES`.
    let ahead = super::PREFETCH_BYTES / 64;
    for k in 0..n_regs {
        let o = offset(k);
        if k + ahead < n_regs {
            bases.prefetch::<MODE>(offset(k + ahead), 64);
        }
        // SAFETY: o + per <= n_elems for every base (the caller's contract); AVX-512 F,
        // AVX2 and FMA are enabled for this function.
        unsafe {
            let (mut a, mut x) = (
                L::load512(bases.decay.add(o)),
                L::load512(bases.impulse.add(o)),
            );
            let mut lanes = GROUP;
            while lanes < 16 {
                let a_prev = shift::<REV>(a, one, lanes);
                let x_prev = shift::<REV>(x, zero, lanes);
                x = L::fma512(a, x_prev, x);
                a = L::mul512(a, a_prev);
                lanes *= 2;
            }
            let h = L::fma512(a, state, x);
            // A non-finite state may be an underflowed product times ∞ (see `flat_x86`):
            // continue with the serial loop from this register.
            let check = L::mul512(h, zero);
            if _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(check, check) != 0 {
                serial_from = Some(k);
                break;
            }
            if MODE == REDUCE {
                prod = L::flush512(L::mul512(prod, _mm512_permutexvar_ps(last, a)));
            } else {
                L::store512(bases.out.add(o), h);
                if MODE == SCAN_FUSED {
                    let prev = L::load512(bases.prev_state.add(o));
                    L::store512(bases.grad_decay.add(o), L::mul512(prev, h));
                }
            }
            state = _mm512_permutexvar_ps(last, h);
        }
    }
    let mut lanes = [L::zero(); 16];
    // SAFETY: the local array has room for a whole register.
    unsafe { L::store512(lanes.as_mut_ptr(), state) };
    carry.copy_from_slice(&lanes[..width]);
    if MODE == REDUCE {
        // SAFETY: as above.
        unsafe { L::store512(lanes.as_mut_ptr(), prod) };
        product.copy_from_slice(&lanes[..width]);
    }
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
