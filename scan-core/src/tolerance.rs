//! How close a backend must come to the reference, relative to the result's magnitude.
//!
//! A backend may reassociate the recurrence (chunks, SIMD lanes, tiles), so its rounding
//! differs from the serial loop's. The error of either is bounded by a multiple of the
//! unit roundoff times the *magnitude* of the result, the same recurrence run on absolute
//! values: `m_t = |a_t|·m_{t-1} + |x_t|`. The allowed error at each element is
//! [`relative_tolerance`] times that magnitude. A wrong carry or a skipped step gives
//! errors of the order of the magnitude itself, far above the bound.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};

use crate::buffer::{try_array_2d, try_collect};
use crate::{
    BackwardInputs, Direction, Element, ForwardInputs, Gradients, LinearScan, Reference, ScanError,
};

/// The relative tolerance for a scan of `n_steps` steps in element type `E`:
/// `32·ε·(1 + √T)` (rounding errors grow like a random walk over the steps).
/// For f32 and T = 10⁵ that is 1.2·10⁻³ of the magnitude; for f64, 2.3·10⁻¹².
pub fn relative_tolerance<E: Element>(n_steps: usize) -> f64 {
    32.0 * E::epsilon().as_f64() * (1.0 + (n_steps as f64).sqrt())
}

/// A copy of `view` (the argument `argument` of `operation`) in f64, allocated fallibly.
fn to_f64<E: Element>(
    operation: &'static str,
    argument: &'static str,
    view: ArrayView2<'_, E>,
    abs: bool,
) -> Result<Array2<f64>, ScanError> {
    let values = view
        .iter()
        .map(|v| if abs { v.as_f64().abs() } else { v.as_f64() });
    try_array_2d(operation, argument, view.dim(), values)
}

fn to_f64_1d<E: Element>(
    operation: &'static str,
    argument: &'static str,
    view: Option<&ArrayView1<'_, E>>,
    abs: bool,
) -> Result<Option<Array1<f64>>, ScanError> {
    view.map(|v| {
        let values = v
            .iter()
            .map(|v| if abs { v.as_f64().abs() } else { v.as_f64() });
        try_collect(operation, argument, &[v.len()], values).map(Array1::from_vec)
    })
    .transpose()
}

/// The reference forward in f64 on the inputs (`abs = false`) or on their absolute values
/// (`abs = true`, the magnitude). Returns the [`ScanError`] of a wrong shape or of copies
/// too large for memory.
pub fn reference_forward_f64<E: Element>(
    inputs: &ForwardInputs<'_, E>,
    abs: bool,
) -> Result<Array2<f64>, ScanError> {
    const OP: &str = "reference_forward_f64";
    let decay = to_f64(OP, "decay", inputs.decay.view(), abs)?;
    let impulse = to_f64(OP, "impulse", inputs.impulse.view(), abs)?;
    let initial = to_f64_1d(OP, "initial", inputs.initial.as_ref(), abs)?;
    Reference.forward(ForwardInputs {
        decay: decay.view(),
        impulse: impulse.view(),
        initial: initial.as_ref().map(|v| v.view()),
        direction: inputs.direction,
    })
}

/// The reference backward in f64 on the inputs or on their absolute values (the
/// magnitude), with the errors of [`reference_forward_f64`].
pub fn reference_backward_f64<E: Element>(
    inputs: &BackwardInputs<'_, E>,
    abs: bool,
) -> Result<Gradients<f64>, ScanError> {
    const OP: &str = "reference_backward_f64";
    let decay = to_f64(OP, "decay", inputs.decay.view(), abs)?;
    let state = to_f64(OP, "state", inputs.state.view(), abs)?;
    let grad_state = to_f64(OP, "grad_state", inputs.grad_state.view(), abs)?;
    let initial = to_f64_1d(OP, "initial", inputs.initial.as_ref(), abs)?;
    let grad_last = to_f64_1d(OP, "grad_last", inputs.grad_last.as_ref(), abs)?;
    Reference.backward(BackwardInputs {
        decay: decay.view(),
        state: state.view(),
        initial: initial.as_ref().map(|v| v.view()),
        grad_state: grad_state.view(),
        grad_last: grad_last.as_ref().map(|v| v.view()),
        direction: inputs.direction,
    })
}

/// Why a comparison failed.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Mismatch {
    /// The three arrays do not have the same shape; nothing was compared.
    Shape {
        /// Shape of what the backend produced.
        actual: Vec<usize>,
        /// Shape of what the reference produced.
        expected: Vec<usize>,
        /// Shape of the magnitudes.
        magnitude: Vec<usize>,
    },
    /// The worst element outside the tolerance.
    Element {
        /// Index of the element (`[t, f]`, or `[f]` for 1-D outputs).
        index: Vec<usize>,
        /// What the backend produced.
        actual: f64,
        /// What the reference produced.
        expected: f64,
        /// The allowed absolute error at that element.
        bound: f64,
    },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shape {
                actual,
                expected,
                magnitude,
            } => write!(
                f,
                "in shape: got {actual:?}, expected {expected:?} (magnitudes {magnitude:?})"
            ),
            Self::Element {
                index,
                actual,
                expected,
                bound,
            } => write!(
                f,
                "at {index:?}: got {actual}, expected {expected} (allowed error {bound:e})"
            ),
        }
    }
}

fn check_same_shape(
    actual: &[usize],
    expected: &[usize],
    magnitude: &[usize],
) -> Result<(), Mismatch> {
    if actual == expected && expected == magnitude {
        Ok(())
    } else {
        Err(Mismatch::Shape {
            actual: actual.to_vec(),
            expected: expected.to_vec(),
            magnitude: magnitude.to_vec(),
        })
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
/// smallest normal number of `E`; returns the worst offending element, or
/// [`Mismatch::Shape`] when the three arrays' shapes differ.
pub fn check_close_2d<E: Element>(
    actual: ArrayView2<'_, E>,
    expected: ArrayView2<'_, f64>,
    magnitude: ArrayView2<'_, f64>,
    rtol: f64,
) -> Result<(), Mismatch> {
    check_same_shape(actual.shape(), expected.shape(), magnitude.shape())?;
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
                        Mismatch::Element {
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
    check_same_shape(actual.shape(), expected.shape(), magnitude.shape())?;
    check_close_2d(
        actual.insert_axis(Axis(0)),
        expected.insert_axis(Axis(0)),
        magnitude.insert_axis(Axis(0)),
        rtol,
    )
    .map_err(|mut mismatch| {
        if let Mismatch::Element { index, .. } = &mut mismatch {
            index.remove(0);
        }
        mismatch
    })
}

/// Index of processing step `k` (0-based) in a direction, for tests and tools; `None`
/// when `k ≥ n_steps` (there is no such step).
pub fn step_index(n_steps: usize, direction: Direction, k: usize) -> Option<usize> {
    (k < n_steps).then(|| match direction {
        Direction::Forward => k,
        Direction::Reverse => n_steps - 1 - k,
    })
}
