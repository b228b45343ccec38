//! Inner loops over raw row sequences, and the run-time choice of instruction set.
//!
//! Everything above this module works on validated ndarray views; this module turns them
//! into [`Seq`]s (a base pointer and signed row and column strides, in elements) so the
//! kernels can walk memory in processing order whatever the layout. Two kernel families:
//!
//! * [`vertical`]: one loop over time, SIMD across features (auto-vectorized). This is the
//!   serial baseline's loop and the chunk loop of Algorithm 1 for wide problems.
//! * `flat_x86` (AVX2) and `flat_avx512`: for 1, 2 or 4 features stored contiguously (or
//!   one time-contiguous feature), a scan *inside* each 256- or 512-bit register (log-step
//!   shifts), which breaks the dependency chain over time without any change to the memory
//!   layout.
//!
//! Each is compiled for every instruction set it supports and chosen at run time through
//! [`Isa`], which can only be made for instruction sets the CPU has.

use scan_core::Element;

#[cfg(target_arch = "x86_64")]
mod flat_avx512;
#[cfg(target_arch = "x86_64")]
mod flat_x86;
pub(crate) mod vertical;

/// A strided 2-D sequence of elements: row `i`, column `f` is at `ptr + i·row + f·col`.
///
/// Rows are time steps in processing order; a negative row stride walks memory backwards.
#[derive(Debug)]
pub(crate) struct Seq<E> {
    pub ptr: *mut E,
    pub row: isize,
    pub col: isize,
}

impl<E> Clone for Seq<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for Seq<E> {}

// SAFETY: a `Seq` is an address plus strides; sending it between threads is sound because
// the engine only ever hands disjoint output rows/columns to different threads and the
// borrowed ndarray views it was made from outlive every parallel region (rayon scopes).
unsafe impl<E: Send> Send for Seq<E> {}
// SAFETY: as above; shared `Seq`s to inputs are only read.
unsafe impl<E: Sync> Sync for Seq<E> {}

impl<E> Seq<E> {
    /// The sequence starting `rows` rows and `cols` columns further.
    pub fn offset(self, rows: isize, cols: isize) -> Self {
        Self {
            // Pointer arithmetic with wrapping_offset is safe; validity is the caller's
            // concern when the pointer is dereferenced.
            ptr: self.ptr.wrapping_offset(rows * self.row + cols * self.col),
            ..self
        }
    }

    /// Address of row `i`, column `f`.
    #[inline(always)]
    pub fn at(self, i: usize, f: usize) -> *mut E {
        self.ptr
            .wrapping_offset(i as isize * self.row + f as isize * self.col)
    }
}

/// The backward pass's extra work fused into the scan: `grad_decay[t] = prev_state[t] · g[t]`.
#[derive(Debug)]
pub(crate) struct Fused<E> {
    /// The state before each step (h_{t-1}), aligned with the job's rows.
    pub prev_state: Seq<E>,
    /// Where ∂L/∂a is written.
    pub grad_decay: Seq<E>,
}

/// One linear recurrence over `n_rows` time steps (in processing order) of `width`
/// independent features: `out[i] = decay[i]·out[i-1] + impulse[i]`.
#[derive(Debug)]
pub(crate) struct Job<E> {
    pub n_rows: usize,
    pub width: usize,
    pub decay: Seq<E>,
    pub impulse: Seq<E>,
    pub out: Seq<E>,
    pub fused: Option<Fused<E>>,
    /// Write outputs with streaming (non-temporal) stores where rows allow: for problems
    /// larger than the cache, this saves reading every output line before writing it.
    pub stream: bool,
}

impl<E> Clone for Fused<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for Fused<E> {}
impl<E> Clone for Job<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for Job<E> {}

impl<E> Job<E> {
    /// Rows `start..start + n_rows` of this job.
    pub fn rows(&self, start: usize, n_rows: usize) -> Self {
        let r = start as isize;
        Self {
            n_rows,
            decay: self.decay.offset(r, 0),
            impulse: self.impulse.offset(r, 0),
            out: self.out.offset(r, 0),
            fused: self.fused.map(|f| Fused {
                prev_state: f.prev_state.offset(r, 0),
                grad_decay: f.grad_decay.offset(r, 0),
            }),
            ..*self
        }
    }

    /// Columns `start..start + width` of this job.
    pub fn cols(&self, start: usize, width: usize) -> Self {
        let c = start as isize;
        Self {
            width,
            decay: self.decay.offset(0, c),
            impulse: self.impulse.offset(0, c),
            out: self.out.offset(0, c),
            fused: self.fused.map(|f| Fused {
                prev_state: f.prev_state.offset(0, c),
                grad_decay: f.grad_decay.offset(0, c),
            }),
            ..*self
        }
    }

