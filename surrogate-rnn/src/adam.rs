//! The Adam optimizer with optional gradient-norm clipping.

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use crate::{ModelError, Parameters, Real};

/// Adam's hyper-parameters (Kingma & Ba 2015).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Step size α.
    pub learning_rate: f64,
    /// Decay of the first-moment estimate β₁.
    pub beta1: f64,
    /// Decay of the second-moment estimate β₂.
    pub beta2: f64,
    /// ε added to √v̂.
    pub epsilon: f64,
    /// If set, gradients are scaled so their global Euclidean norm is at most this.
    pub clip_norm: Option<f64>,
}

impl Default for AdamConfig {
    /// α = 10⁻³, β₁ = 0.9, β₂ = 0.999, ε = 10⁻⁸, no clipping.
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            clip_norm: None,
        }
    }
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether the gradients were scaled down by clipping.
    pub clipped: bool,
}

/// Adam state: the step count and first/second moments of every parameter, paired with
/// the model's parameters by visiting order.
#[derive(Clone, Debug)]
pub struct Adam<E> {
    /// The hyper-parameters (may be changed between steps, e.g. for a schedule).
    pub config: AdamConfig,
    steps: u64,
    names: Vec<String>,
    first: Vec<ArrayD<E>>,
    second: Vec<ArrayD<E>>,
}

impl<E: Real> Adam<E> {
    /// Fresh state (zero moments, step 0) for `model`'s parameters.
    pub fn new<P: Parameters<E> + ?Sized>(config: AdamConfig, model: &P) -> Self {
        let mut names = Vec::new();
        let mut first = Vec::new();
        model.visit_params(&mut |name, value, _| {
            names.push(name.to_owned());
            first.push(ArrayD::zeros(value.raw_dim()));
        });
        let second = first.clone();
        Self {
            config,
            steps: 0,
            names,
            first,
            second,
        }
    }

    /// The number of updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The parameter names this state belongs to, in visiting order.
    pub fn param_names(&self) -> &[String] {
        &self.names
    }

    /// The first-moment estimates, in visiting order.
    pub fn first_moments(&self) -> &[ArrayD<E>] {
        &self.first
    }

    /// The second-moment estimates, in visiting order.
    pub fn second_moments(&self) -> &[ArrayD<E>] {
        &self.second
    }

    /// Replaces the whole state (used when loading checkpoints); shapes must match.
    pub(crate) fn restore(&mut self, steps: u64, first: Vec<ArrayD<E>>, second: Vec<ArrayD<E>>) {
        self.steps = steps;
        self.first = first;
        self.second = second;
    }

    /// Applies one update from the accumulated gradients, then zeroes them.
    ///
    /// With `clip_norm = Some(c)` and a global gradient norm `‖g‖ > c`, every gradient is
    /// scaled by `c/‖g‖` first. A non-finite gradient norm leaves parameters and state
    /// untouched (gradients are still zeroed) and returns
    /// [`ModelError::NonFiniteGradient`]. A model whose parameters differ from the ones
    /// this state was built for is a [`ModelError::InvalidConfig`].
    pub fn step<P: Parameters<E> + ?Sized>(
        &mut self,
        model: &mut P,
    ) -> Result<StepReport, ModelError> {
        let mut index = 0;
        let mut mismatch = None;
        model.visit_params(&mut |name, value, _| {
            let ok = self.names.get(index).is_some_and(|n| n == name)
                && self.first[index].shape() == value.shape();
            if !ok && mismatch.is_none() {
                mismatch = Some(name.to_owned());
            }
            index += 1;
        });
        if mismatch.is_some() || index != self.names.len() {
            return Err(ModelError::InvalidConfig {
                reason: format!(
                    "the optimizer state was built for another model (first differing parameter: {})",
                    mismatch.unwrap_or_else(|| "count".to_owned())
                ),
            });
        }
        let grad_norm = model.grad_norm();
        if !grad_norm.is_finite() {
            model.zero_grad();
            return Err(ModelError::NonFiniteGradient {
                step: self.steps + 1,
            });
        }
        let c = self.config;
        let (scale, clipped) = match c.clip_norm {
            Some(limit) if grad_norm > limit => (limit / grad_norm, true),
            _ => (1.0, false),
        };
        self.steps += 1;
        let t = self.steps as i32;
        let step_size = c.learning_rate / (1.0 - c.beta1.powi(t));
        let second_correction = 1.0 / (1.0 - c.beta2.powi(t));
        let (scale, beta1, beta2) = (
            E::from_f64(scale),
            E::from_f64(c.beta1),
            E::from_f64(c.beta2),
        );
        let (one_m_b1, one_m_b2) = (E::one() - beta1, E::one() - beta2);
        let (step_size, second_correction, epsilon) = (
            E::from_f64(step_size),
            E::from_f64(second_correction),
            E::from_f64(c.epsilon),
        );
        let mut index = 0;
        model.visit_params_mut(&mut |_, mut p| {
            let (m, v) = (&mut self.first[index], &mut self.second[index]);
            ndarray::Zip::from(&mut p.value)
                .and(&mut p.grad)
                .and(m)
                .and(v)
                .for_each(|w, g, m, v| {
                    let grad = *g * scale;
                    *m = beta1 * *m + one_m_b1 * grad;
                    *v = beta2 * *v + one_m_b2 * grad * grad;
                    *w = *w - step_size * *m / ((*v * second_correction).sqrt() + epsilon);
                    *g = E::zero();
                });
            index += 1;
        });
        Ok(StepReport { grad_norm, clipped })
    }
}
