//! What a scan is asked to compute: inputs, outputs, direction and their validation.

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use crate::{Element, ScanError};

/// The order in which time steps are processed.
///
/// `Forward` computes `h_t = a_t·h_{t-1} + x_t` for `t = 0..T` starting from `h_{-1} = h0`.
/// `Reverse` computes `h_t = a_t·h_{t+1} + x_t` for `t = T-1` down to `0` starting from
/// `h_T = h0`. Everything that speaks of "first" or "last" steps means first or last in
/// processing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Time index increasing.
    Forward,
    /// Time index decreasing.
    Reverse,
}

impl Direction {
    /// The other direction (the direction of this direction's backward pass).
    pub fn flip(self) -> Self {
        match self {
            Self::Forward => Self::Reverse,
            Self::Reverse => Self::Forward,
        }
    }
}

/// The size of a scan: `n_steps` time steps of `n_features` independent features.
///
/// Plain data: any values are allowed, so the element count is only available checked
/// ([`ScanShape::checked_len`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScanShape {
    /// Number of time steps T.
    pub n_steps: usize,
    /// Number of independent features F.
    pub n_features: usize,
}

impl ScanShape {
    /// Number of elements `T·F`, or `None` if it does not fit in `usize`.
    ///
    /// ```
    /// use scan_core::ScanShape;
    /// assert_eq!(ScanShape { n_steps: 3, n_features: 4 }.checked_len(), Some(12));
    /// assert_eq!(ScanShape { n_steps: usize::MAX, n_features: 2 }.checked_len(), None);
    /// ```
    pub fn checked_len(&self) -> Option<usize> {
        self.n_steps.checked_mul(self.n_features)
    }

    /// Whether there is nothing to compute (T = 0 or F = 0).
    pub fn is_empty(&self) -> bool {
        self.n_steps == 0 || self.n_features == 0
    }

    fn of(view_dim: (usize, usize)) -> Self {
        Self {
            n_steps: view_dim.0,
            n_features: view_dim.1,
        }
    }
}

/// Inputs of the forward recurrence, all indexed `[t, feature]`; views may have any strides.
#[derive(Clone, Debug)]
pub struct ForwardInputs<'a, E> {
    /// The decays `a`, shape (T, F).
    pub decay: ArrayView2<'a, E>,
    /// The impulses `x`, shape (T, F).
    pub impulse: ArrayView2<'a, E>,
    /// The state before the first processed step, shape (F); `None` means zeros.
    pub initial: Option<ArrayView1<'a, E>>,
    /// The processing order.
    pub direction: Direction,
}

/// Inputs of the backward pass, all indexed `[t, feature]`; views may have any strides.
#[derive(Clone, Debug)]
pub struct BackwardInputs<'a, E> {
    /// The decays `a` of the forward pass, shape (T, F).
    pub decay: ArrayView2<'a, E>,
    /// The states `h` the forward pass produced, shape (T, F).
    pub state: ArrayView2<'a, E>,
    /// The initial state of the forward pass, shape (F); `None` means zeros.
    pub initial: Option<ArrayView1<'a, E>>,
    /// The upstream gradient ∂L/∂h, shape (T, F).
    pub grad_state: ArrayView2<'a, E>,
    /// An extra gradient on the last processed state, shape (F), e.g. the ∂L/∂h0 of the
    /// next chunk when a long sequence is run in chunks; `None` means zeros.
    pub grad_last: Option<ArrayView1<'a, E>>,
    /// The processing order of the forward pass.
    pub direction: Direction,
}

/// Where the backward pass writes its gradients.
#[derive(Debug)]
pub struct BackwardOutputs<'a, E> {
    /// ∂L/∂a, shape (T, F).
    pub grad_decay: ArrayViewMut2<'a, E>,
    /// ∂L/∂x, shape (T, F).
    pub grad_impulse: ArrayViewMut2<'a, E>,
    /// ∂L/∂h0, shape (F); `None` if the caller does not need it.
    pub grad_initial: Option<ArrayViewMut1<'a, E>>,
}

