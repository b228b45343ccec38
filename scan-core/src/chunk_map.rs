//! A chunk of time steps reduced to the one affine map it applies to the state entering it:
//! the summary that Algorithm 1 exchanges between threads, and that a sequence split over
//! processes exchanges between ranks.

use std::iter::repeat_n;

use ndarray::{Array1, ArrayView2};

use crate::buffer::try_collect;
use crate::{Direction, Element, ScanError};

/// Per feature, the affine map `state ↦ decay ⊙ state + impulse` of a whole chunk.
///
/// Products of decays smaller in magnitude than the type's smallest normal number are
/// stored as zero (see [`forward_chunk_map`]).
///
/// For a forward chunk ([`forward_chunk_map`]) the map takes the state entering the chunk
/// to the chunk's last state. For a backward chunk ([`backward_chunk_map`]) it takes the
/// gradient on the chunk's last state (its `grad_last`) to the gradient on the state
/// entering it (its ∂L/∂h0). Both use the same `decay`: the product of the chunk's decays.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkMap<E> {
    /// The product of the chunk's decays, shape (F).
    pub decay: Array1<E>,
    /// The map's value at zero, shape (F).
    pub impulse: Array1<E>,
}

impl<E: Element> ChunkMap<E> {
    /// The map of an empty chunk: the identity, or [`ScanError::AllocationFailed`] when
    /// `n_features` elements do not fit in memory.
    pub fn identity(n_features: usize) -> Result<Self, ScanError> {
        const OP: &str = "ChunkMap::identity";
        Ok(Self {
            decay: Array1::from_vec(features(OP, "decay", n_features, E::one())?),
            impulse: Array1::from_vec(features(OP, "impulse", n_features, E::zero())?),
        })
    }

    /// Checks that a chunk's decays and its other input (`argument`: impulses or
    /// gradients) have the same shape, with the error every backend's `forward_map` and
    /// `backward_map` return otherwise.
    pub fn check_inputs(
        operation: &'static str,
        argument: &'static str,
        decay: &ArrayView2<'_, E>,
        other: &ArrayView2<'_, E>,
    ) -> Result<(), ScanError> {
        check_same_shape(operation, argument, decay, other)
    }
}

/// `n_features` copies of `value`, allocated fallibly.
fn features<E: Element>(
    operation: &'static str,
    buffer: &'static str,
    n_features: usize,
    value: E,
) -> Result<Vec<E>, ScanError> {
    try_collect(
        operation,
        buffer,
        &[n_features],
        repeat_n(value, n_features),
    )
}

fn check_same_shape<E>(
    operation: &'static str,
    argument: &'static str,
    decay: &ArrayView2<'_, E>,
    other: &ArrayView2<'_, E>,
) -> Result<(), ScanError> {
    if decay.dim() == other.dim() {
        Ok(())
    } else {
        Err(ScanError::ShapeMismatch {
            operation,
            argument,
            expected: vec![decay.nrows(), decay.ncols()],
            actual: vec![other.nrows(), other.ncols()],
        })
    }
}

/// A running product of decays near 1 sinks into the subnormal range and can stay there
/// (a subnormal times 0.999 may round back to itself), where each multiplication costs
/// about a hundred times a normal one. Such products are flushed to zero: the map then
/// drops contributions of the entering state below `MIN_POSITIVE · |h_in|`.
fn flush_subnormal<E: Element>(product: E) -> E {
    if product.abs() < E::min_positive_value() {
        E::zero()
    } else {
        product
    }
}

