//! Non-finite values: every backend must return the serial recurrence's IEEE result.
//!
//! The oracle here is [`Reference`] run in the element type itself (not in f64), since
//! the contract is the serial loop's IEEE arithmetic: NaN exactly where it gives NaN, ±∞
//! exactly where it gives ±∞ (same sign), finite values elsewhere, within the usual
//! tolerance. The values are drawn so that the traps of a parallel scan occur: decays so
//! small that the product of two underflows to 0 (then `0·∞` would give NaN where the serial
//! loop keeps ∞), exact zeros after an infinity (the serial loop gives NaN there), infinities
//! of both signs and NaN in impulses, initial states and gradients.
//!
//! The promise covers finite decays of magnitude at most 1 (see the crate doc of
//! `scan_core`); [`check_no_panic`] runs every other value too, asking only for `Ok` or a
//! shape error, never a panic.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    check_close_1d, check_close_2d, reference_error, run_backward, run_forward, scan_error, Case,
    CaseData, DecayKind, LaidOut, Layout,
};
use crate::tolerance::{reference_backward_f64, reference_forward_f64, relative_tolerance};
use crate::{
    BackwardInputs, BackwardOutputs, Direction, Element, ForwardInputs, LinearScan, Reference,
    ScanError,
};

/// A decay so small that the product of two underflows to zero (about 10⁻²³ in f32,
/// 10⁻¹⁸⁵ in f64), while a serial loop multiplying it into an infinite state keeps ±∞.
pub fn tiny_decay<E: Element>() -> E {
    E::min_positive_value().powf(E::from_f64(0.6))
}

/// Draws the values of an IEEE case from its seed: decays in [−1, 1] with many tiny values
/// (and, in some cases, exact zeros), impulses, gradients and initial states with ±∞ and NaN.
pub fn ieee_data<E: Element>(case: &Case) -> CaseData<E> {
    let mut rng = ChaCha8Rng::seed_from_u64(case.seed);
    let dim = (case.n_steps, case.n_features);
    // Per case: how often non-finite values and exact zeros occur, so that some cases keep
    // an infinity alive for many steps and others reach NaN quickly.
    let special = [0.0005, 0.003, 0.02][rng.gen_range(0..3)];
    let zeros = [0.0, 0.002, 0.05][rng.gen_range(0..3)];
    let tiny = tiny_decay::<E>();
    let decay = Array2::from_shape_simple_fn(dim, || {
        let u: f64 = rng.gen();
        if u < zeros {
            E::zero()
        } else if u < 0.4 {
            if rng.gen_bool(0.8) {
                tiny
            } else {
                -tiny
            }
        } else if u < 0.5 {
            E::one()
        } else {
            E::from_f64(rng.gen_range(-1.0..1.0))
        }
    });
    let mut value = |scale: f64| -> E {
        let u: f64 = rng.gen();
        if u < special * 0.45 {
            E::infinity()
        } else if u < special * 0.9 {
            E::neg_infinity()
        } else if u < special {
            E::nan()
        } else {
            E::from_f64(rng.gen_range(-scale..scale))
        }
    };
    let impulse = Array2::from_shape_simple_fn(dim, || value(1.0));
    let grad_state = Array2::from_shape_simple_fn(dim, || value(1.0));
    // Initial states are non-finite far more often: an infinite h0 followed by tiny decays
    // is the simplest trap.
    let mut boundary = |with: bool| {
        with.then(|| {
            Array1::from_shape_simple_fn(dim.1, || match rng.gen_range(0..10) {
                0..=2 => E::infinity(),
                3 => E::neg_infinity(),
                4 => E::nan(),
                _ => E::from_f64(rng.gen_range(-2.0..2.0)),
            })
        })
    };
    let initial = boundary(case.with_initial);
    let grad_last = boundary(case.with_grad_last);
    CaseData {
        decay,
        impulse,
        grad_state,
        initial,
        grad_last,
    }
}

/// Whether `actual` is in the IEEE class of `expected`: NaN, the same infinity, or finite.
fn same_class<E: Element>(actual: E, expected: E) -> bool {
    if expected.is_nan() {
        actual.is_nan()
    } else if expected.is_infinite() {
        actual == expected
    } else {
        actual.is_finite()
    }
}

fn class_mismatch(
    what: &str,
    case: &Case,
    index: &[usize],
    actual: impl std::fmt::Display,
    expected: impl std::fmt::Display,
) -> TestCaseError {
    TestCaseError::fail(format!(
        "{what}{index:?} is {actual}, the serial IEEE result is {expected} \
         (T = {}, F = {}, {:?}, initial: {}, layouts {:?} -> {:?})",
        case.n_steps,
        case.n_features,
        case.direction,
        case.with_initial,
        case.input_layouts,
        case.output_layouts
    ))
}