fn check_2d(
    operation: &'static str,
    argument: &'static str,
    expected: ScanShape,
    actual: (usize, usize),
) -> Result<(), ScanError> {
    if ScanShape::of(actual) == expected {
        Ok(())
    } else {
        Err(ScanError::ShapeMismatch {
            operation,
            argument,
            expected: vec![expected.n_steps, expected.n_features],
            actual: vec![actual.0, actual.1],
        })
    }
}

fn check_1d(
    operation: &'static str,
    argument: &'static str,
    expected: ScanShape,
    actual: Option<usize>,
) -> Result<(), ScanError> {
    match actual {
        Some(len) if len != expected.n_features => Err(ScanError::ShapeMismatch {
            operation,
            argument,
            expected: vec![expected.n_features],
            actual: vec![len],
        }),
        _ => Ok(()),
    }
}

/// A forward problem whose shapes have been checked; the only way backends receive one.
///
/// Sealed: its fields are private, so once [`ForwardProblem::new`] has checked the shapes
/// nothing can replace a view (unsafe backend code relies on that). Backends take the
/// views apart with [`ForwardProblem::into_parts`].
///
/// ```
/// use ndarray::Array2;
/// use scan_core::{Direction, ForwardInputs, ForwardProblem};
///
/// let (decay, impulse) = (Array2::<f32>::zeros((8, 2)), Array2::<f32>::zeros((8, 2)));
/// let mut state = Array2::<f32>::zeros((8, 2));
/// let inputs = ForwardInputs {
///     decay: decay.view(),
///     impulse: impulse.view(),
///     initial: None,
///     direction: Direction::Forward,
/// };
/// let problem = ForwardProblem::new(inputs, state.view_mut())?;
/// assert_eq!(problem.inputs().decay.dim(), (8, 2));
/// # Ok::<(), scan_core::ScanError>(())
/// ```
///
/// Replacing a view after validation does not compile:
///
/// ```compile_fail,E0616
/// use ndarray::Array2;
/// use scan_core::{Direction, ForwardInputs, ForwardProblem};
///
/// let (decay, impulse) = (Array2::<f32>::zeros((8, 2)), Array2::<f32>::zeros((8, 2)));
/// let shorter = Array2::<f32>::zeros((1, 2));
/// let mut state = Array2::<f32>::zeros((8, 2));
/// let inputs = ForwardInputs {
///     decay: decay.view(),
///     impulse: impulse.view(),
///     initial: None,
///     direction: Direction::Forward,
/// };
/// let mut problem = ForwardProblem::new(inputs, state.view_mut()).unwrap();
/// problem.inputs.impulse = shorter.view(); // error[E0616]: field `inputs` is private
/// ```
///
/// Nor through the accessor, which lends the inputs immutably:
///
/// ```compile_fail,E0594
/// use ndarray::Array2;
/// use scan_core::{Direction, ForwardInputs, ForwardProblem};
///
/// let (decay, impulse) = (Array2::<f32>::zeros((8, 2)), Array2::<f32>::zeros((8, 2)));
/// let shorter = Array2::<f32>::zeros((1, 2));
/// let mut state = Array2::<f32>::zeros((8, 2));
/// let inputs = ForwardInputs {
///     decay: decay.view(),
///     impulse: impulse.view(),
///     initial: None,
///     direction: Direction::Forward,
/// };
/// let problem = ForwardProblem::new(inputs, state.view_mut()).unwrap();
/// problem.inputs().impulse = shorter.view(); // error[E0594]: behind a `&` reference
/// ```
#[derive(Debug)]
pub struct ForwardProblem<'i, 'o, E> {
    inputs: ForwardInputs<'i, E>,
    state: ArrayViewMut2<'o, E>,
    shape: ScanShape,
}

