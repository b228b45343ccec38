//! The loop over time, vectorized across features.
//!
//! Narrow jobs keep each block of up to 64 features' states in registers and walk the
//! rows in tiles (so a row's cache lines are read once for all its blocks); wide jobs
//! walk whole rows with the state in a buffer. Non-contiguous rows fall back to a
//! scalar strided loop. The same code is compiled three times: with AVX-512, with
//! AVX2 + FMA (each chosen at run time when the CPU has it) and for the build's baseline
//! target.

use std::ops::Range;

use scan_core::Element;

use super::{flush_subnormal, prefetch, InstructionSet, Isa, Job, PREFETCH_BYTES};

/// Widths above this walk whole rows with the state in memory.
const WIDE: usize = 64;
/// Rows per tile in the narrow path.
const TILE_ROWS: usize = 256;
/// When a loop over `n_rows` rows `row_stride` elements apart prefetches: `(rows ahead,
/// every how many rows)` — once per cache line, and not at all when the job has no more
/// rows than the distance (a short job's data is in cache already or not worth a hint).
/// Near a job's end the hints point past it, which is harmless.
fn prefetch_plan<E>(row_stride: isize, n_rows: usize) -> Option<(usize, usize)> {
    let row_bytes = row_stride
        .unsigned_abs()
        .saturating_mul(std::mem::size_of::<E>());
    let ahead = (PREFETCH_BYTES / row_bytes.max(1)).max(1);
    let per_line = (64 / row_bytes.max(1)).max(1);
    // A power of two, so that the test per row is a mask.
    let every = 1 << per_line.ilog2();
    (n_rows > ahead).then_some((ahead, every))
}

/// Prefetches row `i` of every sequence the job reads, and of those it writes unless
/// `streamed` (written past the cache), `bytes` from column `col`.
#[inline(always)]
fn prefetch_row<E>(job: &Job<E>, i: usize, col: usize, bytes: usize, streamed: bool) {
    prefetch(job.decay.at(i, col), bytes);
    prefetch(job.impulse.at(i, col), bytes);
    if let Some(fused) = job.fused {
        prefetch(fused.prev_state.at(i, col), bytes);
    }
    if !streamed {
        prefetch(job.out.at(i, col), bytes);
        if let Some(fused) = job.fused {
            prefetch(fused.grad_decay.at(i, col), bytes);
        }
    }
}

/// How `a·b + c` is evaluated.
trait MulAdd {
    fn madd<E: Element>(a: E, b: E, c: E) -> E;
}

/// One rounding: compiles to an FMA instruction where the target has one.
struct Fused;
impl MulAdd for Fused {
    #[inline(always)]
    fn madd<E: Element>(a: E, b: E, c: E) -> E {
        a.mul_add(b, c)
    }
}

/// Two roundings: the baseline target has no FMA instruction (and a library call would
/// be far slower).
struct Unfused;
impl MulAdd for Unfused {
    #[inline(always)]
    fn madd<E: Element>(a: E, b: E, c: E) -> E {
        a * b + c
    }
}

/// What one pass computes per step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Write the states.
    Scan,
    /// Write the states and ∂L/∂a = prev_state · state.
    ScanFused,
    /// Write nothing; accumulate the product of decays.
    Reduce,
}

/// Runs the job from `carry`; see [`super::scan`].
///
/// # Safety
/// As for [`super::scan`].
pub(crate) unsafe fn scan<E: Element>(job: &Job<E>, carry: &mut [E], isa: Isa) {
    let pass = if job.fused.is_some() {
        Pass::ScanFused
    } else {
        Pass::Scan
    };
    let mut unused: [E; 0] = [];
    // SAFETY: the caller guarantees every sequence addresses n_rows × width valid elements
    // with outputs not aliasing inputs; the AVX2 variant only runs when detected.
    unsafe { dispatch(job, carry, &mut unused, pass, isa) }
}