fn check_classes_2d<E: Element>(
    what: &str,
    case: &Case,
    actual: ArrayView2<'_, E>,
    oracle: ArrayView2<'_, E>,
) -> Result<(), TestCaseError> {
    for ((index, &a), &e) in actual.indexed_iter().zip(oracle.iter()) {
        if !same_class(a, e) {
            return Err(class_mismatch(what, case, &[index.0, index.1], a, e));
        }
    }
    Ok(())
}

pub(super) fn check_classes_1d<E: Element>(
    what: &str,
    case: &Case,
    actual: ArrayView1<'_, E>,
    oracle: ArrayView1<'_, E>,
) -> Result<(), TestCaseError> {
    for ((index, &a), &e) in actual.indexed_iter().zip(oracle.iter()) {
        if !same_class(a, e) {
            return Err(class_mismatch(what, case, &[index], a, e));
        }
    }
    Ok(())
}

fn mismatch(what: &str, case: &Case, detail: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!(
        "{what} differs from the reference {detail} (T = {}, F = {}, {:?}, IEEE case)",
        case.n_steps, case.n_features, case.direction
    ))
}

fn forward_inputs<'a, E: Element>(case: &Case, data: &'a CaseData<E>) -> ForwardInputs<'a, E> {
    ForwardInputs {
        decay: data.decay.view(),
        impulse: data.impulse.view(),
        initial: data.initial.as_ref().map(|v| v.view()),
        direction: case.direction,
    }
}

/// Forward on `data`: the serial IEEE classes, and finite values within tolerance.
pub fn check_ieee_forward_data<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
    data: &CaseData<E>,
) -> Result<(), TestCaseError> {
    let actual = run_forward(backend, case, data).map_err(scan_error)?;
    let inputs = forward_inputs(case, data);
    let oracle = Reference.forward(inputs.clone()).map_err(scan_error)?;
    check_classes_2d("forward state", case, actual.view(), oracle.view())?;
    check_close_2d(
        actual.view(),
        reference_forward_f64(&inputs, false)
            .map_err(reference_error)?
            .view(),
        reference_forward_f64(&inputs, true)
            .map_err(reference_error)?
            .view(),
        relative_tolerance::<E>(case.n_steps),
    )
    .map_err(|m| mismatch("forward state", case, m))
}

/// Backward on `data` (from the serial IEEE states): classes and values as for forward.
pub fn check_ieee_backward_data<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
    data: &CaseData<E>,
) -> Result<(), TestCaseError> {
    let state = Reference
        .forward(forward_inputs(case, data))
        .map_err(scan_error)?;
    let actual = run_backward(backend, case, data, &state).map_err(scan_error)?;
    let inputs = BackwardInputs {
        decay: data.decay.view(),
        state: state.view(),
        initial: data.initial.as_ref().map(|v| v.view()),
        grad_state: data.grad_state.view(),
        grad_last: data.grad_last.as_ref().map(|v| v.view()),
        direction: case.direction,
    };
    let oracle = Reference.backward(inputs.clone()).map_err(scan_error)?;
    check_classes_2d("∂L/∂x", case, actual.impulse.view(), oracle.impulse.view())?;
    check_classes_2d("∂L/∂a", case, actual.decay.view(), oracle.decay.view())?;
    check_classes_1d("∂L/∂h0", case, actual.initial.view(), oracle.initial.view())?;
    let expected = reference_backward_f64(&inputs, false).map_err(reference_error)?;
    let magnitude = reference_backward_f64(&inputs, true).map_err(reference_error)?;
    let rtol = relative_tolerance::<E>(case.n_steps);
    check_close_2d(
        actual.impulse.view(),
        expected.impulse.view(),
        magnitude.impulse.view(),
        rtol,
    )
    .map_err(|m| mismatch("∂L/∂x", case, m))?;
    check_close_2d(
        actual.decay.view(),
        expected.decay.view(),
        magnitude.decay.view(),
        rtol,
    )
    .map_err(|m| mismatch("∂L/∂a", case, m))?;
    check_close_1d(
        actual.initial.view(),
        expected.initial.view(),
        magnitude.initial.view(),
        rtol,
    )
    .map_err(|m| mismatch("∂L/∂h0", case, m))
}

/// Random IEEE case, forward (a property for [`super::property`]).
pub fn check_ieee_forward<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    check_ieee_forward_data(backend, case, &ieee_data::<E>(case))
}

/// Random IEEE case, backward (a property for [`super::property`]).
pub fn check_ieee_backward<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    check_ieee_backward_data(backend, case, &ieee_data::<E>(case))
}

/// One fixed IEEE case: `n_steps` × `n_features`, all decays `decay`, impulses 1 except
/// `impulse_at.1` at step `impulse_at.0`, an optional initial state.
struct Fixed {
    n_steps: usize,
    n_features: usize,
    decay: f64,
    impulse_at: (usize, f64),
    initial: Option<f64>,
}