    fn seqs(&self) -> impl Iterator<Item = Seq<E>> + '_ {
        [self.decay, self.impulse, self.out]
            .into_iter()
            .chain(self.fused.iter().flat_map(|f| [f.prev_state, f.grad_decay]))
    }

    /// Whether every row is contiguous (unit column stride), so rows vectorize.
    pub fn rows_contiguous(&self) -> bool {
        self.width <= 1 || self.seqs().all(|s| s.col == 1)
    }

    /// The signed row stride shared by all sequences if the job is one contiguous run of
    /// memory (rows back to back), which the in-register kernels need.
    pub(crate) fn flat_stride(&self) -> Option<isize> {
        let w = self.width as isize;
        if !self.rows_contiguous() || self.n_rows == 0 {
            return None;
        }
        let row = self.decay.row;
        (row.abs() == w && self.seqs().all(|s| s.row == row)).then_some(row)
    }
}

/// An instruction set the kernels are compiled for; the best one the CPU supports is
/// chosen at run time, and a caller may ask for a lower one (to compare them, or to test
/// every path on one machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InstructionSet {
    /// Whatever the build's baseline target offers (SSE2 on x86-64).
    Baseline,
    /// AVX2 with fused multiply-add (x86-64).
    Avx2,
    /// AVX-512 (F and VL) with AVX2 and fused multiply-add (x86-64).
    Avx512,
}

impl InstructionSet {
    /// Every instruction set, lowest first.
    pub const ALL: [Self; 3] = [Self::Baseline, Self::Avx2, Self::Avx512];

    /// Whether this CPU can run the kernels of this instruction set (detected once per
    /// process).
    pub fn is_supported(self) -> bool {
        static DETECTED: std::sync::OnceLock<InstructionSet> = std::sync::OnceLock::new();
        self <= *DETECTED.get_or_init(detect)
    }

    /// The best instruction set this CPU supports.
    pub fn detected() -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_supported())
            .unwrap_or(Self::Baseline)
    }

    /// The instruction sets this CPU supports, lowest first.
    pub fn supported() -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The name used by `scan_bench --isa` and in reports: `baseline`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }
}

impl std::str::FromStr for InstructionSet {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|isa| isa.name() == name)
            .ok_or_else(|| format!("unknown instruction set `{name}` (baseline, avx2, avx512)"))
    }
}

fn detect() -> InstructionSet {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        if avx2 && has!("avx512f") && has!("avx512vl") {
            return InstructionSet::Avx512;
        }
        if avx2 {
            return InstructionSet::Avx2;
        }
    }
    InstructionSet::Baseline
}

/// An instruction set the CPU has been checked to support: the only way kernels are
/// chosen, so an `Isa::Avx512` value proves that AVX-512 F/VL, AVX2 and FMA are present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Isa(InstructionSet);

impl Isa {
    /// The best instruction set of this CPU.
    pub fn detect() -> Self {
        Self(InstructionSet::detected())
    }

    /// `wanted` if this CPU supports it.
    pub fn checked(wanted: InstructionSet) -> Option<Self> {
        wanted.is_supported().then_some(Self(wanted))
    }

    /// The instruction set.
    pub fn get(self) -> InstructionSet {
        self.0
    }

    /// Whether AVX2 and FMA are available (true for AVX-512 too).
    pub fn has_avx2(self) -> bool {
        self.0 >= InstructionSet::Avx2
    }
}

/// Which kernels a backend may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelSet {
    /// Only the loop over time (the serial baseline).
    TimeLoop,
    /// Also the in-register scans for narrow problems.
    InRegister,
}

/// Jobs with fewer elements run the loop over time even where an in-register kernel
/// applies: below a few registers' worth per chunk its set-up (lane patterns, the group
/// composition) costs more than the dependency chain it saves (measured at T = 16, F = 4).
const IN_REGISTER_MIN_ELEMS: usize = 256;

/// Widest rows (in bytes) for which the backward pass uses the in-register kernels. The
/// fused backward pass moves 20 bytes per element instead of 12; from 16-byte rows on (four
/// f32 features) the loop over time, with four features in flight, already waits on memory
/// rather than on its chain of FMAs, and the in-register kernel measured 0.65× of it on the
/// Xeon (issue 13), while at 4- and 8-byte rows it is 1.9× faster.
const IN_REGISTER_MAX_FUSED_ROW_BYTES: usize = 8;

/// Whether the in-register kernels may take `job`.
fn in_register<E>(job: &Job<E>, isa: Isa, kernels: KernelSet) -> bool {
    let row_bytes = job.width.saturating_mul(std::mem::size_of::<E>());
    kernels == KernelSet::InRegister
        && isa.has_avx2()
        && job.n_rows.saturating_mul(job.width) >= IN_REGISTER_MIN_ELEMS
        && (job.fused.is_none() || row_bytes <= IN_REGISTER_MAX_FUSED_ROW_BYTES)
}