impl<'i, 'o, E: Element> ForwardProblem<'i, 'o, E> {
    /// Checks that every argument has the shape the decays imply.
    pub fn new(
        inputs: ForwardInputs<'i, E>,
        state: ArrayViewMut2<'o, E>,
    ) -> Result<Self, ScanError> {
        const OP: &str = "forward";
        let shape = ScanShape::of(inputs.decay.dim());
        check_2d(OP, "impulse", shape, inputs.impulse.dim())?;
        check_1d(
            OP,
            "initial",
            shape,
            inputs.initial.as_ref().map(|v| v.len()),
        )?;
        check_2d(OP, "state (output)", shape, state.dim())?;
        Ok(Self {
            inputs,
            state,
            shape,
        })
    }

    /// The problem's size.
    pub fn shape(&self) -> ScanShape {
        self.shape
    }

    /// The validated inputs.
    pub fn inputs(&self) -> &ForwardInputs<'i, E> {
        &self.inputs
    }

    /// The inputs and the output view (shape (T, F)), giving up the validated wrapper.
    pub fn into_parts(self) -> (ForwardInputs<'i, E>, ArrayViewMut2<'o, E>) {
        (self.inputs, self.state)
    }
}

/// A backward problem whose shapes have been checked; the only way backends receive one.
///
/// Sealed like [`ForwardProblem`]: private fields, [`BackwardProblem::inputs`] and
/// [`BackwardProblem::into_parts`].
///
/// ```compile_fail,E0616
/// use ndarray::{Array1, Array2};
/// use scan_core::{BackwardInputs, BackwardOutputs, BackwardProblem, Direction};
///
/// let zeros = Array2::<f64>::zeros((8, 2));
/// let (mut grad_decay, mut grad_impulse) = (zeros.clone(), zeros.clone());
/// let mut short = Array2::<f64>::zeros((1, 2));
/// let mut problem = BackwardProblem::new(
///     BackwardInputs {
///         decay: zeros.view(),
///         state: zeros.view(),
///         initial: None,
///         grad_state: zeros.view(),
///         grad_last: None,
///         direction: Direction::Forward,
///     },
///     BackwardOutputs {
///         grad_decay: grad_decay.view_mut(),
///         grad_impulse: grad_impulse.view_mut(),
///         grad_initial: None,
///     },
/// )
/// .unwrap();
/// problem.outputs.grad_decay = short.view_mut(); // error[E0616]: field `outputs` is private
/// ```
#[derive(Debug)]
pub struct BackwardProblem<'i, 'o, E> {
    inputs: BackwardInputs<'i, E>,
    outputs: BackwardOutputs<'o, E>,
    shape: ScanShape,
}

impl<'i, 'o, E: Element> BackwardProblem<'i, 'o, E> {
    /// Checks that every argument has the shape the decays imply.
    pub fn new(
        inputs: BackwardInputs<'i, E>,
        outputs: BackwardOutputs<'o, E>,
    ) -> Result<Self, ScanError> {
        const OP: &str = "backward";
        let shape = ScanShape::of(inputs.decay.dim());
        check_2d(OP, "state", shape, inputs.state.dim())?;
        check_2d(OP, "grad_state", shape, inputs.grad_state.dim())?;
        check_1d(
            OP,
            "initial",
            shape,
            inputs.initial.as_ref().map(|v| v.len()),
        )?;
        check_1d(
            OP,
            "grad_last",
            shape,
            inputs.grad_last.as_ref().map(|v| v.len()),
        )?;
        check_2d(OP, "grad_decay (output)", shape, outputs.grad_decay.dim())?;
        check_2d(
            OP,
            "grad_impulse (output)",
            shape,
            outputs.grad_impulse.dim(),
        )?;
        check_1d(
            OP,
            "grad_initial (output)",
            shape,
            outputs.grad_initial.as_ref().map(|v| v.len()),
        )?;
        Ok(Self {
            inputs,
            outputs,
            shape,
        })
    }

    /// The problem's size.
    pub fn shape(&self) -> ScanShape {
        self.shape
    }

    /// The validated inputs.
    pub fn inputs(&self) -> &BackwardInputs<'i, E> {
        &self.inputs
    }

    /// The inputs and the output views, giving up the validated wrapper.
    pub fn into_parts(self) -> (BackwardInputs<'i, E>, BackwardOutputs<'o, E>) {
        (self.inputs, self.outputs)
    }
}