impl Fixed {
    fn data<E: Element>(&self, tiny: E) -> CaseData<E> {
        let dim = (self.n_steps, self.n_features);
        let as_e = |v: f64| match v {
            1e-30 => tiny,
            -1e-30 => -tiny,
            v => E::from_f64(v),
        };
        let mut impulse = Array2::from_elem(dim, E::one());
        if self.n_steps > 0 {
            impulse
                .row_mut(self.impulse_at.0)
                .fill(as_e(self.impulse_at.1));
        }
        CaseData {
            decay: Array2::from_elem(dim, as_e(self.decay)),
            impulse,
            grad_state: Array2::from_elem(dim, E::one()),
            initial: self.initial.map(|h| Array1::from_elem(dim.1, as_e(h))),
            grad_last: self.initial.map(|g| Array1::from_elem(dim.1, as_e(g))),
        }
    }
}

/// The fixed reproductions: an infinite impulse or initial state followed by tiny decays
/// (issue 8: T = 4096, F = 1, decays 10⁻³⁰ gave NaN in a parallel backend where the
/// serial loop gives ∞), by decays of exactly 0 (NaN) and of 1, a NaN impulse, at widths
/// and lengths that reach every kernel, in both directions and several layouts. A decay
/// written 1e-30 here stands for [`tiny_decay`] in f64.
pub fn check_ieee_cases<E: Element, B: LinearScan<E> + ?Sized>(backend: &B) {
    let inf = f64::INFINITY;
    let mut fixed = Vec::new();
    for (n_steps, n_features) in [(4096, 1), (4099, 2), (3001, 4), (1 << 17, 1), (700, 37)] {
        for (decay, impulse_at, initial) in [
            (1e-30, (0, inf), None),
            (1e-30, (n_steps / 3, -inf), Some(0.5)),
            (1e-30, (0, 0.25), Some(inf)),
            (0.0, (1, inf), None),
            (1.0, (n_steps / 2, f64::NAN), None),
            (-1e-30, (n_steps - 1, inf), Some(-inf)),
        ] {
            fixed.push(Fixed {
                n_steps,
                n_features,
                decay,
                impulse_at,
                initial,
            });
        }
    }
    let layouts = [Layout::RowMajor, Layout::ColumnMajor, Layout::TimeReversed];
    for (i, fixed) in fixed.iter().enumerate() {
        let data = fixed.data::<E>(tiny_decay::<E>());
        for direction in [Direction::Forward, Direction::Reverse] {
            let layout = layouts[i % layouts.len()];
            let case = Case {
                n_steps: fixed.n_steps,
                n_features: fixed.n_features,
                input_layouts: [layout; 3],
                output_layouts: [layout; 2],
                with_initial: fixed.initial.is_some(),
                with_grad_last: fixed.initial.is_some(),
                direction,
                decay_kind: DecayKind::Mixed,
                seed: 0,
            };
            if let Err(error) = check_ieee_forward_data(backend, &case, &data)
                .and_then(|()| check_ieee_backward_data(backend, &case, &data))
                .and_then(|()| super::check_ieee_maps_data(backend, &case, &data))
            {
                panic!(
                    "{} {}: decays {:e}, impulse {:?}, initial {:?}: {error}",
                    backend.name(),
                    E::NAME,
                    fixed.decay,
                    fixed.impulse_at,
                    fixed.initial
                );
            }
        }
    }
}

/// Any value at all, in every argument: finite extremes, subnormals, ±0, ±∞, NaN.
fn wild<E: Element>(rng: &mut ChaCha8Rng) -> E {
    match rng.gen_range(0..12) {
        0 => E::nan(),
        1 => E::infinity(),
        2 => E::neg_infinity(),
        3 => E::max_value(),
        4 => E::min_value(),
        5 => E::min_positive_value(),
        6 => E::min_positive_value() / E::from_f64(1024.0),
        7 => E::zero(),
        8 => -E::zero(),
        9 => E::from_f64(1e30),
        _ => E::from_f64(rng.gen_range(-3.0..3.0)),
    }
}

/// Which argument a no-panic case gets wrong, if any.
#[derive(Clone, Copy, Debug)]
enum Wrong {
    Nothing,
    ImpulseRows,
    InitialLength,
    OutputFeatures,
    GradStateRows,
    GradInitialLength,
}

