//! How close a backend must come to the reference, relative to the result's magnitude.
//!
//! A backend may reassociate the recurrence (chunks, SIMD lanes, tiles), so its rounding
//! differs from the serial loop's. The error of either is bounded by a multiple of the
//! unit roundoff times the *magnitude* of the result, the same recurrence run on absolute
//! values: `m_t = |a_t|·m_{t-1} + |x_t|`. The allowed error at each element is
//! [`relative_tolerance`] times that magnitude. A wrong carry or a skipped step gives
//! errors of the order of the magnitude itself, far above the bound.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Zip};

use crate::{BackwardInputs, Direction, Element, ForwardInputs, Gradients, LinearScan, Reference};

/// The relative tolerance for a scan of `n_steps` steps in element type `E`:
/// `32·ε·(1 + √T)` (rounding errors grow like a random walk over the steps).
/// For f32 and T = 10⁵ that is 1.2·10⁻³ of the magnitude; for f64, 2.3·10⁻¹².
pub fn relative_tolerance<E: Element>(n_steps: usize) -> f64 {
    32.0 * E::epsilon().as_f64() * (1.0 + (n_steps as f64).sqrt())
}

fn to_f64<E: Element>(view: ArrayView2<'_, E>, abs: bool) -> Array2<f64> {
    view.mapv(|v| if abs { v.as_f64().abs() } else { v.as_f64() })
}

fn to_f64_1d<E: Element>(view: Option<&ArrayView1<'_, E>>, abs: bool) -> Option<Array1<f64>> {
    view.map(|v| v.mapv(|v| if abs { v.as_f64().abs() } else { v.as_f64() }))
}

/// The reference forward in f64 on the inputs (`abs = false`) or on their absolute values
/// (`abs = true`, the magnitude).
pub fn reference_forward_f64<E: Element>(inputs: &ForwardInputs<'_, E>, abs: bool) -> Array2<f64> {
    let decay = to_f64(inputs.decay.view(), abs);
    let impulse = to_f64(inputs.impulse.view(), abs);
    let initial = to_f64_1d(inputs.initial.as_ref(), abs);
    Reference
        .forward(ForwardInputs {
            decay: decay.view(),
            impulse: impulse.view(),
            initial: initial.as_ref().map(|v| v.view()),
            direction: inputs.direction,
        })
        .expect("inputs were validated by the caller")
}

/// The reference backward in f64 on the inputs or on their absolute values (the magnitude).
pub fn reference_backward_f64<E: Element>(
    inputs: &BackwardInputs<'_, E>,
    abs: bool,
) -> Gradients<f64> {
    let decay = to_f64(inputs.decay.view(), abs);
    let state = to_f64(inputs.state.view(), abs);
    let grad_state = to_f64(inputs.grad_state.view(), abs);
    let initial = to_f64_1d(inputs.initial.as_ref(), abs);
    let grad_last = to_f64_1d(inputs.grad_last.as_ref(), abs);
    Reference
        .backward(BackwardInputs {
            decay: decay.view(),
            state: state.view(),
            initial: initial.as_ref().map(|v| v.view()),
            grad_state: grad_state.view(),
            grad_last: grad_last.as_ref().map(|v| v.view()),
            direction: inputs.direction,
        })
        .expect("inputs were validated by the caller")
}

/// The worst element of a comparison that failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Index of the element (`[t, f]`, or `[f]` for 1-D outputs).
    pub index: Vec<usize>,
    /// What the backend produced.
    pub actual: f64,
    /// What the reference produced.
    pub expected: f64,
    /// The allowed absolute error at that element.
    pub bound: f64,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at {:?}: got {}, expected {} (allowed error {:e})",
            self.index, self.actual, self.expected, self.bound
        )
    }
}

fn element_ok(actual: f64, expected: f64, bound: f64) -> bool {
    if !expected.is_finite() {
        // A non-finite result only needs to stay non-finite (see the crate doc).
        return !actual.is_finite();
    }
    if !bound.is_finite() {
        // The magnitude overflowed: rounding can then move the result arbitrarily far.
        return true;
    }
    (actual - expected).abs() <= bound
}

/// Checks `|actual − expected| ≤ rtol·magnitude + tiny` elementwise, where `tiny` is the
/// smallest normal number of `E`; returns the worst offending element.
pub fn check_close_2d<E: Element>(
    actual: ArrayView2<'_, E>,
    expected: ArrayView2<'_, f64>,
    magnitude: ArrayView2<'_, f64>,
    rtol: f64,
) -> Result<(), Mismatch> {
    let tiny = E::min_positive_value().as_f64();
    let mut worst: Option<(f64, Mismatch)> = None;
    Zip::indexed(actual)
        .and(expected)
        .and(magnitude)
        .for_each(|(t, f), &a, &e, &m| {
            let a = a.as_f64();
            let bound = rtol * m + tiny;
            if !element_ok(a, e, bound) {
                let excess = if (a - e).is_finite() {
                    (a - e).abs() / bound
                } else {
                    f64::INFINITY
                };
                if worst.as_ref().is_none_or(|(w, _)| excess > *w) {
                    worst = Some((
                        excess,
                        Mismatch {
                            index: vec![t, f],
                            actual: a,
                            expected: e,
                            bound,
                        },
                    ));
                }
            }
        });
    worst.map_or(Ok(()), |(_, m)| Err(m))
}

/// The 1-D counterpart of [`check_close_2d`].
pub fn check_close_1d<E: Element>(
    actual: ArrayView1<'_, E>,
    expected: ArrayView1<'_, f64>,
    magnitude: ArrayView1<'_, f64>,
    rtol: f64,
) -> Result<(), Mismatch> {
    let as_2d = |n: usize| (1, n);
    check_close_2d(
        actual
            .into_shape_with_order(as_2d(actual.len()))
            .expect("1-D to 2-D")
            .view(),
        expected
            .into_shape_with_order(as_2d(expected.len()))
            .expect("1-D to 2-D")
            .view(),
        magnitude
            .into_shape_with_order(as_2d(magnitude.len()))
            .expect("1-D to 2-D")
            .view(),
        rtol,
    )
    .map_err(|mut m| {
        m.index.remove(0);
        m
    })
}

/// Index of processing step `k` (0-based) in a direction, for tests and tools.
pub fn step_index(n_steps: usize, direction: Direction, k: usize) -> usize {
    match direction {
        Direction::Forward => k,
        Direction::Reverse => n_steps - 1 - k,
    }
}
