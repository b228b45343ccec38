//! Chunk maps: a backend's [`LinearScan::forward_map`] and [`LinearScan::backward_map`]
//! against the f64 reference, and against the serial maps' IEEE classes on non-finite data.
//!
//! The forward map's `impulse` is the chunk's last state (in processing order) from zero and
//! its `decay` the product of the decays; the backward map's `impulse` is the chunk's ∂L/∂h0
//! with no gradient on its last state. Products below the smallest normal number may be
//! flushed to zero, which the tolerances' absolute slack of one smallest normal number
//! allows.

use ndarray::{Array1, Array2, ArrayView1};
use proptest::test_runner::TestCaseError;

use super::{fail, ieee_data, reference_error, scan_error, tolerance_for, Case, CaseData, LaidOut};
use crate::tolerance::{
    check_close_1d, reference_backward_f64, reference_forward_f64, relative_tolerance,
};
use crate::{
    backward_chunk_map, forward_chunk_map, BackwardInputs, ChunkMap, Direction, Element,
    ForwardInputs, LinearScan,
};

/// The backend's forward and backward maps of a case, inputs in the case's layouts.
fn run_maps<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
    data: &CaseData<E>,
) -> Result<(ChunkMap<E>, ChunkMap<E>), TestCaseError> {
    let decay = LaidOut::from_array(case.input_layouts[0], &data.decay);
    let impulse = LaidOut::from_array(case.input_layouts[1], &data.impulse);
    let grad_state = LaidOut::from_array(case.input_layouts[2], &data.grad_state);
    let forward = backend
        .forward_map(decay.view(), impulse.view(), case.direction)
        .map_err(scan_error)?;
    let backward = backend
        .backward_map(decay.view(), grad_state.view(), case.direction)
        .map_err(scan_error)?;
    for (map, what) in [(&forward, "forward map"), (&backward, "backward map")] {
        if map.decay.len() != case.n_features || map.impulse.len() != case.n_features {
            return Err(fail(what, case, "in length"));
        }
    }
    Ok((forward, backward))
}

/// Per feature, in f64: the product of the decays, the forward map's impulse (the last
/// state from zero) and the backward map's impulse (∂L/∂h0 from a zero `grad_last`).
type ExpectedMaps = (Array1<f64>, Array1<f64>, Array1<f64>);

/// The expected maps in f64: on the values (`abs = false`) or on their absolute values
/// (`abs = true`, the magnitudes that scale the tolerance).
fn expected_maps<E: Element>(
    case: &Case,
    data: &CaseData<E>,
    abs: bool,
) -> Result<ExpectedMaps, TestCaseError> {
    let forward = ForwardInputs {
        decay: data.decay.view(),
        impulse: data.impulse.view(),
        initial: None,
        direction: case.direction,
    };
    let states = reference_forward_f64(&forward, abs).map_err(reference_error)?;
    let last = match (case.n_steps, case.direction) {
        (0, _) => Array1::zeros(case.n_features),
        (n, Direction::Forward) => states.row(n - 1).to_owned(),
        (_, Direction::Reverse) => states.row(0).to_owned(),
    };
    let backward = BackwardInputs {
        decay: data.decay.view(),
        // ∂L/∂h0 does not depend on the states.
        state: data.grad_state.view(),
        initial: None,
        grad_state: data.grad_state.view(),
        grad_last: None,
        direction: case.direction,
    };
    let initial_gradient = reference_backward_f64(&backward, abs)
        .map_err(reference_error)?
        .initial;
    let product = data.decay.map_axis(ndarray::Axis(0), |column| {
        column
            .iter()
            .map(|&a| a.as_f64())
            .fold(1.0, |p, a| if abs { p * a.abs() } else { p * a })
    });
    Ok((product, last, initial_gradient))
}

fn check_map_values<E: Element>(
    case: &Case,
    data: &CaseData<E>,
    (forward, backward): (&ChunkMap<E>, &ChunkMap<E>),
    rtol: f64,
) -> Result<(), TestCaseError> {
    let (product, last, initial) = expected_maps(case, data, false)?;
    let (product_m, last_m, initial_m) = expected_maps(case, data, true)?;
    let close = |what: &str, actual: ArrayView1<'_, E>, expected: &Array1<f64>, m: &Array1<f64>| {
        check_close_1d(actual, expected.view(), m.view(), rtol).map_err(|e| fail(what, case, e))
    };
    close(
        "forward map decay",
        forward.decay.view(),
        &product,
        &product_m,
    )?;
    close(
        "forward map impulse",
        forward.impulse.view(),
        &last,
        &last_m,
    )?;
    close(
        "backward map decay",
        backward.decay.view(),
        &product,
        &product_m,
    )?;
    close(
        "backward map impulse",
        backward.impulse.view(),
        &initial,
        &initial_m,
    )
}

/// Both maps equal the reference (a property for [`super::property`]).
pub fn check_maps<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    let data = case.data::<E>();
    let (forward, backward) = run_maps(backend, case, &data)?;
    check_map_values(case, &data, (&forward, &backward), tolerance_for::<E>(case))
}

/// Both maps on `data`: the IEEE classes of the serial maps ([`forward_chunk_map`],
/// [`backward_chunk_map`], computed in `E`), and finite values within tolerance.
pub fn check_ieee_maps_data<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
    data: &CaseData<E>,
) -> Result<(), TestCaseError> {
    let (forward, backward) = run_maps(backend, case, data)?;
    let serial_forward = forward_chunk_map(data.decay.view(), data.impulse.view(), case.direction)
        .map_err(scan_error)?;
    let serial_backward =
        backward_chunk_map(data.decay.view(), data.grad_state.view(), case.direction)
            .map_err(scan_error)?;
    let pairs = [
        ("forward map decay", &forward.decay, &serial_forward.decay),
        (
            "forward map impulse",
            &forward.impulse,
            &serial_forward.impulse,
        ),
        (
            "backward map decay",
            &backward.decay,
            &serial_backward.decay,
        ),
        (
            "backward map impulse",
            &backward.impulse,
            &serial_backward.impulse,
        ),
    ];
    for (what, actual, serial) in pairs {
        super::ieee::check_classes_1d(what, case, actual.view(), serial.view())?;
    }
    check_map_values(
        case,
        data,
        (&forward, &backward),
        relative_tolerance::<E>(case.n_steps),
    )
}

/// Random IEEE case, both maps (a property for [`super::property`]).
pub fn check_ieee_maps<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    check_ieee_maps_data(backend, case, &ieee_data::<E>(case))
}

/// Maps of inputs whose shapes differ are errors naming the argument.
pub fn check_map_shape_errors<E: Element, B: LinearScan<E> + ?Sized>(backend: &B) {
    let decay = Array2::<E>::zeros((5, 3));
    let other = Array2::<E>::zeros((5, 2));
    let forward = backend.forward_map(decay.view(), other.view(), Direction::Forward);
    let backward = backend.backward_map(decay.view(), other.view(), Direction::Reverse);
    for (result, argument) in [(forward, "impulse"), (backward, "grad_state")] {
        match result {
            Err(crate::ScanError::ShapeMismatch { argument: a, .. }) if a == argument => {}
            other => panic!(
                "{}: a map with a wrong `{argument}` shape gave {other:?}",
                backend.name()
            ),
        }
    }
}