/// No input makes a backend panic: random shapes, layouts and values (NaN, ±∞, extremes,
/// subnormals, any decays), both directions, with and without optional arguments; a
/// wrong shape gives `ShapeMismatch` and leaves every output untouched, anything else `Ok`.
pub fn check_no_panic<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    let mut rng = ChaCha8Rng::seed_from_u64(case.seed ^ 0x5eed);
    let dim = (case.n_steps, case.n_features);
    let values = |rng: &mut ChaCha8Rng, (t, f): (usize, usize)| {
        Array2::from_shape_simple_fn((t, f), || wild::<E>(rng))
    };
    let wrong = [
        Wrong::Nothing,
        Wrong::Nothing,
        Wrong::Nothing,
        Wrong::ImpulseRows,
        Wrong::InitialLength,
        Wrong::OutputFeatures,
        Wrong::GradStateRows,
        Wrong::GradInitialLength,
    ][rng.gen_range(0..8)];
    let grow = |n: usize, yes: bool| if yes { n + 1 } else { n };
    let decay = LaidOut::from_array(case.input_layouts[0], &values(&mut rng, dim));
    let impulse_dim = (grow(dim.0, matches!(wrong, Wrong::ImpulseRows)), dim.1);
    let impulse = LaidOut::from_array(case.input_layouts[1], &values(&mut rng, impulse_dim));
    let initial_len = grow(dim.1, matches!(wrong, Wrong::InitialLength));
    let initial = (case.with_initial || matches!(wrong, Wrong::InitialLength))
        .then(|| Array1::from_shape_simple_fn(initial_len, || wild::<E>(&mut rng)));
    let out_dim = (dim.0, grow(dim.1, matches!(wrong, Wrong::OutputFeatures)));
    let sentinel = E::from_f64(-7.25);
    let mut state = LaidOut::zeros(case.output_layouts[0], out_dim);
    state.view_mut().fill(sentinel);
    let forward_wrong = matches!(
        wrong,
        Wrong::ImpulseRows | Wrong::InitialLength | Wrong::OutputFeatures
    );
    let result = backend.forward_into(
        ForwardInputs {
            decay: decay.view(),
            impulse: impulse.view(),
            initial: initial.as_ref().map(|v| v.view()),
            direction: case.direction,
        },
        state.view_mut(),
    );
    expect_outcome("forward", result, forward_wrong, || {
        state.view().iter().all(|&v| v == sentinel)
    })?;

    let states = values(&mut rng, dim);
    let state_in = LaidOut::from_array(case.input_layouts[1], &states);
    let grad_dim = (grow(dim.0, matches!(wrong, Wrong::GradStateRows)), dim.1);
    let grad_state = LaidOut::from_array(case.input_layouts[2], &values(&mut rng, grad_dim));
    let grad_last = case
        .with_grad_last
        .then(|| Array1::from_shape_simple_fn(dim.1, || wild::<E>(&mut rng)));
    let initial = case
        .with_initial
        .then(|| Array1::from_shape_simple_fn(dim.1, || wild::<E>(&mut rng)));
    let mut grad_decay = LaidOut::zeros(case.output_layouts[0], dim);
    let mut grad_impulse = LaidOut::zeros(case.output_layouts[1], dim);
    grad_decay.view_mut().fill(sentinel);
    grad_impulse.view_mut().fill(sentinel);
    let initial_out = grow(dim.1, matches!(wrong, Wrong::GradInitialLength));
    let mut grad_initial = Array1::from_elem(initial_out, sentinel);
    let backward_wrong = matches!(wrong, Wrong::GradStateRows | Wrong::GradInitialLength);
    let result = backend.backward_into(
        BackwardInputs {
            decay: decay.view(),
            state: state_in.view(),
            initial: initial.as_ref().map(|v| v.view()),
            grad_state: grad_state.view(),
            grad_last: grad_last.as_ref().map(|v| v.view()),
            direction: case.direction,
        },
        BackwardOutputs {
            grad_decay: grad_decay.view_mut(),
            grad_impulse: grad_impulse.view_mut(),
            grad_initial: Some(grad_initial.view_mut()),
        },
    );
    expect_outcome("backward", result, backward_wrong, || {
        [grad_decay.view(), grad_impulse.view()]
            .iter()
            .all(|v| v.iter().all(|&v| v == sentinel))
            && grad_initial.iter().all(|&v| v == sentinel)
    })
}

fn expect_outcome(
    operation: &str,
    result: Result<(), ScanError>,
    shape_is_wrong: bool,
    outputs_untouched: impl FnOnce() -> bool,
) -> Result<(), TestCaseError> {
    match (result, shape_is_wrong) {
        (Ok(()), false) => Ok(()),
        (Err(ScanError::ShapeMismatch { .. }), true) => {
            prop_assert!(
                outputs_untouched(),
                "{operation}: a shape error wrote to the outputs"
            );
            Ok(())
        }
        (Ok(()), true) => Err(TestCaseError::fail(format!(
            "{operation}: a wrong shape was accepted"
        ))),
        (Err(error), _) => Err(TestCaseError::fail(format!(
            "{operation}: unexpected error {error}"
        ))),
    }
}
