//! Criterion benches of the CPU backends: the paper's Table 1 shapes (batch 1,
//! F ∈ {4, 32, 128}, T ∈ {16, 256, 4096, 65536}) and large shapes, forward and backward,
//! f32. Groups are named `{backend}/{pass}`; throughput is in elements (T·F).
//!
//! `cargo bench -p scan-cpu` (all), `cargo bench -p scan-cpu -- parallel/forward` (one group).
//! For a single table with copy-bandwidth fractions, see the `scan_bench` example.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array1, Array2};
use scan_core::{BackwardInputs, BackwardOutputs, Direction, ForwardInputs, LinearScan};
use scan_cpu::{Parallel, Serial};

const TABLE1: [(usize, usize); 12] = [
    (16, 4),
    (16, 32),
    (16, 128),
    (256, 4),
    (256, 32),
    (256, 128),
    (4096, 4),
    (4096, 32),
    (4096, 128),
    (65536, 4),
    (65536, 32),
    (65536, 128),
];
const LARGE: [(usize, usize); 5] = [
    (1 << 20, 1),
    (1 << 20, 4),
    (1 << 20, 64),
    (65536, 1024),
    (4096, 65536),
];

fn inputs(t: usize, f: usize) -> (Array2<f32>, Array2<f32>) {
    let decay = Array2::from_shape_fn((t, f), |(i, j)| {
        0.9 + 0.0999 * (((i * 31 + j * 7) % 1000) as f32 / 1000.0)
    });
    let impulse = Array2::from_shape_fn((t, f), |(i, j)| {
        ((i * 17 + j * 13) % 2001) as f32 / 1000.0 - 1.0
    });
    (decay, impulse)
}

fn bench_backend(c: &mut Criterion, name: &str, backend: &dyn LinearScan<f32>) {
    for (pass, shapes) in [
        ("forward", &TABLE1[..]),
        ("forward", &LARGE[..]),
        ("backward", &TABLE1[..]),
        ("backward", &LARGE[..]),
    ] {
        let mut group = c.benchmark_group(format!("{name}/{pass}"));
        if shapes.len() == LARGE.len() {
            group
                .sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(3));
        } else {
            group
                .warm_up_time(Duration::from_millis(300))
                .measurement_time(Duration::from_secs(1));
        }
        for &(t, f) in shapes {
            let (decay, impulse) = inputs(t, f);
            let mut state = Array2::zeros((t, f));
            group.throughput(Throughput::Elements((t * f) as u64));
            let id = BenchmarkId::from_parameter(format!("T={t},F={f}"));
            let forward_inputs = || ForwardInputs {
                decay: decay.view(),
                impulse: impulse.view(),
                initial: None,
                direction: Direction::Forward,
            };
            if pass == "forward" {
                group.bench_function(id, |b| {
                    b.iter(|| {
                        backend
                            .forward_into(forward_inputs(), state.view_mut())
                            .expect("shapes match")
                    })
                });
                continue;
            }
            backend
                .forward_into(forward_inputs(), state.view_mut())
                .expect("shapes match");
            let mut grad_decay = Array2::zeros((t, f));
            let mut grad_impulse = Array2::zeros((t, f));
            let mut grad_initial = Array1::zeros(f);
            group.bench_function(id, |b| {
                b.iter(|| {
                    backend
                        .backward_into(
                            BackwardInputs {
                                decay: decay.view(),
                                state: state.view(),
                                initial: None,
                                grad_state: impulse.view(),
                                grad_last: None,
                                direction: Direction::Forward,
                            },
                            BackwardOutputs {
                                grad_decay: grad_decay.view_mut(),
                                grad_impulse: grad_impulse.view_mut(),
                                grad_initial: Some(grad_initial.view_mut()),
                            },
                        )
                        .expect("shapes match")
                })
            });
        }
        group.finish();
    }
}

fn benches(c: &mut Criterion) {
    bench_backend(c, "serial", &Serial::default());
    bench_backend(c, "parallel", &Parallel::default());
}

criterion_group!(scan, benches);
criterion_main!(scan);
