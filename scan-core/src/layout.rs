//! 3-D (time, batch, hidden) arrays in any axis order, reduced to the 2-D (T, F) problem.
//!
//! The time axis is moved to the front; the two other axes are merged into one feature
//! axis when the strides of every array allow it (all the contiguous layouts: time-major
//! `(T, B, H)`, batch-first `(B, T, H)`, time-contiguous `(B, H, T)`), so the backend sees
//! one 2-D problem with no copy. Otherwise the backend is called once per index of the
//! first non-time axis.

use std::iter::repeat_n;

use ndarray::{
    Array1, ArrayBase, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis, Data, Ix3,
};

use crate::buffer::try_collect;
use crate::{
    BackwardInputs, BackwardOutputs, Direction, Element, ForwardInputs, LinearScan, ScanError,
};

/// Inputs of a forward scan over 3-D arrays whose time axis is `time_axis`.
#[derive(Clone, Debug)]
pub struct ForwardInputs3<'a, E> {
    /// The decays `a`.
    pub decay: ArrayView3<'a, E>,
    /// The impulses `x`, same shape as `decay`.
    pub impulse: ArrayView3<'a, E>,
    /// The initial state, shaped like `decay` without its time axis; `None` means zeros.
    pub initial: Option<ArrayView2<'a, E>>,
    /// Which axis (0, 1 or 2) is time.
    pub time_axis: usize,
    /// The processing order.
    pub direction: Direction,
}

/// Inputs of a backward scan over 3-D arrays whose time axis is `time_axis`.
#[derive(Clone, Debug)]
pub struct BackwardInputs3<'a, E> {
    /// The decays `a` of the forward pass.
    pub decay: ArrayView3<'a, E>,
    /// The states `h` of the forward pass.
    pub state: ArrayView3<'a, E>,
    /// The initial state, shaped like `decay` without its time axis; `None` means zeros.
    pub initial: Option<ArrayView2<'a, E>>,
    /// The upstream gradient ∂L/∂h.
    pub grad_state: ArrayView3<'a, E>,
    /// Extra gradient on the last processed state; `None` means zeros.
    pub grad_last: Option<ArrayView2<'a, E>>,
    /// Which axis (0, 1 or 2) is time.
    pub time_axis: usize,
    /// The processing order of the forward pass.
    pub direction: Direction,
}

/// Where a 3-D backward scan writes its gradients.
#[derive(Debug)]
pub struct BackwardOutputs3<'a, E> {
    /// ∂L/∂a, shaped like the decays.
    pub grad_decay: ArrayViewMut3<'a, E>,
    /// ∂L/∂x, shaped like the decays.
    pub grad_impulse: ArrayViewMut3<'a, E>,
    /// ∂L/∂h0, shaped like `decay` without its time axis; `None` if not needed.
    pub grad_initial: Option<ndarray::ArrayViewMut2<'a, E>>,
}

fn time_first_order(operation: &'static str, time_axis: usize) -> Result<[usize; 3], ScanError> {
    match time_axis {
        0 => Ok([0, 1, 2]),
        1 => Ok([1, 0, 2]),
        2 => Ok([2, 0, 1]),
        _ => Err(ScanError::InvalidTimeAxis {
            operation,
            time_axis,
        }),
    }
}

fn check_3d(
    operation: &'static str,
    argument: &'static str,
    expected: [usize; 3],
    actual: &[usize],
) -> Result<(), ScanError> {
    if actual == expected {
        Ok(())
    } else {
        Err(ScanError::ShapeMismatch {
            operation,
            argument,
            expected: expected.to_vec(),
            actual: actual.to_vec(),
        })
    }
}

fn check_2d(
    operation: &'static str,
    argument: &'static str,
    expected: [usize; 2],
    actual: Option<&[usize]>,
) -> Result<(), ScanError> {
    match actual {
        Some(actual) if actual != expected => Err(ScanError::ShapeMismatch {
            operation,
            argument,
            expected: expected.to_vec(),
            actual: actual.to_vec(),
        }),
        _ => Ok(()),
    }
}

