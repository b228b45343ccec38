//! Problems whose outputs exceed the last-level cache are written with streaming stores;
//! rows that start at any alignment (padded rows) must come out exactly as with ordinary
//! stores: compared with the reference, forward and backward, both backends.

use scan_core::conformance::{check_backward, check_forward, Case, DecayKind, Layout};
use scan_core::Direction;
use scan_cpu::{Parallel, Serial};

fn case(n_features: usize, layout: Layout, direction: Direction, seed: u64) -> Case {
    Case {
        // About 48 MiB of f32 output: more than the 32 MiB caches of current CPUs.
        n_steps: 12_000_000 / n_features,
        n_features,
        input_layouts: [layout; 3],
        output_layouts: [layout; 2],
        with_initial: true,
        with_grad_last: true,
        direction,
        decay_kind: DecayKind::Exact,
        seed,
    }
}

#[test]
fn streamed_outputs_match_the_reference() {
    let cases = [
        case(3000, Layout::RowMajor, Direction::Forward, 1),
        case(3001, Layout::PaddedRows, Direction::Reverse, 2),
        case(40, Layout::PaddedRows, Direction::Forward, 3),
        case(37, Layout::RowMajor, Direction::Reverse, 4),
    ];
    for case in &cases {
        for result in [
            check_forward::<f32, _>(&Serial::default(), case),
            check_forward::<f32, _>(&Parallel::default(), case),
            check_backward::<f32, _>(&Parallel::default(), case),
        ] {
            if let Err(error) = result {
                panic!("{case:?}: {error}");
            }
        }
    }
}
