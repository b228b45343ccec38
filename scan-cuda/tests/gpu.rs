//! GPU tests (feature `cuda`): the scan-core conformance suite on both CUDA kernels, plus
//! long sequences, shapes that are not multiples of the tile sizes, decays near 1, both
//! device layouts, the device-buffer API, bit-identical repeats and T·F > 2³¹.
//!
//! They need a GPU and the real driver; on a machine without one they compile and link
//! (against the libcuda stub of `cargo xtask cuda-toolchain`) but cannot run.
#![cfg(feature = "cuda")]

use cust::memory::{CopyDestination, DeviceBuffer};
use ndarray::Array2;
use scan_core::conformance::{check_backward, check_forward, run_forward, Case, DecayKind, Layout};
use scan_core::{Direction, ScanShape};
use scan_cuda::{Cuda, DeviceForward, DeviceLayout, Kernel};

scan_core::conformance_suite!(scan_cuda::Cuda::default());

mod serial_kernel {
    scan_core::conformance_suite!(scan_cuda::Cuda::default().with_kernel(scan_cuda::Kernel::Serial));
}

fn case(
    n_steps: usize,
    n_features: usize,
    layout: Layout,
    direction: Direction,
    decay_kind: DecayKind,
) -> Case {
    Case {
        n_steps,
        n_features,
        input_layouts: [layout; 3],
        output_layouts: [layout; 2],
        with_initial: true,
        with_grad_last: true,
        direction,
        decay_kind,
        seed: (n_steps * 31 + n_features) as u64,
    }
}

fn check_both_dtypes(backend: &Cuda, case: &Case) {
    let result = check_forward::<f32, _>(backend, case)
        .and_then(|()| check_backward::<f32, _>(backend, case))
        .and_then(|()| check_forward::<f64, _>(backend, case))
        .and_then(|()| check_backward::<f64, _>(backend, case));
    if let Err(error) = result {
        panic!("{:?} kernel, {case:?}: {error}", backend.kernel());
    }
}

#[test]
fn long_sequences_in_both_layouts() {
    for n_features in [1, 4] {
        for layout in [Layout::RowMajor, Layout::ColumnMajor] {
            for direction in [Direction::Forward, Direction::Reverse] {
                let c = case(1 << 20, n_features, layout, direction, DecayKind::Hard);
                check_both_dtypes(&Cuda::default(), &c);
            }
        }
    }
}

#[test]
fn shapes_that_are_not_multiples_of_tiles() {
    for n_steps in [1, 15, 17, 511, 513, 2047, 2049, 4097, 65_537] {
        for n_features in [1, 3, 5, 31, 33, 129, 300] {
            for layout in [Layout::RowMajor, Layout::ColumnMajor, Layout::PaddedRows] {
                let c = case(
                    n_steps,
                    n_features,
                    layout,
                    Direction::Forward,
                    DecayKind::Mixed,
                );
                check_both_dtypes(&Cuda::default(), &c);
            }
        }
    }
}

#[test]
fn serial_kernel_on_long_sequences() {
    let backend = Cuda::default().with_kernel(Kernel::Serial);
    for layout in [Layout::RowMajor, Layout::ColumnMajor] {
        check_both_dtypes(
            &backend,
            &case(1 << 20, 4, layout, Direction::Reverse, DecayKind::Hard),
        );
    }
}

#[test]
fn repeats_are_bit_identical() {
    let backend = Cuda::default();
    for (n_steps, n_features, layout) in [
        (1 << 20, 4, Layout::RowMajor),
        (1 << 20, 1, Layout::ColumnMajor),
        (65_537, 300, Layout::RowMajor),
    ] {
        let c = case(
            n_steps,
            n_features,
            layout,
            Direction::Forward,
            DecayKind::Uniform,
        );
        let data = c.data::<f32>();
        let first = run_forward(&backend, &c, &data).unwrap();
        for _ in 0..5 {
            // A launch of another shape in between moves the workspace's epoch and tickets.
            let other = case(
                4097,
                3,
                Layout::ColumnMajor,
                Direction::Reverse,
                DecayKind::Mixed,
            );
            run_forward(&backend, &other, &other.data::<f32>()).unwrap();
            let again = run_forward(&backend, &c, &data).unwrap();
            let same = first
                .iter()
                .zip(again.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "T = {n_steps}, F = {n_features}: results differ between runs"
            );
        }
    }
}

