//! A chunk of time steps reduced to the one affine map it applies to the state entering it:
//! the summary that Algorithm 1 exchanges between threads, and that a sequence split over
//! processes exchanges between ranks.

use ndarray::{Array1, ArrayView2, Axis, Zip};

use crate::{Direction, Element, ScanError};

/// Per feature, the affine map `state ↦ decay ⊙ state + impulse` of a whole chunk.
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
    /// The map of an empty chunk: the identity.
    pub fn identity(n_features: usize) -> Self {
        Self {
            decay: Array1::ones(n_features),
            impulse: Array1::zeros(n_features),
        }
    }
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

/// The rows of a (T, F) view in processing order.
fn rows_in_order<'v, E>(
    view: &'v ArrayView2<'_, E>,
    direction: Direction,
) -> Box<dyn Iterator<Item = ndarray::ArrayView1<'v, E>> + 'v> {
    match direction {
        Direction::Forward => Box::new(view.axis_iter(Axis(0))),
        Direction::Reverse => Box::new(view.axis_iter(Axis(0)).rev()),
    }
}

/// Reduces a forward chunk to its map: `decay = Π a_t`, and `impulse` = the chunk's last
/// state when it starts from zero (in processing order).
///
/// Applying the map to the state entering the chunk gives the chunk's last state, up to
/// rounding (the reduction is the serial loop, so for finite inputs it equals the last row
/// of the forward pass from zero exactly).
pub fn forward_chunk_map<E: Element>(
    decay: ArrayView2<'_, E>,
    impulse: ArrayView2<'_, E>,
    direction: Direction,
) -> Result<ChunkMap<E>, ScanError> {
    check_same_shape("forward_chunk_map", "impulse", &decay, &impulse)?;
    let mut map = ChunkMap::identity(decay.ncols());
    for (a, x) in rows_in_order(&decay, direction).zip(rows_in_order(&impulse, direction)) {
        Zip::from(&mut map.decay)
            .and(&mut map.impulse)
            .and(&a)
            .and(&x)
            .for_each(|product, state, &a, &x| {
                *product = *product * a;
                *state = a * *state + x;
            });
    }
    Ok(map)
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
    check_same_shape("backward_chunk_map", "grad_state", &decay, &grad_state)?;
    let mut map = ChunkMap::identity(decay.ncols());
    // Walk the processing order backwards: u ← a_t ⊙ (u + ∂L/∂h_t), the gradient that flows
    // through step t into the state before it.
    let backwards = direction.flip();
    for (a, dh) in rows_in_order(&decay, backwards).zip(rows_in_order(&grad_state, backwards)) {
        Zip::from(&mut map.decay)
            .and(&mut map.impulse)
            .and(&a)
            .and(&dh)
            .for_each(|product, gradient, &a, &dh| {
                *product = *product * a;
                *gradient = a * (*gradient + dh);
            });
    }
    Ok(map)
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
    fn empty_chunks_are_the_identity_and_shapes_are_checked() {
        let empty = Array2::<f32>::zeros((0, 4));
        let map = forward_chunk_map(empty.view(), empty.view(), Direction::Forward).unwrap();
        assert_eq!(map, ChunkMap::identity(4));
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