/// Composes the job's steps; see [`super::reduce`].
///
/// # Safety
/// As for [`super::reduce`].
pub(crate) unsafe fn reduce<E: Element>(job: &Job<E>, product: &mut [E], acc: &mut [E], isa: Isa) {
    // SAFETY: the caller guarantees every sequence addresses n_rows × width valid elements
    // with outputs not aliasing inputs; the AVX2 variant only runs when detected.
    unsafe { dispatch(job, acc, product, Pass::Reduce, isa) }
}

unsafe fn dispatch<E: Element>(
    job: &Job<E>,
    carry: &mut [E],
    product: &mut [E],
    pass: Pass,
    isa: Isa,
) {
    match isa.get() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` is only made for instruction sets the CPU supports (`Isa::checked`,
        // `Isa::detect`), so AVX-512 F/VL, AVX2 and FMA are present.
        InstructionSet::Avx512 => unsafe { run_avx512(job, carry, product, pass) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, AVX2 and FMA are present.
        InstructionSet::Avx2 => unsafe { run_avx2(job, carry, product, pass) },
        // SAFETY: the caller guarantees every sequence addresses n_rows × width valid
        // elements and that outputs alias neither inputs nor each other.
        _ => unsafe { run::<E, Unfused>(job, carry, product, pass) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<E: Element>(job: &Job<E>, carry: &mut [E], product: &mut [E], pass: Pass) {
    // SAFETY: the caller guarantees every sequence addresses n_rows × width valid
    // elements and that outputs alias neither inputs nor each other.
    unsafe { run::<E, Fused>(job, carry, product, pass) }
}

/// The same loops compiled for AVX-512: LLVM vectorizes them with 512-bit registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn run_avx512<E: Element>(job: &Job<E>, carry: &mut [E], product: &mut [E], pass: Pass) {
    // SAFETY: the caller guarantees every sequence addresses n_rows × width valid
    // elements and that outputs alias neither inputs nor each other.
    unsafe { run::<E, Fused>(job, carry, product, pass) }
}

#[inline(always)]
unsafe fn run<E: Element, M: MulAdd>(job: &Job<E>, carry: &mut [E], product: &mut [E], pass: Pass) {
    // SAFETY: for all calls below, the caller's contract; each helper reads and writes only
    // rows < n_rows and columns < width of the job's sequences.
    unsafe {
        if !job.rows_contiguous() {
            strided::<E, M>(job, carry, product, pass);
        } else if job.width > WIDE {
            match pass {
                Pass::Scan => rows_wide::<E, M, 0>(job, carry, product),
                Pass::ScanFused => rows_wide::<E, M, 1>(job, carry, product),
                Pass::Reduce => rows_wide::<E, M, 2>(job, carry, product),
            }
        } else {
            match pass {
                Pass::Scan => rows_narrow::<E, M, 0>(job, carry, product),
                Pass::ScanFused => rows_narrow::<E, M, 1>(job, carry, product),
                Pass::Reduce => rows_narrow::<E, M, 2>(job, carry, product),
            }
        }
    }
    fence_streams(job.stream);
}

/// Pass encoded as a const: 0 scan, 1 scan + fused ∂L/∂a, 2 reduce.
const SCAN_FUSED: u8 = 1;
const REDUCE: u8 = 2;

#[inline(always)]
unsafe fn rows_narrow<E: Element, M: MulAdd, const PASS: u8>(
    job: &Job<E>,
    carry: &mut [E],
    product: &mut [E],
) {
    let mut start = 0;
    while start < job.n_rows {
        let rows = start..(start + TILE_ROWS).min(job.n_rows);
        let mut col = 0;
        // Greedy blocks of 64, 32, ..., 1 features, each with its state in registers.
        while col < job.width {
            let left = job.width - col;
            // SAFETY: the block lies inside the job.
            unsafe {
                match left {
                    64.. => block::<E, M, PASS, 64>(job, col, rows.clone(), carry, product),
                    32.. => block::<E, M, PASS, 32>(job, col, rows.clone(), carry, product),
                    16.. => block::<E, M, PASS, 16>(job, col, rows.clone(), carry, product),
                    8.. => block::<E, M, PASS, 8>(job, col, rows.clone(), carry, product),
                    4.. => block::<E, M, PASS, 4>(job, col, rows.clone(), carry, product),
                    2.. => block::<E, M, PASS, 2>(job, col, rows.clone(), carry, product),
                    _ => block::<E, M, PASS, 1>(job, col, rows.clone(), carry, product),
                }
            }
            col += match left {
                64.. => 64,
                32.. => 32,
                16.. => 16,
                8.. => 8,
                4.. => 4,
                2.. => 2,
                _ => 1,
            };
        }
        start = rows.end;
    }
}

/// Writes `values` to `dst`, with streaming stores for the 32-byte-aligned part when
/// `stream` is set (only ever on CPUs with AVX; the caller fences before returning).
/// Only the wide path streams: narrow blocks write a fraction of a cache line per row,
/// which streaming stores would turn into partial-line writes (measured 3× slower), and
/// passing their register-held state by reference would put it in memory.
#[inline(always)]
unsafe fn store_row<E: Copy>(dst: *mut E, values: &[E], stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if stream {
        use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_stream_si256};
        let size = std::mem::size_of::<E>();
        let misaligned = (dst as usize) % 32;
        if misaligned.is_multiple_of(size) {
            let head = ((32 - misaligned) % 32 / size).min(values.len());
            let per = 32 / size;
            let body = (values.len() - head) / per * per;
            // SAFETY: `dst` has room for `values.len()` elements (the caller's contract);
            // the streamed part starts 32-byte aligned and covers whole 32-byte blocks
            // inside that range; AVX is present whenever `stream` is set.
            unsafe {
                std::ptr::copy_nonoverlapping(values.as_ptr(), dst, head);
                let mut i = head;
                while i < head + body {
                    let v = _mm256_loadu_si256(values.as_ptr().add(i).cast::<__m256i>());
                    _mm256_stream_si256(dst.add(i).cast::<__m256i>(), v);
                    i += per;
                }
                std::ptr::copy_nonoverlapping(values.as_ptr().add(i), dst.add(i), values.len() - i);
            }
            return;
        }
    }
    let _ = stream;
    // SAFETY: `dst` has room for `values.len()` elements and does not overlap `values`.
    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), dst, values.len()) }
}

/// Orders streaming stores before whatever the thread does next (e.g. signalling that
/// its outputs are ready).
#[inline(always)]
fn fence_streams(stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if stream {
        // SAFETY: SFENCE is part of SSE, which every x86-64 CPU has.
        unsafe { std::arch::x86_64::_mm_sfence() };
    }
    let _ = stream;
}

#[inline(always)]
unsafe fn read<E: Copy, const B: usize>(ptr: *const E) -> [E; B] {
    // SAFETY: the caller guarantees `B` readable contiguous elements at `ptr`.
    unsafe { ptr.cast::<[E; B]>().read_unaligned() }
}

#[inline(always)]
unsafe fn write<E: Copy, const B: usize>(ptr: *mut E, values: [E; B]) {
    // SAFETY: the caller guarantees `B` writable contiguous elements at `ptr`.
    unsafe { ptr.cast::<[E; B]>().write_unaligned(values) }
}

#[inline(always)]
unsafe fn block<E: Element, M: MulAdd, const PASS: u8, const B: usize>(
    job: &Job<E>,
    col: usize,
    rows: Range<usize>,
    carry: &mut [E],
    product: &mut [E],
) {
    let mut state: [E; B] = carry[col..col + B].try_into().expect("block width");
    let mut prod: [E; B] = [E::one(); B];
    if PASS == REDUCE {
        prod.copy_from_slice(&product[col..col + B]);
    }
    let plan = prefetch_plan::<E>(job.decay.row, job.n_rows);
    for i in rows {
        if let Some((ahead, every)) = plan {
            if i & (every - 1) == 0 {
                // Narrow blocks never stream (see `store_row`).
                prefetch_row(job, i + ahead, col, B * std::mem::size_of::<E>(), false);
            }
        }
        // SAFETY: row i < n_rows and columns col..col+B < width are inside every sequence,
        // whose rows are contiguous (unit column stride).
        unsafe {
            let a: [E; B] = read(job.decay.at(i, col));
            let x: [E; B] = read(job.impulse.at(i, col));
            for f in 0..B {
                state[f] = M::madd(a[f], state[f], x[f]);
            }
            if PASS == REDUCE {
                for f in 0..B {
                    prod[f] = flush_subnormal(prod[f] * a[f]);
                }
            } else {
                write(job.out.at(i, col), state);
            }
            if PASS == SCAN_FUSED {
                let fused = job.fused.expect("fused pass has fused sequences");
                let prev: [E; B] = read(fused.prev_state.at(i, col));
                let mut grad = [E::zero(); B];
                for f in 0..B {
                    grad[f] = prev[f] * state[f];
                }
                write(fused.grad_decay.at(i, col), grad);
            }
        }
    }
    carry[col..col + B].copy_from_slice(&state);
    if PASS == REDUCE {
        product[col..col + B].copy_from_slice(&prod);
    }
}

#[inline(always)]
unsafe fn rows_wide<E: Element, M: MulAdd, const PASS: u8>(
    job: &Job<E>,
    carry: &mut [E],
    product: &mut [E],
) {
    let w = job.width;
    // ∂L/∂a, built here a piece of a row at a time (on the stack: no allocation per call)
    // and then stored (streamed past the cache if asked).
    const PIECE: usize = 256;
    let mut grad = [E::zero(); PIECE];
    let ahead = prefetch_plan::<E>(job.decay.row, job.n_rows).map(|(ahead, _)| ahead);
    for i in 0..job.n_rows {
        if let Some(ahead) = ahead {
            // The start of the row ahead: the hardware follows the rest of a row, which
            // ascends (a whole 256 KiB row ahead measured slower).
            let bytes = (w * std::mem::size_of::<E>()).min(PREFETCH_BYTES);
            prefetch_row(job, i + ahead, 0, bytes, job.stream);
        }
        // SAFETY: row i of every sequence holds `w` contiguous elements; outputs do not
        // overlap inputs (they come from distinct ndarray borrows), so the shared slices
        // below never alias the rows written through `store_row`.
        unsafe {
            let a = std::slice::from_raw_parts(job.decay.at(i, 0), w);
            let x = std::slice::from_raw_parts(job.impulse.at(i, 0), w);
            for ((h, &a), &x) in carry.iter_mut().zip(a).zip(x) {
                *h = M::madd(a, *h, x);
            }
            if PASS == REDUCE {
                for (p, &a) in product.iter_mut().zip(a) {
                    *p = flush_subnormal(*p * a);
                }
            } else {
                store_row(job.out.at(i, 0), carry, job.stream);
            }
            if PASS == SCAN_FUSED {
                let fused = job.fused.expect("fused pass has fused sequences");
                let prev = std::slice::from_raw_parts(fused.prev_state.at(i, 0), w);
                for (start, (prev, state)) in
                    prev.chunks(PIECE).zip(carry.chunks(PIECE)).enumerate()
                {
                    let grad = &mut grad[..prev.len()];
                    for ((g, &p), &h) in grad.iter_mut().zip(prev).zip(state) {
                        *g = p * h;
                    }
                    store_row(fused.grad_decay.at(i, start * PIECE), grad, job.stream);
                }
            }
        }
    }
}

/// Any strides: a scalar loop, row by row.
#[inline(always)]
unsafe fn strided<E: Element, M: MulAdd>(
    job: &Job<E>,
    carry: &mut [E],
    product: &mut [E],
    pass: Pass,
) {
    for i in 0..job.n_rows {
        for f in 0..job.width {
            // SAFETY: (i, f) is inside every sequence of the job.
            unsafe {
                let a = *job.decay.at(i, f);
                let h = M::madd(a, carry[f], *job.impulse.at(i, f));
                carry[f] = h;
                match pass {
                    Pass::Reduce => product[f] = flush_subnormal(product[f] * a),
                    Pass::Scan => *job.out.at(i, f) = h,
                    Pass::ScanFused => {
                        *job.out.at(i, f) = h;
                        let fused = job.fused.expect("fused pass has fused sequences");
                        *fused.grad_decay.at(i, f) = *fused.prev_state.at(i, f) * h;
                    }
                }
            }
        }
    }
}