/// Runs `job` from the state `carry` (one value per feature), leaving its last state there.
///
/// # Safety
/// Every sequence of `job` must address valid memory for all `n_rows × width` elements,
/// outputs must not overlap inputs or each other, and nothing else may access the
/// outputs during the call.
pub(crate) unsafe fn scan<E: Element>(job: &Job<E>, carry: &mut [E], isa: Isa, kernels: KernelSet) {
    debug_assert_eq!(carry.len(), job.width);
    if job.n_rows == 0 || job.width == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if in_register(job, isa, kernels) {
        if let Some(stride) = job.flat_stride() {
            // SAFETY: the caller's contract; `flat_stride` checked the contiguous layout
            // that `flat_x86` requires, and AVX2 + FMA are present.
            if unsafe {
                flat_x86::try_scan(
                    job,
                    stride,
                    carry,
                    None,
                    isa.get() == InstructionSet::Avx512,
                )
            } {
                return;
            }
        }
    }
    let _ = kernels;
    // SAFETY: the caller guarantees every sequence addresses n_rows × width valid
    // elements and that outputs alias neither inputs nor each other.
    unsafe { vertical::scan(job, carry, isa) }
}

/// How far ahead along each sequence, in bytes, the kernels prefetch. The backward pass
/// walks memory downwards (time-inverted views), which the hardware prefetchers of the
/// Xeon VM we measured followed poorly: with this, `scan_bench` at (2²⁰, 4) backward went
/// from 1.0–1.2 to 0.81–0.83 ns per element and (2²⁰, 64) forward from 0.58 to 0.47–0.55
/// (1 and 2 KiB measured alike; 4 KiB worse); on one thread, where (65536, 256) runs on
/// the wide path, backward went from 2.6–2.8 to 1.5–1.9 ns.
pub(crate) const PREFETCH_BYTES: usize = 1024;

/// Asks for the cache lines of the `bytes` from `ptr` (PREFETCHT0, also for lines about
/// to be written): a hint that never faults, whatever the address.
#[inline(always)]
pub(crate) fn prefetch<E>(ptr: *const E, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut offset = 0;
        while offset < bytes {
            let line = ptr.cast::<i8>().wrapping_add(offset);
            // SAFETY: PREFETCHT0 (SSE, on every x86-64 CPU) is a hint: it never faults and
            // changes no program state, so any address is allowed.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line) };
            offset += 64;
        }
    }
    let _ = (ptr, bytes);
}

/// `value`, or zero when its magnitude is below the smallest normal number (NaN and
/// infinities are kept). A running product of decays near 1 that sinks into the subnormal
/// range can stay there (a subnormal times 0.999 may round back to itself), and without
/// the CPU's flush-to-zero mode every multiplication with a subnormal costs about a
/// hundred times a normal one, so the reductions flush their products.
#[inline(always)]
pub(crate) fn flush_subnormal<E: Element>(value: E) -> E {
    if value.abs() < E::min_positive_value() {
        E::zero()
    } else {
        value
    }
}

/// Composes the steps of `job` into one affine map per feature: on return `product[f]`
/// is the product of the decays and `acc[f]` the state reached from zero.
///
/// The running product is flushed to zero whenever it falls below the smallest normal
/// number ([`flush_subnormal`]), as `scan_core`'s chunk maps do: the map then drops
/// contributions of the entering state below `MIN_POSITIVE · |h_in|` from the state that
/// the engine's phase 2 passes to the next chunk (within the tolerances of
/// `scan_core::tolerance`; a product flushed to zero that meets an infinite state gives
/// NaN there, which phase 4 already answers with the serial loop).
///
/// # Safety
/// As for [`scan`], except that nothing is written.
pub(crate) unsafe fn reduce<E: Element>(
    job: &Job<E>,
    product: &mut [E],
    acc: &mut [E],
    isa: Isa,
    kernels: KernelSet,
) {
    product.fill(E::one());
    acc.fill(E::zero());
    // SAFETY: the caller's contract.
    unsafe { reduce_from(job, product, acc, isa, kernels) }
}

/// Composes the steps of `job` after the map already in `product` and `acc`: on return
/// `product` is multiplied by the job's decays (flushed as in [`reduce`]) and `acc` holds
/// the state reached from its value. Like the serial loop, a state that becomes infinite
/// or NaN gets the serial loop's IEEE result (the in-register kernels check their states).
///
/// # Safety
/// As for [`reduce`].
pub(crate) unsafe fn reduce_from<E: Element>(
    job: &Job<E>,
    product: &mut [E],
    acc: &mut [E],
    isa: Isa,
    kernels: KernelSet,
) {
    if job.n_rows == 0 || job.width == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if in_register(job, isa, kernels) {
        if let Some(stride) = job.flat_stride() {
            // SAFETY: as in `scan`.
            if unsafe {
                flat_x86::try_scan(
                    job,
                    stride,
                    acc,
                    Some(product),
                    isa.get() == InstructionSet::Avx512,
                )
            } {
                return;
            }
        }
    }
    let _ = kernels;
    // SAFETY: the caller guarantees every sequence addresses n_rows × width valid
    // elements and that outputs alias neither inputs nor each other.
    unsafe { vertical::reduce(job, product, acc, isa) }
}