/// Calls `step` with each pair of rows of `first` and `second` (same shape) in the order
/// of `direction`. Contiguous row-major views are walked as slices; other layouts through
/// two reused row buffers (allocated fallibly, in the name of `operation`).
fn for_each_row_pair<E: Element>(
    operation: &'static str,
    first: &ArrayView2<'_, E>,
    second: &ArrayView2<'_, E>,
    direction: Direction,
    mut step: impl FnMut(&[E], &[E]),
) -> Result<(), ScanError> {
    let n_features = first.ncols();
    if n_features == 0 {
        return Ok(());
    }
    if let (Some(first), Some(second)) = (first.as_slice(), second.as_slice()) {
        let rows = first
            .chunks_exact(n_features)
            .zip(second.chunks_exact(n_features));
        match direction {
            Direction::Forward => rows.for_each(|(a, b)| step(a, b)),
            Direction::Reverse => rows.rev().for_each(|(a, b)| step(a, b)),
        }
        return Ok(());
    }
    let (mut a, mut b) = (
        features(operation, "row buffer", n_features, E::zero())?,
        features(operation, "row buffer", n_features, E::zero())?,
    );
    let mut visit = |t: usize| {
        a.iter_mut().zip(first.row(t)).for_each(|(to, &v)| *to = v);
        b.iter_mut().zip(second.row(t)).for_each(|(to, &v)| *to = v);
        step(&a, &b);
    };
    match direction {
        Direction::Forward => (0..first.nrows()).for_each(&mut visit),
        Direction::Reverse => (0..first.nrows()).rev().for_each(&mut visit),
    }
    Ok(())
}

/// Reduces a forward chunk to its map: `decay = Π a_t`, and `impulse` = the chunk's last
/// state when it starts from zero (in processing order).
///
/// Applying the map to the state entering the chunk gives the chunk's last state, up to
/// rounding and to contributions of the entering state below `MIN_POSITIVE · |h_in|`
/// (a running product of decays that falls below the smallest normal number is flushed to
/// zero, because subnormal arithmetic is about a hundred times slower) (the reduction is the serial loop, so for finite inputs it equals the last row
/// of the forward pass from zero exactly).
pub fn forward_chunk_map<E: Element>(
    decay: ArrayView2<'_, E>,
    impulse: ArrayView2<'_, E>,
    direction: Direction,
) -> Result<ChunkMap<E>, ScanError> {
    const OP: &str = "forward_chunk_map";
    check_same_shape(OP, "impulse", &decay, &impulse)?;
    let mut product = features(OP, "decay", decay.ncols(), E::one())?;
    let mut state = features(OP, "impulse", decay.ncols(), E::zero())?;
    for_each_row_pair(OP, &decay, &impulse, direction, |a, x| {
        let rows = product
            .iter_mut()
            .zip(state.iter_mut())
            .zip(a.iter().zip(x));
        for ((product, state), (&a, &x)) in rows {
            *product = flush_subnormal(*product * a);
            *state = a * *state + x;
        }
    })?;
    Ok(ChunkMap {
        decay: Array1::from_vec(product),
        impulse: Array1::from_vec(state),
    })
}

/// Reduces a backward chunk to its map: `decay = Π a_t`, and `impulse` = the chunk's
/// ∂L/∂h0 when its `grad_last` is zero.
///
/// The backward pass of the chunk with `grad_last = G` gives ∂L/∂h0 = `decay ⊙ G + impulse`
/// (up to rounding).
pub fn backward_chunk_map<E: Element>(
    decay: ArrayView2<'_, E>,
    grad_state: ArrayView2<'_, E>,
    direction: Direction,
) -> Result<ChunkMap<E>, ScanError> {
    const OP: &str = "backward_chunk_map";
    check_same_shape(OP, "grad_state", &decay, &grad_state)?;
    let mut product = features(OP, "decay", decay.ncols(), E::one())?;
    let mut gradient = features(OP, "impulse", decay.ncols(), E::zero())?;
    // Walk the processing order backwards: u ← a_t ⊙ (u + ∂L/∂h_t), the gradient that flows
    // through step t into the state before it.
    for_each_row_pair(OP, &decay, &grad_state, direction.flip(), |a, dh| {
        let rows = product
            .iter_mut()
            .zip(gradient.iter_mut())
            .zip(a.iter().zip(dh));
        for ((product, gradient), (&a, &dh)) in rows {
            *product = flush_subnormal(*product * a);
            *gradient = a * (*gradient + dh);
        }
    })?;
    Ok(ChunkMap {
        decay: Array1::from_vec(product),
        impulse: Array1::from_vec(gradient),
    })
}

