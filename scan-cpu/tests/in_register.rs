//! A fixed sweep over the shapes that reach the in-register kernels (1, 2 or 4 contiguous
//! features in f32, 1 or 2 in f64, and time-contiguous data), every length from 0 to 70
//! and some longer ones, both directions, forward and backward, on the parallel backend
//! with and without threads. Random layouts in the conformance suite reach these kernels
//! only now and then; this test reaches them on every run.

use scan_core::conformance::{check_backward, check_forward, Case, DecayKind, Layout};
use scan_core::{Direction, Element, LinearScan};
use scan_cpu::{InstructionSet, Parallel, Parallelism, Tuning};

/// For every instruction set this CPU supports: one thread (the whole problem goes through
/// one kernel call) and Algorithm 1 on every problem with tiny super-tiles.
fn backends() -> Vec<Parallel> {
    InstructionSet::supported()
        .into_iter()
        .flat_map(|isa| {
            [
                Parallel {
                    parallelism: Parallelism::None,
                    tuning: Tuning::default(),
                    isa: Some(isa),
                },
                Parallel {
                    parallelism: Parallelism::Rayon,
                    tuning: Tuning {
                        min_parallel_elements: 8,
                        tile_input_bytes: 2048,
                        min_time_split_threads: 2,
                        ..Tuning::default()
                    },
                    isa: Some(isa),
                },
            ]
        })
        .collect()
}

fn sweep<E: Element>(widths: &[usize])
where
    Parallel: LinearScan<E>,
{
    let lengths = (0..=70).chain([127, 128, 129, 257, 1000, 4099]);
    let mut seed = 0;
    for n_steps in lengths {
        for &n_features in widths {
            for layout in [Layout::RowMajor, Layout::TimeReversed, Layout::ColumnMajor] {
                for direction in [Direction::Forward, Direction::Reverse] {
                    for decay_kind in [DecayKind::Exact, DecayKind::Hard, DecayKind::Mixed] {
                        seed += 1;
                        let case = Case {
                            n_steps,
                            n_features,
                            input_layouts: [layout; 3],
                            output_layouts: [layout; 2],
                            with_initial: seed % 2 == 0,
                            with_grad_last: seed % 3 == 0,
                            direction,
                            decay_kind,
                            seed,
                        };
                        for backend in &backends() {
                            let result = check_forward::<E, _>(backend, &case)
                                .and_then(|()| check_backward::<E, _>(backend, &case));
                            if let Err(error) = result {
                                panic!("{} {case:?}: {error}", E::NAME);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn in_register_kernels_f32() {
    sweep::<f32>(&[1, 2, 3, 4, 5]);
}

#[test]
fn in_register_kernels_f64() {
    sweep::<f64>(&[1, 2, 3, 4]);
}
