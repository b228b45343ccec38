//! The serial reference: plain loops, obviously correct, the oracle of every test.

use ndarray::{ArrayView1, ArrayViewMut1};

use crate::{BackwardProblem, Direction, Element, ForwardProblem, LinearScan, ScanError};

/// The reference backend: one loop over time per feature, written for clarity, not speed.
///
/// Every other backend is tested against it. It follows the definitions literally:
/// forward `h_t = a_t·h_{t-1} + x_t`; backward `g_t = a_{t+1}·g_{t+1} + ∂L/∂h_t`,
/// `∂L/∂x_t = g_t`, `∂L/∂a_t = h_{t-1}·g_t`, `∂L/∂h0 = a_first·g_first` (indices in
/// processing order).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reference;

/// Time indices in processing order.
fn steps(n_steps: usize, direction: Direction) -> Box<dyn Iterator<Item = usize>> {
    match direction {
        Direction::Forward => Box::new(0..n_steps),
        Direction::Reverse => Box::new((0..n_steps).rev()),
    }
}

fn initial_or_zero<E: Element>(initial: &Option<ArrayView1<'_, E>>, feature: usize) -> E {
    initial.as_ref().map_or(E::zero(), |h0| h0[feature])
}

impl<E: Element> LinearScan<E> for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn forward_checked(&self, problem: ForwardProblem<'_, '_, E>) -> Result<(), ScanError> {
        let shape = problem.shape();
        let (inputs, mut state) = problem.into_parts();
        for f in 0..shape.n_features {
            let mut h = initial_or_zero(&inputs.initial, f);
            for t in steps(shape.n_steps, inputs.direction) {
                h = inputs.decay[[t, f]] * h + inputs.impulse[[t, f]];
                state[[t, f]] = h;
            }
        }
        Ok(())
    }

    fn backward_checked(&self, problem: BackwardProblem<'_, '_, E>) -> Result<(), ScanError> {
        let shape = problem.shape();
        let (inputs, mut outputs) = problem.into_parts();
        for f in 0..shape.n_features {
            // Walk the processing order backwards (the flipped direction's order), carrying g
            // and the decay of the step after; the step peeked at is the one before.
            let mut g = initial_or_zero(&inputs.grad_last, f);
            let mut next_decay = E::one();
            let mut last_to_first = steps(shape.n_steps, inputs.direction.flip()).peekable();
            while let Some(t) = last_to_first.next() {
                g = next_decay * g + inputs.grad_state[[t, f]];
                let previous_state = match last_to_first.peek() {
                    Some(&before) => inputs.state[[before, f]],
                    None => initial_or_zero(&inputs.initial, f),
                };
                outputs.grad_impulse[[t, f]] = g;
                outputs.grad_decay[[t, f]] = previous_state * g;
                next_decay = inputs.decay[[t, f]];
            }
            if let Some(grad_initial) = outputs.grad_initial.as_mut() {
                // With T = 0 this is `1 · grad_last`: the initial state is the last state.
                grad_initial[f] = next_decay * g;
            }
        }
        Ok(())
    }
}

/// Fills `target` with `initial` or zeros: a helper for backends' T = 0 handling.
pub fn copy_or_zero<E: Element>(
    target: &mut ArrayViewMut1<'_, E>,
    source: Option<ArrayView1<'_, E>>,
) {
    match source {
        Some(source) => target.assign(&source),
        None => target.fill(E::zero()),
    }
}
