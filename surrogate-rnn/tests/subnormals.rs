//! The CPU backend computes with subnormal values flushed to zero (by default), on its own
//! work only: results below the smallest normal number become zero, in serial passes, in
//! passes split over threads and in the scan, and the calling thread's arithmetic is as
//! before afterwards. With `Subnormals::Preserve` the same calls keep IEEE results.

use std::hint::black_box;

use ndarray::Array2;
use scan_cpu::Parallel;
use surrogate_rnn::backend::{Backend, Candidate, ScanEnds};
use surrogate_rnn::{CpuBackend, Subnormals};

/// A quarter of the smallest normal `f32`: subnormal.
const TINY: f32 = f32::MIN_POSITIVE / 4.0;

/// `TINY · 1` computed on the calling thread.
fn product_here() -> f32 {
    black_box(TINY) * black_box(1.0_f32)
}

/// `impulse = (1 − σ(0))·(v + 0)` with `v = 2·TINY` over `rows × cols` values: `TINY`
/// under IEEE arithmetic, zero when subnormals are flushed.
fn impulses(backend: &CpuBackend<'_, f32>, rows: usize, cols: usize) -> Array2<f32> {
    let mut decay = Array2::<f32>::zeros((rows, cols));
    let mut candidate = Array2::from_elem((rows, cols), 2.0 * TINY);
    let mut impulse = Array2::<f32>::zeros((rows, cols));
    let zero_bias = Array2::<f32>::zeros((1, cols));
    backend
        .decay_gates(
            decay.view_mut(),
            zero_bias.view(),
            candidate.view_mut(),
            zero_bias.view(),
            Candidate::Identity,
            impulse.view_mut(),
        )
        .unwrap();
    impulse
}

fn expects_flush() -> bool {
    cfg!(target_arch = "x86_64")
}

#[test]
fn serial_and_parallel_passes_flush_subnormal_results() {
    let scan = Parallel::default();
    let backend = CpuBackend::new(&scan);
    assert_eq!(backend.subnormals(), Subnormals::FlushToZero);
    // 3 × 5 runs serially on this thread; 512 × 256 is split over the pool's threads.
    for (rows, cols) in [(3, 5), (512, 256)] {
        let out = impulses(&backend, rows, cols);
        if expects_flush() {
            assert!(out.iter().all(|&x| x == 0.0), "{rows}×{cols} not flushed");
        }
        assert_eq!(product_here(), TINY, "the caller's mode changed");
    }
}

#[test]
fn preserve_keeps_ieee_results() {
    let scan = Parallel::default();
    let backend = CpuBackend::new(&scan).with_subnormals(Subnormals::Preserve);
    for (rows, cols) in [(3, 5), (512, 256)] {
        let out = impulses(&backend, rows, cols);
        assert!(out.iter().all(|&x| x == TINY), "{rows}×{cols} changed");
    }
}

#[test]
fn products_read_subnormal_operands_as_zero() {
    let scan = Parallel::default();
    let a = Array2::from_elem((2, 3), TINY);
    let b = Array2::from_elem((3, 2), 1.0_f32);
    for (mode, expected) in [
        (
            Subnormals::FlushToZero,
            if expects_flush() { 0.0 } else { 3.0 * TINY },
        ),
        (Subnormals::Preserve, 3.0 * TINY),
    ] {
        let backend = CpuBackend::new(&scan).with_subnormals(mode);
        let mut c = Array2::<f32>::zeros((2, 2));
        backend
            .matmul(
                a.view(),
                surrogate_rnn::backend::Transpose::No,
                b.view(),
                surrogate_rnn::backend::Transpose::No,
                c.view_mut(),
                false,
            )
            .unwrap();
        assert!(c.iter().all(|&x| x == expected), "{mode:?}: {c:?}");
        assert_eq!(product_here(), TINY, "the caller's mode changed");
    }
}

#[test]
fn the_scan_flushes_an_underflowing_state() {
    // state_t = 0.5·state_{t−1} + 0 from 2^-120: normal for 6 steps, subnormal after.
    let scan = Parallel::default();
    let (n_steps, width) = (40, 3);
    let decay = Array2::from_elem((n_steps, width), 0.5_f32);
    let impulse = Array2::<f32>::zeros((n_steps, width));
    let initial = Array2::from_elem((1, width), 2.0_f32.powi(-120));
    for mode in [Subnormals::FlushToZero, Subnormals::Preserve] {
        let backend = CpuBackend::new(&scan).with_subnormals(mode);
        let mut state = Array2::<f32>::zeros((n_steps, width));
        let ends = ScanEnds {
            initial: Some(initial.view()),
            grad_last: None,
        };
        backend
            .scan(
                n_steps,
                decay.view(),
                impulse.view(),
                ends,
                state.view_mut(),
            )
            .unwrap();
        let last = state[[n_steps - 1, 0]];
        let expected = 2.0_f32.powi(-120 - n_steps as i32);
        if mode == Subnormals::FlushToZero && expects_flush() {
            assert_eq!(last, 0.0);
        } else {
            assert_eq!(last, expected);
        }
        assert!(state
            .iter()
            .all(|&x| x == 0.0 || x >= f32::MIN_POSITIVE || mode == Subnormals::Preserve));
        assert_eq!(product_here(), TINY, "the caller's mode changed");
    }
}
