//! Flush-to-zero arithmetic for the CPU backend, confined to the backend's own work.
//!
//! Values below the smallest normal number (`f32` below ≈ 1.18e-38, `f64` below
//! ≈ 2.23e-308) are rare in a model's numbers but common in its training: gradients that
//! vanish through many decays, Adam's second moments, products of decays in a scan. x86
//! CPUs compute with such *subnormal* operands or results through a microcode assist that
//! costs about a hundred cycles per instruction, which made training steps 3–14× slower.
//! With the MXCSR bits FTZ (results below the normal range are written as zero) and DAZ
//! (subnormal operands are read as zero) set, the same instructions run at full rate.
//! JAX/XLA and most deep-learning runtimes compute this way.
//!
//! How the mode is confined:
//!
//! * serial work runs on the calling thread inside a [`FlushGuard`], which sets FTZ|DAZ
//!   and restores the thread's previous MXCSR when dropped (also on unwinding), so the
//!   caller's own arithmetic never sees the mode. The guarded code calls nothing that
//!   could run foreign work on the thread (no rayon call, no user callback);
//! * a `Classifier`'s CPU entry points (forward, backward, logits, chunked and streamed
//!   passes) run their whole pass on that pool ([`on_cpu_pool`](super::on_cpu_pool)), so
//!   the backend's serial work runs on a pool thread (already in the mode) and the caller
//!   waits once per pass instead of once per parallel pass;
//! * parallel work (passes split over several tasks, the scan) runs on a private rayon
//!   pool whose threads always compute with FTZ|DAZ ([`flushing_pool`]); only this module
//!   submits work to it, so no task of the user's runs there, and the caller waits for it
//!   without holding a guard (a caller that is a rayon worker of another pool may run that
//!   pool's tasks while it waits, which therefore see the caller's own mode).
//!
//! Other architectures compute with gradual underflow either way.

use std::sync::OnceLock;

/// How a CPU backend computes with values below the smallest normal number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Subnormals {
    /// Operands and results below the smallest normal number are read and written as zero
    /// (x86-64: MXCSR FTZ|DAZ, on the threads that do the backend's work only). Every other
    /// value is bit-for-bit what IEEE arithmetic gives; the flushed ones differ from it by
    /// less than the smallest normal number. The default.
    #[default]
    FlushToZero,
    /// IEEE gradual underflow everywhere (slower when values become subnormal).
    Preserve,
}

impl Subnormals {
    /// Runs `work` (which may use rayon, but no thread-bound resource) in this mode, as
    /// [`CpuBackend`](super::CpuBackend) runs its parallel work: on a pool whose threads
    /// flush subnormals (`FlushToZero`, where the architecture has the mode), or as it is.
    pub fn install<R: Send>(self, work: impl FnOnce() -> R + Send) -> R {
        run(self, true, work)
    }
}

/// Runs `work` with subnormals flushed (per `mode`): on the calling thread under a
/// [`FlushGuard`] when `parallel` is false, on the [`flushing_pool`] when it is true.
pub(crate) fn run<R: Send>(mode: Subnormals, parallel: bool, work: impl FnOnce() -> R + Send) -> R {
    if mode == Subnormals::Preserve {
        return work();
    }
    if parallel {
        if let Some(pool) = flushing_pool() {
            return pool.install(work);
        }
    }
    let _guard = FlushGuard::enter();
    work()
}

/// The rayon pool whose threads compute with FTZ|DAZ, built on first use with as many
/// threads as the pool of that first caller (rayon's global pool, as configured by the
/// program, when called from outside any pool); `None` where the architecture has no such
/// mode or the threads cannot be started (the work then runs on the caller's pool, with
/// gradual underflow).
pub(crate) fn flushing_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        if !mxcsr::AVAILABLE {
            return None;
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("surrogate-rnn-ftz-{i}"))
            // The threads belong to this pool alone and keep the mode for their lifetime.
            .start_handler(|_| mxcsr::write(mxcsr::read() | mxcsr::FLUSH))
            .build()
            .ok()
    })
    .as_ref()
}