#[cfg(test)]
mod tests {
    use ndarray::{array, Array2};

    use super::*;
    use crate::{BackwardInputs, ForwardInputs, LinearScan, Reference};

    fn sample() -> (Array2<f64>, Array2<f64>) {
        let decay = Array2::from_shape_fn((7, 3), |(t, f)| 0.3 + 0.1 * ((t * 3 + f) % 7) as f64);
        let impulse = Array2::from_shape_fn((7, 3), |(t, f)| (t as f64 * 0.7 - f as f64).cos());
        (decay, impulse)
    }

    #[test]
    fn forward_map_applied_to_h0_is_the_last_state() {
        let (decay, impulse) = sample();
        let h0 = array![0.5, -2.0, 3.0];
        for direction in [Direction::Forward, Direction::Reverse] {
            let map = forward_chunk_map(decay.view(), impulse.view(), direction).unwrap();
            let h = Reference
                .forward(ForwardInputs {
                    decay: decay.view(),
                    impulse: impulse.view(),
                    initial: Some(h0.view()),
                    direction,
                })
                .unwrap();
            let last = match direction {
                Direction::Forward => h.row(6),
                Direction::Reverse => h.row(0),
            };
            let mapped = &map.decay * &h0 + &map.impulse;
            assert!(
                (&mapped - &last).iter().all(|d| d.abs() < 1e-12),
                "{direction:?}"
            );
        }
    }

    #[test]
    fn backward_map_applied_to_grad_last_is_the_initial_gradient() {
        let (decay, grad_state) = sample();
        let grad_last = array![1.5, 0.25, -4.0];
        for direction in [Direction::Forward, Direction::Reverse] {
            let state = Reference
                .forward(ForwardInputs {
                    decay: decay.view(),
                    impulse: grad_state.view(),
                    initial: None,
                    direction,
                })
                .unwrap();
            let grads = Reference
                .backward(BackwardInputs {
                    decay: decay.view(),
                    state: state.view(),
                    initial: None,
                    grad_state: grad_state.view(),
                    grad_last: Some(grad_last.view()),
                    direction,
                })
                .unwrap();
            let map = backward_chunk_map(decay.view(), grad_state.view(), direction).unwrap();
            let mapped = &map.decay * &grad_last + &map.impulse;
            assert!(
                (&mapped - &grads.initial).iter().all(|d| d.abs() < 1e-12),
                "{direction:?}"
            );
        }
    }

    #[test]
    fn strided_views_give_the_maps_of_contiguous_ones() {
        let (decay, impulse) = sample();
        let (decay_t, impulse_t) = (decay.t().to_owned(), impulse.t().to_owned());
        for direction in [Direction::Forward, Direction::Reverse] {
            let strided = forward_chunk_map(decay_t.t(), impulse_t.t(), direction).unwrap();
            let contiguous = forward_chunk_map(decay.view(), impulse.view(), direction).unwrap();
            assert_eq!(strided, contiguous);
            let strided = backward_chunk_map(decay_t.t(), impulse_t.t(), direction).unwrap();
            let contiguous = backward_chunk_map(decay.view(), impulse.view(), direction).unwrap();
            assert_eq!(strided, contiguous);
        }
    }

    #[test]
    fn empty_chunks_are_the_identity_and_shapes_are_checked() {
        let empty = Array2::<f32>::zeros((0, 4));
        let map = forward_chunk_map(empty.view(), empty.view(), Direction::Forward).unwrap();
        assert_eq!(map, ChunkMap::identity(4).unwrap());
        let wrong = Array2::<f32>::zeros((1, 4));
        assert!(matches!(
            backward_chunk_map(empty.view(), wrong.view(), Direction::Reverse),
            Err(ScanError::ShapeMismatch {
                argument: "grad_state",
                ..
            })
        ));
    }
}
