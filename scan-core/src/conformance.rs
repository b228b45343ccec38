//! The conformance suite every backend runs (feature `conformance`).
//!
//! Each function is one proptest property comparing a backend with the serial
//! [`Reference`](crate::Reference) on random problems: random T (0, 1, primes, non-powers
//! of two, up to `max_steps`), random F, random memory layouts for every array, with and
//! without h0, both directions, and decays that include exactly 0, exactly 1 and
//! "hard mode" values in [0.999, 1]. Tolerances are those of [`crate::tolerance`].
//!
//! [`check_maps`] and [`check_ieee_maps`] hold the chunk maps (`forward_map`,
//! `backward_map`) to the same standards.
//!
//! The [`check_ieee_forward`] family holds every backend to the serial recurrence's IEEE
//! result on inputs with ±∞ and NaN (module `ieee`), and [`check_no_panic`] feeds any value
//! and wrong shapes to the public API.
//!
//! A backend's test file instantiates the whole suite with one macro call:
//!
//! ```text
//! scan_core::conformance_suite!(scan_cpu::Parallel::default());
//! ```

use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod ieee;
mod maps;

pub use ieee::{
    check_ieee_backward, check_ieee_backward_data, check_ieee_cases, check_ieee_forward,
    check_ieee_forward_data, check_no_panic, ieee_data, tiny_decay,
};
pub use maps::{check_ieee_maps, check_ieee_maps_data, check_map_shape_errors, check_maps};

use crate::tolerance::{
    check_close_1d, check_close_2d, reference_backward_f64, reference_forward_f64,
    relative_tolerance,
};
use crate::{
    BackwardInputs, BackwardOutputs, Direction, Element, ForwardInputs, LinearScan, ScanError,
};

/// How an array is laid out in memory; every layout is viewed as a logical (T, F) array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Time-major, features contiguous.
    RowMajor,
    /// Time-contiguous (column-major).
    ColumnMajor,
    /// Row-major with 3 unused elements after every row.
    PaddedRows,
    /// Row-major, every other row of a (2T, F) buffer.
    EveryOtherStep,
    /// Row-major with a negative time stride.
    TimeReversed,
    /// Column-major with 5 unused elements after every column.
    PaddedColumns,
}

const LAYOUTS: [Layout; 6] = [
    Layout::RowMajor,
    Layout::ColumnMajor,
    Layout::PaddedRows,
    Layout::EveryOtherStep,
    Layout::TimeReversed,
    Layout::PaddedColumns,
];

/// An owned buffer viewed as a (T, F) array in a given layout.
#[derive(Clone, Debug)]
pub struct LaidOut<E> {
    buffer: Array2<E>,
    layout: Layout,
    dim: (usize, usize),
}

impl<E: Element> LaidOut<E> {
    /// A zeroed (T, F) array stored in `layout`.
    pub fn zeros(layout: Layout, (t, f): (usize, usize)) -> Self {
        let buffer = match layout {
            Layout::RowMajor | Layout::TimeReversed => Array2::zeros((t, f)),
            Layout::ColumnMajor => Array2::zeros((t, f).f()),
            Layout::PaddedRows => Array2::zeros((t, f + 3)),
            Layout::EveryOtherStep => Array2::zeros((2 * t, f)),
            Layout::PaddedColumns => Array2::zeros((t + 5, f).f()),
        };
        Self {
            buffer,
            layout,
            dim: (t, f),
        }
    }

    /// Copies `values` into a new buffer stored in `layout`.
    pub fn from_array(layout: Layout, values: &Array2<E>) -> Self {
        let mut laid = Self::zeros(layout, values.dim());
        laid.view_mut().assign(values);
        laid
    }

    /// The logical (T, F) view.
    pub fn view(&self) -> ArrayView2<'_, E> {
        let (t, f) = self.dim;
        match self.layout {
            Layout::RowMajor | Layout::ColumnMajor => self.buffer.view(),
            Layout::PaddedRows => self.buffer.slice(s![.., ..f]),
            Layout::EveryOtherStep => self.buffer.slice(s![..;2, ..]),
            Layout::TimeReversed => self.buffer.slice(s![..;-1, ..]),
            Layout::PaddedColumns => self.buffer.slice(s![..t, ..]),
        }
    }

    /// The logical (T, F) view, mutable.
    pub fn view_mut(&mut self) -> ArrayViewMut2<'_, E> {
        let (t, f) = self.dim;
        match self.layout {
            Layout::RowMajor | Layout::ColumnMajor => self.buffer.view_mut(),
            Layout::PaddedRows => self.buffer.slice_mut(s![.., ..f]),
            Layout::EveryOtherStep => self.buffer.slice_mut(s![..;2, ..]),
            Layout::TimeReversed => self.buffer.slice_mut(s![..;-1, ..]),
            Layout::PaddedColumns => self.buffer.slice_mut(s![..t, ..]),
        }
    }
}

/// The distribution decays are drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecayKind {
    /// Uniform in [0, 1).
    Uniform,
    /// "Hard mode": uniform in [0.999, 1], a tenth exactly 1 (slow decay hides carry bugs).
    Hard,
    /// A mix of exactly 0, exactly 1, 0.9999 and uniform values in (−1, 1).
    Mixed,
    /// Decays in {−1, 0, 1} and integer impulses in [−2, 2]: every result is an integer
    /// computed exactly, so backends must match the reference bit for bit. A dropped step
    /// or a carry from the wrong row cannot hide inside a rounding tolerance.
    Exact,
}

