//! The reference backward pass equals central finite differences of L = Σ w ⊙ h in f64,
//! for every input: decays, impulses and the initial state, in both directions.

use ndarray::{Array1, Array2};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scan_core::{BackwardInputs, Direction, ForwardInputs, LinearScan, Reference};

struct Problem {
    decay: Array2<f64>,
    impulse: Array2<f64>,
    initial: Array1<f64>,
    weights: Array2<f64>,
    direction: Direction,
}

impl Problem {
    fn random(n_steps: usize, n_features: usize, reverse: bool, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut draw = |lo: f64, hi: f64| rng.gen_range(lo..hi);
        let dim = (n_steps, n_features);
        Self {
            decay: Array2::from_shape_simple_fn(dim, || draw(-1.0, 1.0)),
            impulse: Array2::from_shape_simple_fn(dim, || draw(-1.0, 1.0)),
            initial: Array1::from_shape_simple_fn(n_features, || draw(-1.0, 1.0)),
            weights: Array2::from_shape_simple_fn(dim, || draw(-1.0, 1.0)),
            direction: if reverse {
                Direction::Reverse
            } else {
                Direction::Forward
            },
        }
    }

    fn states(&self) -> Array2<f64> {
        Reference
            .forward(ForwardInputs {
                decay: self.decay.view(),
                impulse: self.impulse.view(),
                initial: Some(self.initial.view()),
                direction: self.direction,
            })
            .unwrap()
    }

    fn loss(&self) -> f64 {
        (&self.states() * &self.weights).sum()
    }
}

/// Central difference of the loss along one coordinate, chosen by `select`.
fn central_difference(problem: &mut Problem, select: &dyn Fn(&mut Problem) -> &mut f64) -> f64 {
    let step = 1e-6;
    let original = *select(problem);
    *select(problem) = original + step;
    let plus = problem.loss();
    *select(problem) = original - step;
    let minus = problem.loss();
    *select(problem) = original;
    (plus - minus) / (2.0 * step)
}

fn assert_close(what: &str, analytic: f64, numeric: f64) -> Result<(), TestCaseError> {
    let error = (analytic - numeric).abs() / (1.0 + numeric.abs());
    prop_assert!(
        error < 1e-7,
        "{what}: analytic {analytic} vs finite difference {numeric}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn backward_equals_finite_differences(
        n_steps in 0usize..12,
        n_features in 1usize..4,
        reverse in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut problem = Problem::random(n_steps, n_features, reverse, seed);
        let states = problem.states();
        let grads = Reference
            .backward(BackwardInputs {
                decay: problem.decay.view(),
                state: states.view(),
                initial: Some(problem.initial.view()),
                grad_state: problem.weights.view(),
                grad_last: None,
                direction: problem.direction,
            })
            .unwrap();
        for t in 0..n_steps {
            for f in 0..n_features {
                let numeric = central_difference(&mut problem, &|p| &mut p.decay[[t, f]]);
                assert_close(&format!("∂L/∂a[{t},{f}]"), grads.decay[[t, f]], numeric)?;
                let numeric = central_difference(&mut problem, &|p| &mut p.impulse[[t, f]]);
                assert_close(&format!("∂L/∂x[{t},{f}]"), grads.impulse[[t, f]], numeric)?;
            }
        }
        for f in 0..n_features {
            let numeric = central_difference(&mut problem, &|p| &mut p.initial[f]);
            assert_close(&format!("∂L/∂h0[{f}]"), grads.initial[f], numeric)?;
        }
    }
}

#[test]
fn grad_last_adds_to_the_last_processed_state() {
    // With grad_state zero except grad_last, ∂L/∂x at the last processed step is grad_last.
    let decay = Array2::from_elem((3, 1), 0.5);
    let state = Array2::zeros((3, 1));
    let zeros = Array2::zeros((3, 1));
    let grad_last = Array1::from_elem(1, 2.0);
    for (direction, last) in [(Direction::Forward, 2), (Direction::Reverse, 0)] {
        let grads = Reference
            .backward(BackwardInputs {
                decay: decay.view(),
                state: state.view(),
                initial: None,
                grad_state: zeros.view(),
                grad_last: Some(grad_last.view()),
                direction,
            })
            .unwrap();
        assert_eq!(grads.impulse[[last, 0]], 2.0);
        assert_eq!(grads.initial[0], 2.0 * 0.5 * 0.5 * 0.5);
    }
}
