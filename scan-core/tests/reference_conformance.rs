//! The reference itself passes the conformance suite (against its f64 evaluation), which
//! checks the suite's plumbing: layouts, pieces, packing, 3-D views and shape errors.

scan_core::conformance_suite!(scan_core::Reference);

use ndarray::{Array2, Array3};
use scan_core::layout::{forward_3d, ForwardInputs3};
use scan_core::{Direction, ScanError};

#[test]
fn invalid_time_axis_is_an_error() {
    let a = Array3::<f32>::zeros((2, 3, 4));
    let mut h = Array3::<f32>::zeros((2, 3, 4));
    let result = forward_3d(
        &scan_core::Reference,
        ForwardInputs3 {
            decay: a.view(),
            impulse: a.view(),
            initial: None,
            time_axis: 3,
            direction: Direction::Forward,
        },
        h.view_mut(),
    );
    assert!(
        matches!(result, Err(ScanError::InvalidTimeAxis { time_axis: 3, .. })),
        "{result:?}"
    );
}

#[test]
fn shape_error_message_names_argument_and_shapes() {
    let a = Array3::<f32>::zeros((2, 3, 4));
    let x = Array3::<f32>::zeros((2, 3, 5));
    let mut h = Array3::<f32>::zeros((2, 3, 4));
    let error = forward_3d(
        &scan_core::Reference,
        ForwardInputs3 {
            decay: a.view(),
            impulse: x.view(),
            initial: None,
            time_axis: 0,
            direction: Direction::Forward,
        },
        h.view_mut(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "forward_3d: `impulse` has shape [2, 3, 5], expected [2, 3, 4]"
    );
    let initial = Array2::<f32>::zeros((4, 3));
    let error = forward_3d(
        &scan_core::Reference,
        ForwardInputs3 {
            decay: a.view(),
            impulse: a.view(),
            initial: Some(initial.view()),
            time_axis: 0,
            direction: Direction::Forward,
        },
        h.view_mut(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "forward_3d: `initial` has shape [4, 3], expected [3, 4]"
    );
}