/// One random problem: its size, layouts, options and the seed of its values.
#[derive(Clone, Debug)]
pub struct Case {
    /// Number of time steps T.
    pub n_steps: usize,
    /// Number of features F.
    pub n_features: usize,
    /// Layouts of the input arrays (decay, impulse or state, gradient).
    pub input_layouts: [Layout; 3],
    /// Layouts of the output arrays.
    pub output_layouts: [Layout; 2],
    /// Whether an initial state is passed.
    pub with_initial: bool,
    /// Whether a last-state gradient is passed (backward).
    pub with_grad_last: bool,
    /// The processing order.
    pub direction: Direction,
    /// How decays are drawn.
    pub decay_kind: DecayKind,
    /// Seed of the values.
    pub seed: u64,
}

/// The values of a case, as row-major arrays.
#[derive(Clone, Debug)]
pub struct CaseData<E> {
    /// Decays, (T, F).
    pub decay: Array2<E>,
    /// Impulses, (T, F).
    pub impulse: Array2<E>,
    /// Upstream gradient ∂L/∂h, (T, F).
    pub grad_state: Array2<E>,
    /// Initial state, (F).
    pub initial: Option<Array1<E>>,
    /// Extra gradient on the last state, (F).
    pub grad_last: Option<Array1<E>>,
}

impl Case {
    /// Draws the case's values from its seed.
    pub fn data<E: Element>(&self) -> CaseData<E> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let dim = (self.n_steps, self.n_features);
        let kind = self.decay_kind;
        let decay = Array2::from_shape_simple_fn(dim, || {
            let value = match kind {
                DecayKind::Uniform => rng.gen_range(0.0..1.0),
                DecayKind::Hard if rng.gen_bool(0.1) => 1.0,
                DecayKind::Hard => rng.gen_range(0.999..=1.0),
                DecayKind::Mixed => match rng.gen_range(0..4) {
                    0 => 0.0,
                    1 => 1.0,
                    2 => 0.9999,
                    _ => rng.gen_range(-1.0..1.0),
                },
                DecayKind::Exact => f64::from(rng.gen_range(-1..=1)),
            };
            E::from_f64(value)
        });
        let mut uniform = |n: usize, scale: f64| -> Vec<E> {
            (0..n)
                .map(|_| match kind {
                    DecayKind::Exact => E::from_f64(f64::from(rng.gen_range(-2..=2))),
                    _ => E::from_f64(rng.gen_range(-scale..scale)),
                })
                .collect()
        };
        let len = dim.0 * dim.1;
        let impulse = Array2::from_shape_vec(dim, uniform(len, 1.0)).expect("shape");
        let grad_state = Array2::from_shape_vec(dim, uniform(len, 1.0)).expect("shape");
        let initial = self.with_initial.then(|| Array1::from(uniform(dim.1, 2.0)));
        let grad_last = self
            .with_grad_last
            .then(|| Array1::from(uniform(dim.1, 1.0)));
        CaseData {
            decay,
            impulse,
            grad_state,
            initial,
            grad_last,
        }
    }
}

fn layout_strategy() -> impl Strategy<Value = Layout> {
    proptest::sample::select(LAYOUTS.to_vec())
}

/// Time lengths: tiny, primes, powers of two and their neighbours, and anything up to
/// `max_steps`.
pub fn steps_strategy(max_steps: usize) -> impl Strategy<Value = usize> {
    let special: Vec<usize> = [
        0, 1, 2, 3, 5, 7, 13, 16, 17, 31, 63, 64, 65, 127, 257, 1021, 4093, 4096, 4099, 65521,
        65536, 65537, 99991,
    ]
    .into_iter()
    .filter(|&t| t <= max_steps)
    .collect();
    prop_oneof![
        3 => proptest::sample::select(special),
        2 => 0..=64usize,
        2 => 0..=max_steps.min(5000),
        1 => 0..=max_steps,
    ]
}

/// Random cases with T ≤ `max_steps` and T·F ≤ `max_elements`.
pub fn case_strategy(max_steps: usize, max_elements: usize) -> impl Strategy<Value = Case> {
    let features = prop_oneof![
        3 => 1..=8usize,
        2 => 1..=70usize,
        1 => 1..=300usize,
        1 => Just(0usize),
    ];
    (
        steps_strategy(max_steps),
        features,
        [layout_strategy(), layout_strategy(), layout_strategy()],
        [layout_strategy(), layout_strategy()],
        (any::<bool>(), any::<bool>(), proptest::bool::weighted(0.4)),
        prop_oneof![Just(Direction::Forward), Just(Direction::Reverse)],
        prop_oneof![
            Just(DecayKind::Uniform),
            Just(DecayKind::Hard),
            Just(DecayKind::Mixed),
            Just(DecayKind::Exact)
        ],
        any::<u64>(),
    )
        .prop_map(
            move |(
                n_steps,
                n_features,
                mut input_layouts,
                mut output_layouts,
                (with_initial, with_grad_last, same_layout),
                direction,
                decay_kind,
                seed,
            )| {
                // Often give every array the same layout: the backends' fastest paths
                // need that, and random layouts would rarely reach them.
                if same_layout {
                    input_layouts = [input_layouts[0]; 3];
                    output_layouts = [input_layouts[0]; 2];
                }
                let n_features = max_elements
                    .checked_div(n_steps)
                    .map_or(n_features, |cap| n_features.min(cap.max(1)));
                Case {
                    n_steps,
                    n_features,
                    input_layouts,
                    output_layouts,
                    with_initial,
                    with_grad_last,
                    direction,
                    decay_kind,
                    seed,
                }
            },
        )
}

/// Size limits for the suite: the largest T, the largest T·F, and the number of cases.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest number of time steps.
    pub max_steps: usize,
    /// Largest number of elements T·F.
    pub max_elements: usize,
    /// Proptest cases per property.
    pub cases: u32,
}