/// Sets FTZ|DAZ on the current thread until dropped, then restores the previous control
/// bits (keeping the exception flags raised meanwhile). Not `Send`: it is dropped on the
/// thread it changed.
pub(crate) struct FlushGuard {
    saved: u32,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl FlushGuard {
    /// Enters the mode on the current thread (a no-op where it does not exist).
    pub(crate) fn enter() -> Self {
        let saved = mxcsr::read();
        let flushed = saved | mxcsr::FLUSH;
        if flushed != saved {
            mxcsr::write(flushed);
        }
        Self {
            saved,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let now = mxcsr::read();
        let restored = (self.saved & !mxcsr::STATUS) | (now & mxcsr::STATUS);
        if restored != now {
            mxcsr::write(restored);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod mxcsr {
    //! Reading and writing the SSE control and status register.
    //!
    //! Language-level caveat: LLVM optimizes as if this register held its default value,
    //! so an operation it evaluates at compile time (constant folding) gives the unflushed
    //! IEEE result where the same operation at run time under FTZ|DAZ gives zero. Both are
    //! results this module's contract allows (they differ only below the smallest normal
    //! number), and no code run under the mode uses a floating-point value to decide a
    //! memory access (indices and sizes are integers), so the difference cannot reach
    //! memory safety. The rounding mode and exception masks are never changed.

    use std::arch::asm;

    /// SSE2 is part of x86-64, so the register always exists.
    pub(super) const AVAILABLE: bool = true;
    /// FTZ (bit 15) | DAZ (bit 6).
    pub(super) const FLUSH: u32 = 0x8040;
    /// The six sticky exception flags.
    pub(super) const STATUS: u32 = 0x3f;

    pub(super) fn read() -> u32 {
        let mut value = 0_u32;
        // SAFETY: `stmxcsr` stores the 4-byte register at the given address, which is that
        // of the live, writable, aligned local `value`; it touches nothing else.
        unsafe {
            asm!("stmxcsr [{}]", in(reg) &mut value as *mut u32, options(nostack, preserves_flags));
        }
        value
    }

    pub(super) fn write(value: u32) {
        // SAFETY: `ldmxcsr` loads 4 bytes from the address of the live local `value`. Every
        // value passed here is one read from the register with only FTZ/DAZ or status bits
        // changed, so no reserved bit is set (which would fault). See the module doc for
        // what the changed mode means to the compiler.
        unsafe {
            asm!("ldmxcsr [{}]", in(reg) &value as *const u32, options(nostack, preserves_flags, readonly));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod mxcsr {
    //! No flush-to-zero mode is set on this architecture.
    pub(super) const AVAILABLE: bool = false;
    pub(super) const FLUSH: u32 = 0;
    pub(super) const STATUS: u32 = 0;
    pub(super) fn read() -> u32 {
        0
    }
    pub(super) fn write(_: u32) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    const TINY: f32 = f32::MIN_POSITIVE / 4.0;

    fn product_on_this_thread() -> f32 {
        black_box(TINY) * black_box(1.0_f32)
    }

    #[test]
    fn guard_flushes_inside_and_restores_after() {
        assert_eq!(product_on_this_thread(), TINY);
        {
            let _guard = FlushGuard::enter();
            if mxcsr::AVAILABLE {
                assert_eq!(product_on_this_thread(), 0.0);
            }
        }
        assert_eq!(product_on_this_thread(), TINY);
    }

    #[test]
    fn guard_restores_when_the_work_panics() {
        let caught = std::panic::catch_unwind(|| {
            let _guard = FlushGuard::enter();
            panic!("inside the guard");
        });
        assert!(caught.is_err());
        assert_eq!(product_on_this_thread(), TINY);
    }

    #[test]
    fn parallel_work_flushes_and_leaves_the_caller_alone() {
        let inside = run(Subnormals::FlushToZero, true, product_on_this_thread);
        if mxcsr::AVAILABLE {
            assert_eq!(inside, 0.0);
        }
        assert_eq!(
            run(Subnormals::Preserve, true, product_on_this_thread),
            TINY
        );
        assert_eq!(product_on_this_thread(), TINY);
    }
}
