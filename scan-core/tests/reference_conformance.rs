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

#[test]
fn zero_features_in_3d_is_a_no_op() {
    use scan_core::layout::{backward_3d, BackwardInputs3, BackwardOutputs3};
    for dim in [(4, 0, 3), (4, 3, 0), (0, 2, 2)] {
        let a = Array3::<f64>::zeros(dim);
        let mut h = Array3::<f64>::from_elem(dim, 7.0);
        forward_3d(
            &scan_core::Reference,
            ForwardInputs3 {
                decay: a.view(),
                impulse: a.view(),
                initial: None,
                time_axis: 0,
                direction: Direction::Forward,
            },
            h.view_mut(),
        )
        .unwrap();
        let mut gd = Array3::<f64>::zeros(dim);
        let mut gx = Array3::<f64>::zeros(dim);
        backward_3d(
            &scan_core::Reference,
            BackwardInputs3 {
                decay: a.view(),
                state: a.view(),
                initial: None,
                grad_state: a.view(),
                grad_last: None,
                time_axis: 0,
                direction: Direction::Reverse,
            },
            BackwardOutputs3 {
                grad_decay: gd.view_mut(),
                grad_impulse: gx.view_mut(),
                grad_initial: None,
            },
        )
        .unwrap();
    }
}

#[test]
fn backward_3d_reports_bad_shapes_and_axes() {
    use scan_core::layout::{backward_3d, BackwardInputs3, BackwardOutputs3};
    let good = Array3::<f32>::zeros((5, 2, 3));
    let bad = Array3::<f32>::zeros((5, 2, 4));
    let state_bad = Array2::<f32>::zeros((3, 2));
    let run = |state: &Array3<f32>,
               grad: &Array3<f32>,
               initial: Option<&Array2<f32>>,
               axis: usize,
               out_bad: bool| {
        let mut gd = if out_bad { bad.clone() } else { good.clone() };
        let mut gx = good.clone();
        backward_3d(
            &scan_core::Reference,
            BackwardInputs3 {
                decay: good.view(),
                state: state.view(),
                initial: initial.map(|v| v.view()),
                grad_state: grad.view(),
                grad_last: None,
                time_axis: axis,
                direction: Direction::Forward,
            },
            BackwardOutputs3 {
                grad_decay: gd.view_mut(),
                grad_impulse: gx.view_mut(),
                grad_initial: None,
            },
        )
    };
    let argument = |r: Result<(), ScanError>| match r {
        Err(ScanError::ShapeMismatch { argument, .. }) => argument,
        other => panic!("expected a shape error, got {other:?}"),
    };
    assert_eq!(argument(run(&bad, &good, None, 0, false)), "state");
    assert_eq!(argument(run(&good, &bad, None, 0, false)), "grad_state");
    assert_eq!(
        argument(run(&good, &good, None, 0, true)),
        "grad_decay (output)"
    );
    assert_eq!(
        argument(run(&good, &good, Some(&state_bad), 0, false)),
        "initial"
    );
    assert!(matches!(
        run(&good, &good, None, 7, false),
        Err(ScanError::InvalidTimeAxis { time_axis: 7, .. })
    ));
    run(&good, &good, None, 1, false).unwrap();
}