impl Limits {
    /// Defaults: T up to 10⁵, T·F up to 2¹⁸, 48 cases.
    pub fn standard() -> Self {
        Self {
            // The test profile of this workspace compiles with optimisations.
            max_steps: 100_000,
            max_elements: 1 << 18,
            cases: 48,
        }
    }
}

fn run_property(name: &str, limits: Limits, test: impl Fn(&Case) -> Result<(), TestCaseError>) {
    let mut runner = TestRunner::new(Config {
        cases: limits.cases,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(error) = runner.run(
        &case_strategy(limits.max_steps, limits.max_elements),
        |case| test(&case),
    ) {
        panic!("{name}: {error}");
    }
}

fn fail(what: &str, case: &Case, detail: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!(
        "{what} differs from the reference {detail} (T = {}, F = {}, {:?}, initial: {}, {:?})",
        case.n_steps, case.n_features, case.direction, case.with_initial, case.decay_kind
    ))
}

fn scan_error(error: ScanError) -> TestCaseError {
    TestCaseError::fail(format!("backend returned an error: {error}"))
}

fn reference_error(error: ScanError) -> TestCaseError {
    TestCaseError::fail(format!("the f64 reference returned an error: {error}"))
}

/// The relative tolerance of a case: zero for exact cases, else [`relative_tolerance`].
fn tolerance_for<E: Element>(case: &Case) -> f64 {
    match case.decay_kind {
        DecayKind::Exact => 0.0,
        _ => relative_tolerance::<E>(case.n_steps),
    }
}

/// Runs the backend's forward pass on a case, with the case's layouts.
pub fn run_forward<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
    data: &CaseData<E>,
) -> Result<Array2<E>, ScanError> {
    let decay = LaidOut::from_array(case.input_layouts[0], &data.decay);
    let impulse = LaidOut::from_array(case.input_layouts[1], &data.impulse);
    let mut state = LaidOut::zeros(case.output_layouts[0], data.decay.dim());
    // Poison the output so an element the backend skips is caught.
    state.view_mut().fill(E::nan());
    backend.forward_into(
        ForwardInputs {
            decay: decay.view(),
            impulse: impulse.view(),
            initial: data.initial.as_ref().map(|v| v.view()),
            direction: case.direction,
        },
        state.view_mut(),
    )?;
    Ok(state.view().to_owned())
}

/// Forward pass equals the reference.
pub fn check_forward<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    let data = case.data::<E>();
    let actual = run_forward(backend, case, &data).map_err(scan_error)?;
    let inputs = ForwardInputs {
        decay: data.decay.view(),
        impulse: data.impulse.view(),
        initial: data.initial.as_ref().map(|v| v.view()),
        direction: case.direction,
    };
    let expected = reference_forward_f64(&inputs, false).map_err(reference_error)?;
    let magnitude = reference_forward_f64(&inputs, true).map_err(reference_error)?;
    check_close_2d(
        actual.view(),
        expected.view(),
        magnitude.view(),
        tolerance_for::<E>(case),
    )
    .map_err(|m| fail("forward state", case, m))
}

/// The backward gradients of a run, as owned row-major arrays.
pub struct RunGradients<E> {
    /// ∂L/∂a.
    pub decay: Array2<E>,
    /// ∂L/∂x.
    pub impulse: Array2<E>,
    /// ∂L/∂h0.
    pub initial: Array1<E>,
}

/// Runs the backend's backward pass on a case with `state` as the forward states.
pub fn run_backward<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
    data: &CaseData<E>,
    state: &Array2<E>,
) -> Result<RunGradients<E>, ScanError> {
    let decay = LaidOut::from_array(case.input_layouts[0], &data.decay);
    let state = LaidOut::from_array(case.input_layouts[1], state);
    let grad_state = LaidOut::from_array(case.input_layouts[2], &data.grad_state);
    let dim = data.decay.dim();
    let mut grad_decay = LaidOut::zeros(case.output_layouts[0], dim);
    let mut grad_impulse = LaidOut::zeros(case.output_layouts[1], dim);
    grad_decay.view_mut().fill(E::nan());
    grad_impulse.view_mut().fill(E::nan());
    let mut grad_initial = Array1::from_elem(dim.1, E::nan());
    backend.backward_into(
        BackwardInputs {
            decay: decay.view(),
            state: state.view(),
            initial: data.initial.as_ref().map(|v| v.view()),
            grad_state: grad_state.view(),
            grad_last: data.grad_last.as_ref().map(|v| v.view()),
            direction: case.direction,
        },
        BackwardOutputs {
            grad_decay: grad_decay.view_mut(),
            grad_impulse: grad_impulse.view_mut(),
            grad_initial: Some(grad_initial.view_mut()),
        },
    )?;
    Ok(RunGradients {
        decay: grad_decay.view().to_owned(),
        impulse: grad_impulse.view().to_owned(),
        initial: grad_initial,
    })
}

/// Backward pass equals the reference.
pub fn check_backward<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    let data = case.data::<E>();
    let state = crate::Reference
        .forward(ForwardInputs {
            decay: data.decay.view(),
            impulse: data.impulse.view(),
            initial: data.initial.as_ref().map(|v| v.view()),
            direction: case.direction,
        })
        .map_err(scan_error)?;
    let actual = run_backward(backend, case, &data, &state).map_err(scan_error)?;
    let inputs = BackwardInputs {
        decay: data.decay.view(),
        state: state.view(),
        initial: data.initial.as_ref().map(|v| v.view()),
        grad_state: data.grad_state.view(),
        grad_last: data.grad_last.as_ref().map(|v| v.view()),
        direction: case.direction,
    };
    let expected = reference_backward_f64(&inputs, false).map_err(reference_error)?;
    let magnitude = reference_backward_f64(&inputs, true).map_err(reference_error)?;
    let rtol = tolerance_for::<E>(case);
    check_close_2d(
        actual.impulse.view(),
        expected.impulse.view(),
        magnitude.impulse.view(),
        rtol,
    )
    .map_err(|m| fail("∂L/∂x", case, m))?;
    check_close_2d(
        actual.decay.view(),
        expected.decay.view(),
        magnitude.decay.view(),
        rtol,
    )
    .map_err(|m| fail("∂L/∂a", case, m))?;
    check_close_1d(
        actual.initial.view(),
        expected.initial.view(),
        magnitude.initial.view(),
        rtol,
    )
    .map_err(|m| fail("∂L/∂h0", case, m))
}

