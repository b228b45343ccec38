//! Inputs that once panicked: out-of-range indices, mismatched shapes, and broadcast views
//! describing more elements than memory holds. Each must now be an `Err` naming the problem.

use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayViewMut3};
use scan_core::layout::{forward_3d, ForwardInputs3};
use scan_core::tolerance::{
    check_close_1d, check_close_2d, reference_backward_f64, reference_forward_f64, step_index,
    Mismatch,
};
use scan_core::{
    forward_chunk_map, BackwardInputs, ChunkMap, Direction, Element, ForwardInputs, LinearScan,
    Reference, ScanError,
};

/// 2³¹ × 2³¹ elements: 2⁶⁴ bytes in f32, more than `usize` can count.
const HUGE: (usize, usize) = (1 << 31, 1 << 31);

#[test]
fn step_index_is_none_past_the_last_step() {
    assert_eq!(step_index(0, Direction::Reverse, 0), None);
    assert_eq!(step_index(3, Direction::Reverse, 3), None);
    assert_eq!(step_index(3, Direction::Forward, usize::MAX), None);
    assert_eq!(step_index(3, Direction::Reverse, 0), Some(2));
    assert_eq!(step_index(3, Direction::Forward, 2), Some(2));
}

/// How `actual` fails to match `expected` (also the magnitudes) with a tolerance of 10⁻⁶.
fn mismatch_1d<E: Element>(actual: &Array1<E>, expected: &Array1<f64>) -> Mismatch {
    check_close_1d(actual.view(), expected.view(), expected.view(), 1e-6).unwrap_err()
}

#[test]
fn comparisons_of_different_shapes_name_the_shapes() {
    let (small, large) = (Array2::<f64>::zeros((2, 3)), Array2::<f64>::zeros((3, 3)));
    let mismatch = check_close_2d(small.view(), large.view(), large.view(), 1e-6).unwrap_err();
    assert_eq!(
        mismatch,
        Mismatch::Shape {
            actual: vec![2, 3],
            expected: vec![3, 3],
            magnitude: vec![3, 3],
        }
    );
    assert!(mismatch.to_string().contains("[2, 3]"), "{mismatch}");

    let mismatch = mismatch_1d(&Array1::<f32>::zeros(2), &Array1::zeros(3));
    assert!(
        matches!(&mismatch, Mismatch::Shape { actual, .. } if *actual == [2]),
        "{mismatch}"
    );
}

#[test]
fn one_dimensional_mismatches_keep_a_one_dimensional_index() {
    let mismatch = mismatch_1d(&Array1::<f64>::from(vec![0.0, 1.0]), &Array1::zeros(2));
    assert!(
        matches!(&mismatch, Mismatch::Element { index, .. } if *index == [1]),
        "{mismatch}"
    );
}

/// The argument a [`ScanError::ShapeMismatch`] names; `None` for any other outcome.
fn mismatched_argument<T>(result: Result<T, ScanError>) -> Option<&'static str> {
    match result {
        Err(ScanError::ShapeMismatch { argument, .. }) => Some(argument),
        _ => None,
    }
}

#[test]
fn f64_references_report_shape_errors() {
    let (decay, short) = (Array2::<f32>::zeros((3, 2)), Array2::<f32>::zeros((2, 2)));
    let forward = ForwardInputs {
        decay: decay.view(),
        impulse: short.view(),
        initial: None,
        direction: Direction::Forward,
    };
    assert_eq!(
        mismatched_argument(reference_forward_f64(&forward, false)),
        Some("impulse")
    );
    let backward = BackwardInputs {
        decay: decay.view(),
        state: decay.view(),
        initial: None,
        grad_state: short.view(),
        grad_last: None,
        direction: Direction::Reverse,
    };
    assert_eq!(
        mismatched_argument(reference_backward_f64(&backward, true)),
        Some("grad_state")
    );
}

#[test]
fn outputs_too_large_for_memory_are_allocation_errors() {
    let zero = Array2::<f32>::zeros((1, 1));
    let huge = zero.broadcast(HUGE).unwrap();
    let forward = ForwardInputs {
        decay: huge,
        impulse: huge,
        initial: None,
        direction: Direction::Forward,
    };
    let error = Reference.forward(forward.clone()).unwrap_err();
    assert!(
        matches!(
            &error,
            ScanError::AllocationFailed { operation: "forward", buffer: "state", shape, bytes: None }
                if *shape == [HUGE.0, HUGE.1]
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("[2147483648, 2147483648]"),
        "{error}"
    );
    assert!(matches!(
        reference_forward_f64(&forward, true),
        Err(ScanError::AllocationFailed { .. })
    ));

    let error = Reference
        .backward(BackwardInputs {
            decay: huge,
            state: huge,
            initial: None,
            grad_state: huge,
            grad_last: None,
            direction: Direction::Reverse,
        })
        .unwrap_err();
    assert!(
        matches!(
            error,
            ScanError::AllocationFailed {
                operation: "backward",
                buffer: "grad_decay",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_size_the_allocator_refuses_reports_its_bytes() {
    // 2⁶⁰ f64 elements: 2⁶³ bytes fit in `usize`, but no allocator grants them.
    let zero = Array2::<f64>::zeros((1, 1));
    let huge = zero.broadcast((1 << 40, 1 << 20)).unwrap();
    let error = Reference
        .forward(ForwardInputs {
            decay: huge,
            impulse: huge,
            initial: None,
            direction: Direction::Forward,
        })
        .unwrap_err();
    assert!(
        matches!(error, ScanError::AllocationFailed { bytes: Some(b), .. } if b == 1 << 63),
        "{error:?}"
    );
}

#[test]
fn chunk_maps_too_large_for_memory_are_allocation_errors() {
    assert!(matches!(
        ChunkMap::<f32>::identity(usize::MAX),
        Err(ScanError::AllocationFailed {
            operation: "ChunkMap::identity",
            ..
        })
    ));
    let zero = Array2::<f32>::zeros((1, 1));
    let wide = zero.broadcast((1, 1 << 62)).unwrap();
    assert!(matches!(
        forward_chunk_map(wide, wide, Direction::Forward),
        Err(ScanError::AllocationFailed {
            operation: "forward_chunk_map",
            ..
        })
    ));
}

#[test]
fn many_steps_of_no_features_need_no_memory() {
    let empty = ArrayView2::<f64>::from_shape((1 << 62, 0), &[]).unwrap();
    let grads = Reference
        .backward(BackwardInputs {
            decay: empty,
            state: empty,
            initial: None,
            grad_state: empty,
            grad_last: None,
            direction: Direction::Forward,
        })
        .unwrap();
    assert_eq!(grads.decay.dim(), (1 << 62, 0));
}

#[test]
fn a_3d_initial_state_too_large_to_flatten_is_an_allocation_error() {
    let zero = Array3::<f32>::zeros((1, 1, 1));
    let decay = zero.broadcast((0, HUGE.0, HUGE.1)).unwrap();
    let one = Array2::<f32>::zeros((1, 1));
    let mut no_state: [f32; 0] = [];
    let state = ArrayViewMut3::from_shape((0, HUGE.0, HUGE.1), &mut no_state).unwrap();
    let result = forward_3d(
        &Reference,
        ForwardInputs3 {
            decay,
            impulse: decay,
            initial: Some(one.broadcast(HUGE).unwrap()),
            time_axis: 0,
            direction: Direction::Forward,
        },
        state,
    );
    assert!(
        matches!(
            result,
            Err(ScanError::AllocationFailed {
                operation: "forward_3d",
                buffer: "initial",
                ..
            })
        ),
        "{result:?}"
    );
}