/// The two non-time axes of a time-first 3-D array can be merged into one feature axis
/// `f = i1·n2 + i2` without a copy when axis 2 steps evenly into axis 1.
fn mergeable<S: Data>(array: &ArrayBase<S, Ix3>) -> bool {
    let (_, n1, n2) = array.dim();
    n1 <= 1 || n2 <= 1 || array.strides()[1] == array.strides()[2] * n2 as isize
}

fn merge_view<'a, E>(mut view: ArrayView3<'a, E>) -> ArrayView2<'a, E> {
    let merged = ndarray::ArrayBase::merge_axes(&mut view, Axis(1), Axis(2));
    debug_assert!(merged, "merge_view called on an unmergeable view");
    view.index_axis_move(Axis(1), 0)
}

fn merge_view_mut<'a, E>(mut view: ArrayViewMut3<'a, E>) -> ArrayViewMut2<'a, E> {
    let merged = ndarray::ArrayBase::merge_axes(&mut view, Axis(1), Axis(2));
    debug_assert!(merged, "merge_view_mut called on an unmergeable view");
    view.index_axis_move(Axis(1), 0)
}

/// Flattens a (n1, n2) state to the feature order `f = i1·n2 + i2`, allocating fallibly.
fn flatten<E: Element>(
    operation: &'static str,
    argument: &'static str,
    state: Option<ArrayView2<'_, E>>,
) -> Result<Option<Array1<E>>, ScanError> {
    state
        .map(|s| {
            try_collect(operation, argument, s.shape(), s.iter().copied()).map(Array1::from_vec)
        })
        .transpose()
}

/// Runs the forward scan on 3-D arrays (see the module doc for how layouts are handled).
pub fn forward_3d<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    inputs: ForwardInputs3<'_, E>,
    state: ArrayViewMut3<'_, E>,
) -> Result<(), ScanError> {
    const OP: &str = "forward_3d";
    let order = time_first_order(OP, inputs.time_axis)?;
    let shape: [usize; 3] = inputs.decay.shape().try_into().expect("3-D");
    check_3d(OP, "impulse", shape, inputs.impulse.shape())?;
    check_3d(OP, "state (output)", shape, state.shape())?;
    let decay = inputs.decay.permuted_axes(order);
    let impulse = inputs.impulse.permuted_axes(order);
    let mut state = state.permuted_axes(order);
    let (_, n1, n2) = decay.dim();
    check_2d(
        OP,
        "initial",
        [n1, n2],
        inputs.initial.as_ref().map(|v| v.shape()),
    )?;
    if n1 == 0 || n2 == 0 {
        // No features: nothing to compute (and no axis to merge).
        return Ok(());
    }
    if mergeable(&decay) && mergeable(&impulse) && mergeable(&state) {
        // ndarray views are invariant in their lifetime: bind locals, then reborrow them all.
        let initial = flatten(OP, "initial", inputs.initial)?;
        let (decay, impulse) = (merge_view(decay), merge_view(impulse));
        let mut state = merge_view_mut(state);
        return backend.forward_into(
            ForwardInputs {
                decay: decay.view(),
                impulse: impulse.view(),
                initial: initial.as_ref().map(|v| v.view()),
                direction: inputs.direction,
            },
            state.view_mut(),
        );
    }
    for i in 0..n1 {
        backend.forward_into(
            ForwardInputs {
                decay: decay.index_axis(Axis(1), i),
                impulse: impulse.index_axis(Axis(1), i),
                initial: inputs.initial.as_ref().map(|v| v.row(i)),
                direction: inputs.direction,
            },
            state.index_axis_mut(Axis(1), i),
        )?;
    }
    Ok(())
}