/// Two runs of the same case give bit-identical results, forward and backward.
pub fn check_deterministic<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    let data = case.data::<E>();
    let first = run_forward(backend, case, &data).map_err(scan_error)?;
    let second = run_forward(backend, case, &data).map_err(scan_error)?;
    let same = |a: &Array2<E>, b: &Array2<E>| {
        a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits())
    };
    prop_assert!(
        same(&first, &second),
        "forward is not bit-identical across runs"
    );
    let g1 = run_backward(backend, case, &data, &first).map_err(scan_error)?;
    let g2 = run_backward(backend, case, &data, &first).map_err(scan_error)?;
    let same_initial = g1
        .initial
        .iter()
        .zip(g2.initial.iter())
        .all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits());
    prop_assert!(
        same(&g1.decay, &g2.decay) && same(&g1.impulse, &g2.impulse) && same_initial,
        "backward is not bit-identical across runs"
    );
    Ok(())
}

/// Running the case in two pieces, carrying the state forward and the gradient back,
/// equals one run over the whole case.
pub fn check_state_carrying<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    let data = case.data::<E>();
    let n = case.n_steps;
    let split = (case.seed % (n as u64 + 1)) as usize;
    // In processing order the first piece is the steps before `split` (forward) or the
    // steps from `split` on (reverse).
    let (first, second) = match case.direction {
        Direction::Forward => (s![..split, ..], s![split.., ..]),
        Direction::Reverse => (s![split.., ..], s![..split, ..]),
    };
    // ndarray views are invariant in their lifetime, so the closures reborrow their arguments.
    let piece = |range, initial: Option<&Array1<E>>| {
        backend.forward(ForwardInputs {
            decay: data.decay.slice(range),
            impulse: data.impulse.slice(range),
            initial: initial.map(|v| v.view()),
            direction: case.direction,
        })
    };
    let whole = backend
        .forward(ForwardInputs {
            decay: data.decay.view(),
            impulse: data.impulse.view(),
            initial: data.initial.as_ref().map(|v| v.view()),
            direction: case.direction,
        })
        .map_err(scan_error)?;
    let h_first = piece(first, data.initial.as_ref()).map_err(scan_error)?;
    let last_of_first = match (case.direction, h_first.nrows()) {
        (_, 0) => data
            .initial
            .clone()
            .unwrap_or_else(|| Array1::zeros(case.n_features)),
        (Direction::Forward, rows) => h_first.row(rows - 1).to_owned(),
        (Direction::Reverse, _) => h_first.row(0).to_owned(),
    };
    let h_second = piece(second, Some(&last_of_first)).map_err(scan_error)?;
    let mut pieced = Array2::zeros(data.decay.dim());
    pieced.slice_mut(first).assign(&h_first);
    pieced.slice_mut(second).assign(&h_second);
    let inputs = ForwardInputs {
        decay: data.decay.view(),
        impulse: data.impulse.view(),
        initial: data.initial.as_ref().map(|v| v.view()),
        direction: case.direction,
    };
    let magnitude = reference_forward_f64(&inputs, true).map_err(reference_error)?;
    let whole_f64 = whole.mapv(E::as_f64);
    let rtol = 2.0 * relative_tolerance::<E>(n);
    check_close_2d(pieced.view(), whole_f64.view(), magnitude.view(), rtol)
        .map_err(|m| fail("forward in two pieces", case, m))?;

    // Backward: the second piece first; its ∂L/∂h0 is the first piece's grad_last.
    let grads = |range, initial: Option<&Array1<E>>, grad_last: Option<&Array1<E>>| {
        backend.backward(BackwardInputs {
            decay: data.decay.slice(range),
            state: whole.slice(range),
            initial: initial.map(|v| v.view()),
            grad_state: data.grad_state.slice(range),
            grad_last: grad_last.map(|v| v.view()),
            direction: case.direction,
        })
    };
    let whole_grads =
        grads(s![.., ..], data.initial.as_ref(), data.grad_last.as_ref()).map_err(scan_error)?;
    let entering_second = last_of_first_state(&whole, case, split, &data);
    let g_second =
        grads(second, Some(&entering_second), data.grad_last.as_ref()).map_err(scan_error)?;
    let g_first =
        grads(first, data.initial.as_ref(), Some(&g_second.initial)).map_err(scan_error)?;
    let mut pieced_impulse = Array2::zeros(data.decay.dim());
    pieced_impulse.slice_mut(first).assign(&g_first.impulse);
    pieced_impulse.slice_mut(second).assign(&g_second.impulse);
    let mut pieced_decay = Array2::zeros(data.decay.dim());
    pieced_decay.slice_mut(first).assign(&g_first.decay);
    pieced_decay.slice_mut(second).assign(&g_second.decay);
    let binputs = BackwardInputs {
        decay: data.decay.view(),
        state: whole.view(),
        initial: data.initial.as_ref().map(|v| v.view()),
        grad_state: data.grad_state.view(),
        grad_last: data.grad_last.as_ref().map(|v| v.view()),
        direction: case.direction,
    };
    let magnitude = reference_backward_f64(&binputs, true).map_err(reference_error)?;
    check_close_2d(
        pieced_impulse.view(),
        whole_grads.impulse.mapv(E::as_f64).view(),
        magnitude.impulse.view(),
        rtol,
    )
    .map_err(|m| fail("∂L/∂x in two pieces", case, m))?;
    check_close_2d(
        pieced_decay.view(),
        whole_grads.decay.mapv(E::as_f64).view(),
        magnitude.decay.view(),
        rtol,
    )
    .map_err(|m| fail("∂L/∂a in two pieces", case, m))?;
    check_close_1d(
        g_first.initial.view(),
        whole_grads.initial.mapv(E::as_f64).view(),
        magnitude.initial.view(),
        rtol,
    )
    .map_err(|m| fail("∂L/∂h0 in two pieces", case, m))
}

