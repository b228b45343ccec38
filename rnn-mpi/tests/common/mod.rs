//! Helpers shared by the sequence-parallel and grid tests: random batches, gradient
//! comparisons, and a failure count.

#![allow(dead_code)]

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use ndarray::{s, Array2, Array3, ArrayD};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use surrogate_rnn::{
    Classifier, InputKind, LayerKind, ModelConfig, ModelInput, OneHotSequence, Parameters,
};

/// A batch over the whole sequence.
pub enum Batch {
    Dense(Array3<f64>),
    OneHot(OneHotSequence<f64>),
}

impl Batch {
    pub fn random(config: &ModelConfig, n_steps: usize, n_batch: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        match config.input {
            InputKind::Dense { size } => Self::Dense(Array3::from_shape_simple_fn(
                (n_steps, n_batch, size),
                || rng.gen_range(-1.0..1.0),
            )),
            InputKind::OneHot { vocab } => {
                let index = Array2::from_shape_simple_fn((n_steps, n_batch), || {
                    rng.gen_range(0..vocab as u32)
                });
                let value = Array2::from_shape_simple_fn((n_steps, n_batch), || {
                    if rng.gen_bool(0.5) {
                        1.0
                    } else {
                        -1.0
                    }
                });
                Self::OneHot(OneHotSequence::new(index, value, vocab).unwrap())
            }
        }
    }

    /// Steps `start..end`.
    pub fn steps(&self, start: usize, end: usize) -> Batch {
        match self {
            Self::Dense(x) => Self::Dense(x.slice(s![start..end, .., ..]).to_owned()),
            Self::OneHot(x) => Self::OneHot(x.steps(start, end - start).unwrap()),
        }
    }

    /// Sequences `start..end` (all steps).
    pub fn sequences(&self, start: usize, end: usize) -> Batch {
        match self {
            Self::Dense(x) => Self::Dense(x.slice(s![.., start..end, ..]).to_owned()),
            Self::OneHot(x) => Self::OneHot(
                OneHotSequence::new(
                    x.index().slice(s![.., start..end]).to_owned(),
                    x.value().slice(s![.., start..end]).to_owned(),
                    x.vocab(),
                )
                .unwrap(),
            ),
        }
    }

    pub fn input(&self) -> ModelInput<'_, f64> {
        match self {
            Self::Dense(x) => ModelInput::Dense(x.view()),
            Self::OneHot(x) => ModelInput::OneHot(x),
        }
    }
}

/// Every parameter gradient, by name.
pub fn gradients(model: &Classifier<f64>) -> Vec<(String, ArrayD<f64>)> {
    let mut out = Vec::new();
    model.visit_params(&mut |name, _, grad| out.push((name.to_string(), grad.to_owned())));
    out
}

/// The largest error of `actual` against `expected` relative to max(1, max |expected|),
/// and the name of the parameter where it is.
pub fn worst_error(
    actual: &[(String, ArrayD<f64>)],
    expected: &[(String, ArrayD<f64>)],
) -> (f64, String) {
    let mut worst = (0.0, String::new());
    for ((name, a), (_, e)) in actual.iter().zip(expected) {
        let scale = e.iter().fold(1.0_f64, |m, v| m.max(v.abs()));
        // A NaN counts as an infinite error (`f64::max` would skip it).
        let error = a
            .iter()
            .zip(e)
            .map(|(a, e)| (a - e).abs() / scale)
            .map(|d| if d.is_nan() { f64::INFINITY } else { d })
            .fold(
                if a.len() == e.len() {
                    0.0
                } else {
                    f64::INFINITY
                },
                f64::max,
            );
        if error > worst.0 || error.is_nan() {
            worst = (error, name.clone());
        }
    }
    worst
}

/// Whether every rank holds bit-identical gradients.
pub fn same_on_every_rank(world: &SimpleCommunicator, grads: &[(String, ArrayD<f64>)]) -> bool {
    let bits: Vec<u64> = grads
        .iter()
        .flat_map(|(_, g)| g.iter().map(|v| v.to_bits()))
        .collect();
    let mut root_bits = bits.clone();
    world.process_at_rank(0).broadcast_into(&mut root_bits[..]);
    let local = i32::from(root_bits == bits);
    let mut all = 0;
    world.all_reduce_into(&local, &mut all, SystemOperation::min());
    all == 1
}

pub struct Report {
    pub failures: usize,
    pub checks: usize,
}

impl Report {
    pub fn check(&mut self, rank: i32, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.failures += 1;
            eprintln!("rank {rank}: FAILED {}", what());
        }
    }
}

/// A 2-layer model of 4 units and 3 classes.
pub fn config(layer: LayerKind, input: InputKind, input_projection: Option<usize>) -> ModelConfig {
    ModelConfig {
        layer,
        input,
        input_projection,
        hidden: 4,
        layers: 2,
        classes: 3,
    }
}
