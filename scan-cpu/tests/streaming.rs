//! Problems that move more than `Tuning::stream_min_bytes` write wide rows with streaming
//! stores (the 64-byte-aligned part of each row). The threshold is lowered here so modest
//! problems take that path: rows of any width and alignment (odd widths, padded rows, a
//! negative time stride, rows shifted onto cache lines), forward and backward, both
//! directions, f32 and f64, must agree with the reference, and so must the defaults.

use scan_core::conformance::{check_backward, check_forward, Case, DecayKind, Layout};
use scan_core::{Direction, LinearScan};
use scan_cpu::{Parallel, Parallelism, Serial, Tuning};

fn case(n_steps: usize, n_features: usize, layout: Layout, direction: Direction) -> Case {
    Case {
        n_steps,
        n_features,
        input_layouts: [layout; 3],
        output_layouts: [layout; 2],
        with_initial: true,
        with_grad_last: true,
        direction,
        decay_kind: DecayKind::Exact,
        seed: (n_steps * 31 + n_features) as u64,
    }
}

fn streamed(parallelism: Parallelism, min_time_split_threads: usize) -> Parallel {
    Parallel {
        parallelism,
        tuning: Tuning {
            min_parallel_elements: 1 << 12,
            tile_input_bytes: 1 << 16,
            min_time_split_threads,
            stream_min_bytes: 1 << 10,
        },
        isa: None,
    }
}

fn check_all<B: LinearScan<f32> + LinearScan<f64>>(name: &str, backend: &B, cases: &[Case]) {
    for case in cases {
        for result in [
            check_forward::<f32, _>(backend, case),
            check_backward::<f32, _>(backend, case),
            check_forward::<f64, _>(backend, case),
            check_backward::<f64, _>(backend, case),
        ] {
            if let Err(error) = result {
                panic!("{name}, {case:?}: {error}");
            }
        }
    }
}

#[test]
fn streamed_outputs_match_the_reference() {
    let mut cases = Vec::new();
    for (n_steps, n_features) in [(3001, 3), (999, 37), (700, 64), (300, 65), (200, 128)] {
        for layout in [Layout::RowMajor, Layout::PaddedRows, Layout::TimeReversed] {
            for direction in [Direction::Forward, Direction::Reverse] {
                cases.push(case(n_steps, n_features, layout, direction));
            }
        }
    }
    cases.push(case(40, 3000, Layout::RowMajor, Direction::Forward));
    cases.push(case(41, 3001, Layout::PaddedRows, Direction::Reverse));
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| {
            check_all("one thread", &streamed(Parallelism::None, 2), &cases);
            check_all("features split", &streamed(Parallelism::Rayon, 99), &cases);
            check_all("Algorithm 1", &streamed(Parallelism::Rayon, 2), &cases);
        });
    }
    let defaults = [case(300, 40, Layout::PaddedRows, Direction::Reverse)];
    check_all("serial", &Serial::default(), &defaults);
    check_all("parallel", &Parallel::default(), &defaults);
}