/// The state entering the second piece, taken from the whole run's states.
fn last_of_first_state<E: Element>(
    whole: &Array2<E>,
    case: &Case,
    split: usize,
    data: &CaseData<E>,
) -> Array1<E> {
    let initial = || {
        data.initial
            .clone()
            .unwrap_or_else(|| Array1::zeros(case.n_features))
    };
    match case.direction {
        Direction::Forward if split == 0 => initial(),
        Direction::Forward => whole.row(split - 1).to_owned(),
        Direction::Reverse if split == case.n_steps => initial(),
        Direction::Reverse => whole.row(split).to_owned(),
    }
}

/// A decay of exactly 0 resets the state: two sequences packed into one run give the same
/// states as two separate runs. Padding with (a = 1, x = 0) leaves the state unchanged.
pub fn check_reset_and_padding<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    let data = case.data::<E>();
    let n = case.n_steps;
    let f = case.n_features;
    fn run<'a, E: Element, B: LinearScan<E> + ?Sized>(
        backend: &B,
        decay: ArrayView2<'a, E>,
        impulse: ArrayView2<'a, E>,
    ) -> Result<Array2<E>, TestCaseError> {
        backend
            .forward(ForwardInputs {
                decay,
                impulse,
                initial: None,
                direction: Direction::Forward,
            })
            .map_err(scan_error)
    }
    let forward = |decay, impulse| run(backend, decay, impulse);
    // Packed: [sequence 1; sequence 2 with its first decay set to 0; padding]. The second
    // sequence is never empty, so the padding always follows a reset.
    let split = (case.seed % (n as u64).max(1)) as usize;
    let padding = (case.seed % 7) as usize;
    let mut decay = Array2::<E>::ones((n + padding, f));
    let mut impulse = Array2::<E>::zeros((n + padding, f));
    decay.slice_mut(s![..n, ..]).assign(&data.decay);
    impulse.slice_mut(s![..n, ..]).assign(&data.impulse);
    if split < n {
        decay.row_mut(split).fill(E::zero());
    }
    let packed = forward(decay.view(), impulse.view())?;
    let first = forward(decay.slice(s![..split, ..]), impulse.slice(s![..split, ..]))?;
    let mut second_decay = decay.slice(s![split.., ..]).to_owned();
    if split < n {
        // A reset step and a fresh start from zero are the same thing.
        second_decay.row_mut(0).fill(E::one());
    }
    let second = forward(second_decay.view(), impulse.slice(s![split.., ..]))?;
    let mut separate = Array2::zeros(packed.dim());
    separate.slice_mut(s![..split, ..]).assign(&first);
    separate.slice_mut(s![split.., ..]).assign(&second);
    let inputs = ForwardInputs {
        decay: decay.view(),
        impulse: impulse.view(),
        initial: None,
        direction: Direction::Forward,
    };
    let magnitude = reference_forward_f64(&inputs, true).map_err(reference_error)?;
    let rtol = 2.0 * relative_tolerance::<E>(n + padding);
    check_close_2d(
        packed.view(),
        separate.mapv(E::as_f64).view(),
        magnitude.view(),
        rtol,
    )
    .map_err(|m| fail("packed sequences", case, m))?;
    // Every padded step holds the last real state.
    if n > 0 {
        for t in n..n + padding {
            let last = packed.row(n - 1).mapv(E::as_f64);
            check_close_1d(packed.row(t), last.view(), magnitude.row(t), rtol)
                .map_err(|m| fail("padded state", case, m))?;
        }
    }

    // Backward: with no upstream gradient on the padding, the packed run's ∂L/∂x equals
    // the separate runs' everywhere, and so does ∂L/∂a except at the reset step (where
    // the packed run's decay of 0 multiplies a real previous state).
    let mut grad_state = Array2::<E>::zeros((n + padding, f));
    grad_state.slice_mut(s![..n, ..]).assign(&data.grad_state);
    fn grads<'a, E: Element, B: LinearScan<E> + ?Sized>(
        backend: &B,
        decay: ArrayView2<'a, E>,
        state: ArrayView2<'a, E>,
        grad_state: ArrayView2<'a, E>,
    ) -> Result<crate::Gradients<E>, TestCaseError> {
        backend
            .backward(BackwardInputs {
                decay,
                state,
                initial: None,
                grad_state,
                grad_last: None,
                direction: Direction::Forward,
            })
            .map_err(scan_error)
    }
    let packed_grads = grads(backend, decay.view(), packed.view(), grad_state.view())?;
    // The separate runs get the packed run's states, so only the gradients' own rounding
    // can differ.
    let first_grads = grads(
        backend,
        decay.slice(s![..split, ..]),
        packed.slice(s![..split, ..]),
        grad_state.slice(s![..split, ..]),
    )?;
    let second_grads = grads(
        backend,
        second_decay.view(),
        packed.slice(s![split.., ..]),
        grad_state.slice(s![split.., ..]),
    )?;
    let mut separate_impulse = Array2::zeros(packed.dim());
    separate_impulse
        .slice_mut(s![..split, ..])
        .assign(&first_grads.impulse);
    separate_impulse
        .slice_mut(s![split.., ..])
        .assign(&second_grads.impulse);
    let mut separate_decay = Array2::zeros(packed.dim());
    separate_decay
        .slice_mut(s![..split, ..])
        .assign(&first_grads.decay);
    separate_decay
        .slice_mut(s![split.., ..])
        .assign(&second_grads.decay);
    let mut packed_decay = packed_grads.decay.clone();
    if split < n {
        packed_decay.row_mut(split).fill(E::zero());
        separate_decay.row_mut(split).fill(E::zero());
    }
    let magnitude = reference_backward_f64(
        &BackwardInputs {
            decay: decay.view(),
            state: packed.view(),
            initial: None,
            grad_state: grad_state.view(),
            grad_last: None,
            direction: Direction::Forward,
        },
        true,
    )
    .map_err(reference_error)?;
    check_close_2d(
        packed_grads.impulse.view(),
        separate_impulse.mapv(E::as_f64).view(),
        magnitude.impulse.view(),
        rtol,
    )
    .map_err(|m| fail("packed ∂L/∂x", case, m))?;
    check_close_2d(
        packed_decay.view(),
        separate_decay.mapv(E::as_f64).view(),
        magnitude.decay.view(),
        rtol,
    )
    .map_err(|m| fail("packed ∂L/∂a", case, m))
}

