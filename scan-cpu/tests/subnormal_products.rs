//! Algorithm 1's reductions flush a running product of decays that falls below the
//! smallest normal number to zero (subnormal arithmetic is about a hundred times slower,
//! and such a product can get stuck there: a subnormal times 0.999 may round back to
//! itself). Visible in the result: a chunk after the first starts from the entering state
//! without the contribution `product · h_in` that is below `MIN_POSITIVE · |h_in|`.

use ndarray::{Array1, Array2};
use scan_core::{Direction, ForwardInputs, LinearScan};
use scan_cpu::{InstructionSet, Parallel, Parallelism, Serial, Tuning};

/// Decays of 0.999, except 14 of 2^-10 just after the middle, which take the state (from 1)
/// into the subnormal range, where the later decays of 0.999 keep it; no impulses. With
/// one super-tile and two threads, the first half is scanned from the initial state and
/// the second half reduced in two chunks: the first of those has a subnormal product.
fn sinking_problem(n_steps: usize, width: usize) -> (Array2<f32>, Array2<f32>, Array1<f32>) {
    let decay = Array2::from_shape_fn((n_steps, width), |(t, _)| {
        if (n_steps / 2 + 1..n_steps / 2 + 15).contains(&t) {
            2.0_f32.powi(-10)
        } else {
            0.999
        }
    });
    (decay, Array2::zeros((n_steps, width)), Array1::ones(width))
}

#[test]
fn a_subnormal_product_of_decays_is_flushed_between_chunks() {
    let threads = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let (n_steps, width) = (4096, 4);
    let (decay, impulse, initial) = sinking_problem(n_steps, width);
    let inputs = || ForwardInputs {
        decay: decay.view(),
        impulse: impulse.view(),
        initial: Some(initial.view()),
        direction: Direction::Forward,
    };
    let serial = Serial::default().forward(inputs()).unwrap();
    let last = serial[[n_steps - 1, 0]];
    assert!(
        last > 0.0 && last < f32::MIN_POSITIVE,
        "the serial state is subnormal"
    );
    for isa in InstructionSet::supported() {
        let parallel = Parallel {
            parallelism: Parallelism::Rayon,
            tuning: Tuning {
                min_parallel_elements: 8,
                tile_input_bytes: 1 << 30,
                min_time_split_threads: 2,
                ..Tuning::default()
            },
            isa: Some(isa),
        };
        let states = threads.install(|| parallel.forward(inputs())).unwrap();
        // The first half is scanned from the initial state like the serial loop (up to
        // rounding); the last chunk starts from a flushed state.
        let (got, want) = (states[[100, 0]], serial[[100, 0]]);
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{isa:?}: {got} vs {want}"
        );
        assert!(states.row(n_steps - 1).iter().all(|&h| h == 0.0), "{isa:?}");
    }
}
