//! Both CPU backends against the reference: the scan-core conformance suite, plus the
//! parallel backend with thresholds small enough that Algorithm 1 runs on tiny problems,
//! on thread pools of several sizes.

use scan_core::conformance::{self as c};
use scan_cpu::{Parallel, Parallelism, Serial, Tuning};

mod serial {
    scan_core::conformance_suite!(scan_cpu::Serial::default());
}

mod parallel {
    scan_core::conformance_suite!(scan_cpu::Parallel::default());
}

mod serial_one_thread {
    scan_core::conformance_suite!(scan_cpu::Serial {
        parallelism: scan_cpu::Parallelism::None,
        isa: None,
    });
}

/// Algorithm 1 on every problem with more than a few elements, with super-tiles of a few
/// hundred elements, so chunk and tile boundaries land everywhere.
fn eager() -> Parallel {
    Parallel {
        parallelism: Parallelism::Rayon,
        tuning: Tuning {
            min_parallel_elements: 8,
            // 700 f32 or 350 f64 elements per super-tile.
            tile_input_bytes: 5600,
            min_time_split_threads: 2,
            ..Tuning::default()
        },
        isa: None,
    }
}

mod parallel_eager {
    scan_core::conformance_suite!(crate::eager());
}

/// Streaming stores on every problem, on one thread and with Algorithm 1 everywhere.
fn streamed(parallelism: Parallelism) -> Parallel {
    Parallel {
        parallelism,
        tuning: Tuning {
            stream_min_bytes: 0,
            ..eager().tuning
        },
        isa: None,
    }
}

mod parallel_streamed {
    scan_core::conformance_suite!(crate::streamed(scan_cpu::Parallelism::Rayon));
}

mod parallel_streamed_one_thread {
    scan_core::conformance_suite!(crate::streamed(scan_cpu::Parallelism::None));
}

fn on_threads(threads: usize, body: impl FnOnce() + Send) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(body);
}

#[test]
fn eager_parallel_on_three_and_four_threads() {
    for threads in [3, 4] {
        on_threads(threads, || {
            let backend = eager();
            c::property::<f32, _>("forward f32", &backend, c::check_forward::<f32, _>);
            c::property::<f64, _>("backward f64", &backend, c::check_backward::<f64, _>);
            c::property::<f32, _>("backward f32", &backend, c::check_backward::<f32, _>);
            c::property::<f32, _>(
                "IEEE forward f32",
                &backend,
                c::check_ieee_forward::<f32, _>,
            );
            c::property::<f64, _>(
                "IEEE backward f64",
                &backend,
                c::check_ieee_backward::<f64, _>,
            );
            // Chunk maps split over 3 or 4 time chunks, composed in order.
            c::property::<f32, _>("maps f32", &backend, c::check_maps::<f32, _>);
            c::property::<f64, _>("IEEE maps f64", &backend, c::check_ieee_maps::<f64, _>);
            c::check_ieee_cases::<f32, _>(&backend);
            c::check_ieee_cases::<f64, _>(&Parallel::default());
        });
    }
}

#[test]
fn serial_on_three_threads() {
    on_threads(3, || {
        let backend = Serial::default();
        c::property::<f32, _>("forward f32", &backend, c::check_forward::<f32, _>);
        c::property::<f64, _>("backward f64", &backend, c::check_backward::<f64, _>);
    });
}

/// Chunk maps of a broadcast view wider than memory holds are allocation errors on both
/// backends, in both directions, not panics.
#[test]
fn chunk_maps_wider_than_memory_are_errors() {
    use ndarray::Array2;
    use scan_core::{Direction, LinearScan, ScanError};
    let one = Array2::<f32>::ones((1, 1));
    let wide = one.broadcast((1, 1 << 62)).unwrap();
    let backends: [&dyn LinearScan<f32>; 2] = [&Serial::default(), &Parallel::default()];
    for backend in backends {
        for direction in [Direction::Forward, Direction::Reverse] {
            let forward = backend.forward_map(wide, wide, direction);
            let backward = backend.backward_map(wide, wide, direction);
            for result in [forward, backward] {
                assert!(
                    matches!(result, Err(ScanError::AllocationFailed { .. })),
                    "{result:?}"
                );
            }
        }
    }
}