fn expect_shape_error(result: Result<(), ScanError>, argument: &str) -> Result<(), TestCaseError> {
    match result {
        Err(ScanError::ShapeMismatch { argument: a, .. }) if a == argument => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "expected a shape error naming `{argument}`, got {other:?}"
        ))),
    }
}

/// Every mismatched argument gives a `ShapeMismatch` naming it, and leaves outputs untouched.
pub fn check_shape_errors<E: Element, B: LinearScan<E> + ?Sized>(backend: &B) {
    let check = || -> Result<(), TestCaseError> {
        let good = Array2::<E>::from_elem((5, 3), E::one());
        let bad = Array2::<E>::from_elem((5, 4), E::one());
        let short = Array2::<E>::from_elem((4, 3), E::one());
        let h0 = Array1::<E>::zeros(3);
        let h0_bad = Array1::<E>::zeros(2);
        let mut out = Array2::<E>::from_elem((5, 3), E::from_f64(7.0));
        let mut out_bad = Array2::<E>::zeros((6, 3));
        fn fwd<'a, E: Element>(
            decay: &'a Array2<E>,
            impulse: &'a Array2<E>,
            initial: Option<&'a Array1<E>>,
        ) -> ForwardInputs<'a, E> {
            ForwardInputs {
                decay: decay.view(),
                impulse: impulse.view(),
                initial: initial.map(|v| v.view()),
                direction: Direction::Forward,
            }
        }
        expect_shape_error(
            backend.forward_into(fwd(&good, &bad, None), out.view_mut()),
            "impulse",
        )?;
        expect_shape_error(
            backend.forward_into(fwd(&good, &short, None), out.view_mut()),
            "impulse",
        )?;
        expect_shape_error(
            backend.forward_into(fwd(&good, &good, Some(&h0_bad)), out.view_mut()),
            "initial",
        )?;
        expect_shape_error(
            backend.forward_into(fwd(&good, &good, Some(&h0)), out_bad.view_mut()),
            "state (output)",
        )?;
        prop_assert!(
            out.iter().all(|&v| v == E::from_f64(7.0)),
            "a failed call wrote its output"
        );

        fn bwd<'a, E: Element>(
            decay: &'a Array2<E>,
            state: &'a Array2<E>,
            grad: &'a Array2<E>,
            initial: Option<&'a Array1<E>>,
            grad_last: Option<&'a Array1<E>>,
        ) -> BackwardInputs<'a, E> {
            BackwardInputs {
                decay: decay.view(),
                state: state.view(),
                initial: initial.map(|v| v.view()),
                grad_state: grad.view(),
                grad_last: grad_last.map(|v| v.view()),
                direction: Direction::Reverse,
            }
        }
        let mut gd = Array2::<E>::zeros((5, 3));
        let mut gx = Array2::<E>::zeros((5, 3));
        let mut gh0 = Array1::<E>::zeros(3);
        let mut gh0_bad = Array1::<E>::zeros(4);
        let call = |inputs: BackwardInputs<'_, E>,
                    gd: &mut Array2<E>,
                    gx: &mut Array2<E>,
                    gh0: Option<&mut Array1<E>>| {
            backend.backward_into(
                inputs,
                BackwardOutputs {
                    grad_decay: gd.view_mut(),
                    grad_impulse: gx.view_mut(),
                    grad_initial: gh0.map(|v| v.view_mut()),
                },
            )
        };
        expect_shape_error(
            call(
                bwd(&good, &short, &good, None, None),
                &mut gd,
                &mut gx,
                None,
            ),
            "state",
        )?;
        expect_shape_error(
            call(bwd(&good, &good, &bad, None, None), &mut gd, &mut gx, None),
            "grad_state",
        )?;
        expect_shape_error(
            call(
                bwd(&good, &good, &good, Some(&h0_bad), None),
                &mut gd,
                &mut gx,
                None,
            ),
            "initial",
        )?;
        expect_shape_error(
            call(
                bwd(&good, &good, &good, None, Some(&h0_bad)),
                &mut gd,
                &mut gx,
                None,
            ),
            "grad_last",
        )?;
        expect_shape_error(
            call(
                bwd(&good, &good, &good, None, None),
                &mut out_bad,
                &mut gx,
                None,
            ),
            "grad_decay (output)",
        )?;
        expect_shape_error(
            call(
                bwd(&good, &good, &good, None, None),
                &mut gd,
                &mut out_bad,
                None,
            ),
            "grad_impulse (output)",
        )?;
        expect_shape_error(
            call(
                bwd(&good, &good, &good, None, None),
                &mut gd,
                &mut gx,
                Some(&mut gh0_bad),
            ),
            "grad_initial (output)",
        )?;
        call(
            bwd(&good, &good, &good, Some(&h0), None),
            &mut gd,
            &mut gx,
            Some(&mut gh0),
        )
        .map_err(scan_error)?;
        Ok(())
    };
    if let Err(error) = check() {
        panic!("shape errors: {error}");
    }
}