/// Runs the backward scan on 3-D arrays (see the module doc for how layouts are handled).
pub fn backward_3d<E: Element, B: LinearScan<E> + ?Sized>(
    backend: &B,
    inputs: BackwardInputs3<'_, E>,
    outputs: BackwardOutputs3<'_, E>,
) -> Result<(), ScanError> {
    const OP: &str = "backward_3d";
    let order = time_first_order(OP, inputs.time_axis)?;
    let shape: [usize; 3] = inputs.decay.shape().try_into().expect("3-D");
    check_3d(OP, "state", shape, inputs.state.shape())?;
    check_3d(OP, "grad_state", shape, inputs.grad_state.shape())?;
    check_3d(OP, "grad_decay (output)", shape, outputs.grad_decay.shape())?;
    check_3d(
        OP,
        "grad_impulse (output)",
        shape,
        outputs.grad_impulse.shape(),
    )?;
    let decay = inputs.decay.permuted_axes(order);
    let state = inputs.state.permuted_axes(order);
    let grad_state = inputs.grad_state.permuted_axes(order);
    let mut grad_decay = outputs.grad_decay.permuted_axes(order);
    let mut grad_impulse = outputs.grad_impulse.permuted_axes(order);
    let (_, n1, n2) = decay.dim();
    check_2d(
        OP,
        "initial",
        [n1, n2],
        inputs.initial.as_ref().map(|v| v.shape()),
    )?;
    check_2d(
        OP,
        "grad_last",
        [n1, n2],
        inputs.grad_last.as_ref().map(|v| v.shape()),
    )?;
    check_2d(
        OP,
        "grad_initial (output)",
        [n1, n2],
        outputs.grad_initial.as_ref().map(|v| v.shape()),
    )?;
    if n1 == 0 || n2 == 0 {
        // No features: nothing to compute (and no axis to merge).
        return Ok(());
    }
    let mut grad_initial = outputs.grad_initial;
    let all_mergeable = mergeable(&decay)
        && mergeable(&state)
        && mergeable(&grad_state)
        && mergeable(&grad_decay)
        && mergeable(&grad_impulse);
    if all_mergeable {
        let initial = flatten(OP, "initial", inputs.initial)?;
        let grad_last = flatten(OP, "grad_last", inputs.grad_last)?;
        let mut grad_initial_flat = grad_initial
            .as_ref()
            .map(|_| {
                let zeros = repeat_n(E::zero(), n1 * n2);
                try_collect(OP, "grad_initial (output)", &[n1, n2], zeros).map(Array1::from_vec)
            })
            .transpose()?;
        let (decay, state, grad_state) =
            (merge_view(decay), merge_view(state), merge_view(grad_state));
        let mut grad_decay = merge_view_mut(grad_decay);
        let mut grad_impulse = merge_view_mut(grad_impulse);
        backend.backward_into(
            BackwardInputs {
                decay: decay.view(),
                state: state.view(),
                initial: initial.as_ref().map(|v| v.view()),
                grad_state: grad_state.view(),
                grad_last: grad_last.as_ref().map(|v| v.view()),
                direction: inputs.direction,
            },
            BackwardOutputs {
                grad_decay: grad_decay.view_mut(),
                grad_impulse: grad_impulse.view_mut(),
                grad_initial: grad_initial_flat.as_mut().map(|v| v.view_mut()),
            },
        )?;
        if let (Some(target), Some(flat)) = (grad_initial.as_mut(), grad_initial_flat) {
            target
                .iter_mut()
                .zip(flat.iter())
                .for_each(|(t, &v)| *t = v);
        }
        return Ok(());
    }
    for i in 0..n1 {
        backend.backward_into(
            BackwardInputs {
                decay: decay.index_axis(Axis(1), i),
                state: state.index_axis(Axis(1), i),
                initial: inputs.initial.as_ref().map(|v| v.row(i)),
                grad_state: grad_state.index_axis(Axis(1), i),
                grad_last: inputs.grad_last.as_ref().map(|v| v.row(i)),
                direction: inputs.direction,
            },
            BackwardOutputs {
                grad_decay: grad_decay.index_axis_mut(Axis(1), i),
                grad_impulse: grad_impulse.index_axis_mut(Axis(1), i),
                grad_initial: grad_initial.as_mut().map(|v| v.row_mut(i)),
            },
        )?;
    }
    Ok(())
}