#[test]
fn device_buffer_api_matches_the_host_api() {
    let backend = Cuda::default();
    backend.activate().unwrap();
    let c = case(
        10_007,
        6,
        Layout::RowMajor,
        Direction::Reverse,
        DecayKind::Hard,
    );
    let data = c.data::<f64>();
    let expected = run_forward(&backend, &c, &data).unwrap();
    let decay = DeviceBuffer::from_slice(data.decay.as_slice().unwrap()).unwrap();
    let impulse = DeviceBuffer::from_slice(data.impulse.as_slice().unwrap()).unwrap();
    let initial =
        DeviceBuffer::from_slice(data.initial.as_ref().unwrap().as_slice().unwrap()).unwrap();
    let mut state = DeviceBuffer::from_slice(&vec![f64::NAN; 10_007 * 6]).unwrap();
    // SAFETY: the buffers were allocated after `activate` made the device's primary context
    // current on this thread, and live until the end of the test.
    unsafe {
        backend.forward_device(DeviceForward {
            shape: ScanShape {
                n_steps: 10_007,
                n_features: 6,
            },
            layout: DeviceLayout::TimeMajor,
            direction: Direction::Reverse,
            decay: &decay,
            impulse: &impulse,
            initial: Some(&initial),
            state: &mut state,
        })
    }
    .unwrap();
    let mut host = vec![0.0; 10_007 * 6];
    state.copy_to(&mut host[..]).unwrap();
    let actual = Array2::from_shape_vec((10_007, 6), host).unwrap();
    assert_eq!(actual, expected);
    // A wrong buffer length is an error, not a launch.
    // SAFETY: as above.
    let error = unsafe {
        backend.forward_device(DeviceForward {
            shape: ScanShape {
                n_steps: 10_008,
                n_features: 6,
            },
            layout: DeviceLayout::TimeMajor,
            direction: Direction::Forward,
            decay: &decay,
            impulse: &impulse,
            initial: None,
            state: &mut state,
        })
    }
    .unwrap_err();
    assert!(error.to_string().contains("decay"), "{error}");
    // A shape whose element count overflows is an error, not a launch of wrapped sizes.
    // SAFETY: as above.
    let error = unsafe {
        backend.forward_device(DeviceForward {
            shape: ScanShape {
                n_steps: usize::MAX / 2 + 2,
                n_features: 2,
            },
            layout: DeviceLayout::TimeMajor,
            direction: Direction::Forward,
            decay: &decay,
            impulse: &impulse,
            initial: None,
            state: &mut state,
        })
    }
    .unwrap_err();
    assert!(error.to_string().contains("overflow"), "{error}");
}

/// T·F > 2³¹ elements (64-bit indexing), where the GPU has the memory: h_t = a·h_{t-1} + x
/// with per-feature constants has the closed form x·(1 − a^{t+1})/(1 − a).
#[test]
fn more_than_two_to_the_31_elements() {
    let backend = Cuda::default();
    backend.activate().unwrap();
    let (n_steps, n_features) = ((1usize << 16) + 1, (1usize << 15) + 3);
    let len = n_steps * n_features;
    assert!(len > 1 << 31);
    let (free, _) = cust::memory::mem_get_info().unwrap();
    let needed = 3 * len * 4 + (256 << 20);
    if free < needed {
        eprintln!("skipped: needs {needed} bytes of device memory, {free} free");
        return;
    }
    let decay_of = |f: usize| (f % 7) as f32 / 8.0;
    let impulse_of = |f: usize| 1.0 + (f % 5) as f32;
    let decay: Vec<f32> = (0..len).map(|i| decay_of(i % n_features)).collect();
    let impulse: Vec<f32> = (0..len).map(|i| impulse_of(i % n_features)).collect();
    let decay = DeviceBuffer::from_slice(&decay).unwrap();
    let impulse = DeviceBuffer::from_slice(&impulse).unwrap();
    let mut state = DeviceBuffer::from_slice(&vec![f32::NAN; len]).unwrap();
    // SAFETY: the buffers were allocated after `activate` made the device's primary context
    // current on this thread, and live until the end of the test.
    unsafe {
        backend.forward_device(DeviceForward {
            shape: ScanShape {
                n_steps,
                n_features,
            },
            layout: DeviceLayout::TimeMajor,
            direction: Direction::Forward,
            decay: &decay,
            impulse: &impulse,
            initial: None,
            state: &mut state,
        })
    }
    .unwrap();
    let mut host = vec![0.0f32; len];
    state.copy_to(&mut host[..]).unwrap();
    for (t, f) in [
        (0, 0),
        (1, 1),
        (n_steps / 2, n_features - 1),
        (n_steps - 1, n_features - 1),
        (n_steps - 1, 12_345),
    ] {
        let (a, x) = (f64::from(decay_of(f)), f64::from(impulse_of(f)));
        let expected = x * (1.0 - a.powi(t as i32 + 1)) / (1.0 - a);
        let actual = f64::from(host[t * n_features + f]);
        assert!(
            (actual - expected).abs() <= 1e-5 * expected,
            "h[{t}, {f}] = {actual}, expected {expected}"
        );
    }
    assert!(
        host.iter().all(|h| h.is_finite()),
        "an element was not written"
    );
}