/// 3-D arrays in every axis order (time-major, batch-first, time-contiguous, and a
/// layout that cannot be merged without a copy) give the reference's states and gradients.
pub fn check_3d_layouts<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    case: &Case,
) -> Result<(), TestCaseError> {
    use crate::layout::{
        backward_3d, forward_3d, BackwardInputs3, BackwardOutputs3, ForwardInputs3,
    };
    use ndarray::{Array3, Axis};

    let n_batch = 1 + (case.seed % 3) as usize;
    let n_hidden = case.n_features.min(40);
    let n_steps = case.n_steps.min(3000);
    let mut rng = ChaCha8Rng::seed_from_u64(case.seed);
    let mut random = |dim: (usize, usize, usize), lo: f64, hi: f64| {
        Array3::from_shape_simple_fn(dim, || E::from_f64(rng.gen_range(lo..hi)))
    };
    // Logical arrays are (T, B, H).
    let dim = (n_steps, n_batch, n_hidden);
    let decay = random(dim, 0.9, 1.0);
    let impulse = random(dim, -1.0, 1.0);
    let grad_state = random(dim, -1.0, 1.0);
    let initial = random((1, n_batch, n_hidden), -1.0, 1.0).index_axis_move(Axis(0), 0);
    let grad_last = random((1, n_batch, n_hidden), -1.0, 1.0).index_axis_move(Axis(0), 0);

    // Memory order of the logical axes, outermost first: (T, B, H), (B, T, H), (B, H, T),
    // and (H, T, B), which cannot be merged into one feature axis without a copy.
    let stored_order: [usize; 3] = match case.seed % 4 {
        0 => [0, 1, 2],
        1 => [1, 0, 2],
        2 => [1, 2, 0],
        _ => [2, 0, 1],
    };
    let time_axis = stored_order
        .iter()
        .position(|&a| a == 0)
        .expect("time axis");
    let non_time: Vec<usize> = stored_order
        .iter()
        .filter(|&&a| a != 0)
        .map(|&a| a - 1)
        .collect();
    let mut inverse = [0; 3];
    for (i, &axis) in stored_order.iter().enumerate() {
        inverse[axis] = i;
    }
    let store = |logical: &Array3<E>| -> Array3<E> {
        logical
            .view()
            .permuted_axes(stored_order)
            .as_standard_layout()
            .into_owned()
    };
    let store_state = |state: &Array2<E>| -> Array2<E> {
        state
            .view()
            .permuted_axes([non_time[0], non_time[1]])
            .as_standard_layout()
            .into_owned()
    };
    let unstore = |stored: &Array3<E>| -> Array3<E> {
        stored
            .view()
            .permuted_axes(inverse)
            .as_standard_layout()
            .into_owned()
    };
    let unstore_state = |stored: &Array2<E>| -> Array2<E> {
        let inverse_2d = if non_time[0] == 0 { [0, 1] } else { [1, 0] };
        stored
            .view()
            .permuted_axes(inverse_2d)
            .as_standard_layout()
            .into_owned()
    };
    let flat = |a: &Array3<E>| -> Array2<E> {
        Array2::from_shape_vec((n_steps, n_batch * n_hidden), a.iter().copied().collect())
            .expect("standard layout")
    };
    let flat_state = |a: &Array2<E>| -> Array1<E> { a.iter().copied().collect() };

    let (s_decay, s_impulse, s_grad_state) = (store(&decay), store(&impulse), store(&grad_state));
    let (s_initial, s_grad_last) = (store_state(&initial), store_state(&grad_last));
    let mut s_state = Array3::<E>::from_elem(s_decay.raw_dim(), E::nan());
    forward_3d(
        backend,
        ForwardInputs3 {
            decay: s_decay.view(),
            impulse: s_impulse.view(),
            initial: Some(s_initial.view()),
            time_axis,
            direction: case.direction,
        },
        s_state.view_mut(),
    )
    .map_err(scan_error)?;
    let mut s_grad_decay = Array3::<E>::from_elem(s_decay.raw_dim(), E::nan());
    let mut s_grad_impulse = Array3::<E>::from_elem(s_decay.raw_dim(), E::nan());
    let mut s_grad_initial = Array2::<E>::from_elem(s_initial.raw_dim(), E::nan());
    backward_3d(
        backend,
        BackwardInputs3 {
            decay: s_decay.view(),
            state: s_state.view(),
            initial: Some(s_initial.view()),
            grad_state: s_grad_state.view(),
            grad_last: Some(s_grad_last.view()),
            time_axis,
            direction: case.direction,
        },
        BackwardOutputs3 {
            grad_decay: s_grad_decay.view_mut(),
            grad_impulse: s_grad_impulse.view_mut(),
            grad_initial: Some(s_grad_initial.view_mut()),
        },
    )
    .map_err(scan_error)?;

    let (f_decay, f_impulse, f_grad_state) = (flat(&decay), flat(&impulse), flat(&grad_state));
    let (f_initial, f_grad_last) = (flat_state(&initial), flat_state(&grad_last));
    let forward_inputs = ForwardInputs {
        decay: f_decay.view(),
        impulse: f_impulse.view(),
        initial: Some(f_initial.view()),
        direction: case.direction,
    };
    let rtol = relative_tolerance::<E>(n_steps);
    let state = flat(&unstore(&s_state));
    check_close_2d(
        state.view(),
        reference_forward_f64(&forward_inputs, false)
            .map_err(reference_error)?
            .view(),
        reference_forward_f64(&forward_inputs, true)
            .map_err(reference_error)?
            .view(),
        rtol,
    )
    .map_err(|m| fail(&format!("3-D forward (stored {stored_order:?})"), case, m))?;
    let backward_inputs = BackwardInputs {
        decay: f_decay.view(),
        state: state.view(),
        initial: Some(f_initial.view()),
        grad_state: f_grad_state.view(),
        grad_last: Some(f_grad_last.view()),
        direction: case.direction,
    };
    let expected = reference_backward_f64(&backward_inputs, false).map_err(reference_error)?;
    let magnitude = reference_backward_f64(&backward_inputs, true).map_err(reference_error)?;
    let what = |name: &str| format!("3-D {name} (stored {stored_order:?})");
    check_close_2d(
        flat(&unstore(&s_grad_decay)).view(),
        expected.decay.view(),
        magnitude.decay.view(),
        rtol,
    )
    .map_err(|m| fail(&what("∂L/∂a"), case, m))?;
    check_close_2d(
        flat(&unstore(&s_grad_impulse)).view(),
        expected.impulse.view(),
        magnitude.impulse.view(),
        rtol,
    )
    .map_err(|m| fail(&what("∂L/∂x"), case, m))?;
    check_close_1d(
        flat_state(&unstore_state(&s_grad_initial)).view(),
        expected.initial.view(),
        magnitude.initial.view(),
        rtol,
    )
    .map_err(|m| fail(&what("∂L/∂h0"), case, m))
}

/// T = 2²⁰, F = 4, forward and backward, against the reference.
pub fn check_long_sequence<E: Element, B: LinearScan<E> + ?Sized>(backend: &B) {
    for (direction, kind) in [
        (Direction::Forward, DecayKind::Hard),
        (Direction::Reverse, DecayKind::Mixed),
    ] {
        let case = Case {
            n_steps: 1 << 20,
            n_features: 4,
            input_layouts: [Layout::RowMajor; 3],
            output_layouts: [Layout::RowMajor; 2],
            with_initial: true,
            with_grad_last: true,
            direction,
            decay_kind: kind,
            seed: 2024,
        };
        if let Err(error) = check_forward::<E, B>(backend, &case)
            .and_then(|()| check_backward::<E, B>(backend, &case))
        {
            panic!("long sequence: {error}");
        }
    }
}

/// Runs one property over random cases with the standard limits.
pub fn property<E: Element, B: LinearScan<E> + ?Sized>(
    name: &str,
    backend: &B,
    check: fn(&B, &Case) -> Result<(), TestCaseError>,
) {
    run_property(name, Limits::standard(), |case| check(backend, case));
}

/// Instantiates the whole conformance suite as `#[test]` functions for a backend value
/// that implements `LinearScan<f32>` and `LinearScan<f64>`.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        mod conformance_suite {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance as c;

            macro_rules! each_dtype {
                ($name32:ident, $name64:ident, $check:ident) => {
                    #[test]
                    fn $name32() {
                        let backend = $backend;
                        c::property::<f32, _>(stringify!($name32), &backend, c::$check::<f32, _>);
                    }
                    #[test]
                    fn $name64() {
                        let backend = $backend;
                        c::property::<f64, _>(stringify!($name64), &backend, c::$check::<f64, _>);
                    }
                };
            }

            each_dtype!(
                forward_matches_reference_f32,
                forward_matches_reference_f64,
                check_forward
            );
            each_dtype!(
                backward_matches_reference_f32,
                backward_matches_reference_f64,
                check_backward
            );
            each_dtype!(
                results_are_deterministic_f32,
                results_are_deterministic_f64,
                check_deterministic
            );
            each_dtype!(
                state_carrying_equals_one_run_f32,
                state_carrying_equals_one_run_f64,
                check_state_carrying
            );
            each_dtype!(
                reset_and_padding_f32,
                reset_and_padding_f64,
                check_reset_and_padding
            );
            each_dtype!(layouts_3d_f32, layouts_3d_f64, check_3d_layouts);
            each_dtype!(
                ieee_forward_is_the_serial_result_f32,
                ieee_forward_is_the_serial_result_f64,
                check_ieee_forward
            );
            each_dtype!(
                ieee_backward_is_the_serial_result_f32,
                ieee_backward_is_the_serial_result_f64,
                check_ieee_backward
            );
            each_dtype!(
                maps_match_reference_f32,
                maps_match_reference_f64,
                check_maps
            );
            each_dtype!(
                ieee_maps_are_the_serial_result_f32,
                ieee_maps_are_the_serial_result_f64,
                check_ieee_maps
            );
            each_dtype!(
                no_panic_on_any_input_f32,
                no_panic_on_any_input_f64,
                check_no_panic
            );

            #[test]
            fn ieee_fixed_cases_are_the_serial_result() {
                let backend = $backend;
                c::check_ieee_cases::<f32, _>(&backend);
                c::check_ieee_cases::<f64, _>(&backend);
            }

            #[test]
            fn shape_errors_are_reported() {
                let backend = $backend;
                c::check_shape_errors::<f32, _>(&backend);
                c::check_shape_errors::<f64, _>(&backend);
                c::check_map_shape_errors::<f32, _>(&backend);
                c::check_map_shape_errors::<f64, _>(&backend);
            }

            #[test]
            fn long_sequence_matches_reference() {
                let backend = $backend;
                c::check_long_sequence::<f32, _>(&backend);
                c::check_long_sequence::<f64, _>(&backend);
            }
        }
    };
}
