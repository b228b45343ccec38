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

impl AdamConfig {
    /// Checks that the hyper-parameters describe an Adam update: a finite step size
    /// α ≥ 0, decays 0 ≤ β₁, β₂ < 1, a finite ε > 0 and a finite clipping norm > 0.
    /// (β = 1 divides by zero in the bias correction; ε = 0 divides zero by zero where a
    /// gradient stays 0; a negative α or clipping norm climbs the loss.)
    pub fn validate(&self) -> Result<(), ModelError> {
        let problem = if !(self.learning_rate.is_finite() && self.learning_rate >= 0.0) {
            Some(format!(
                "learning rate {} is not finite and ≥ 0",
                self.learning_rate
            ))
        } else if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            Some(format!(
                "β₁ = {} and β₂ = {} must lie in [0, 1)",
                self.beta1, self.beta2
            ))
        } else if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            Some(format!("ε = {} is not finite and > 0", self.epsilon))
        } else {
            self.clip_norm
                .filter(|c| !(c.is_finite() && *c > 0.0))
                .map(|c| format!("clipping norm {c} is not finite and > 0"))
        };
        match problem {
            Some(reason) => Err(ModelError::InvalidConfig {
                reason: format!("Adam: {reason}"),
            }),
            None => Ok(()),
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
    /// this state was built for, hyper-parameters that fail [`AdamConfig::validate`], and
    /// a step count at `u64::MAX` are a [`ModelError::InvalidConfig`], with nothing changed.
    pub fn step<P: Parameters<E> + ?Sized>(
        &mut self,
        model: &mut P,
    ) -> Result<StepReport, ModelError> {
        self.config.validate()?;
        let steps = self
            .steps
            .checked_add(1)
            .ok_or_else(|| ModelError::InvalidConfig {
                reason: format!("Adam: the step count {} cannot grow", self.steps),
            })?;
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
            return Err(ModelError::NonFiniteGradient { step: steps });
        }
        let c = self.config;
        let (scale, clipped) = match c.clip_norm {
            Some(limit) if grad_norm > limit => (limit / grad_norm, true),
            _ => (1.0, false),
        };
        self.steps = steps;
        // β^t, by `powf` once t no longer fits `powi`'s `i32`.
        let power = |beta: f64| match i32::try_from(steps) {
            Ok(t) => beta.powi(t),
            Err(_) => beta.powf(steps as f64),
        };
        let step_size = c.learning_rate / (1.0 - power(c.beta1));
        let second_correction = 1.0 / (1.0 - power(c.beta2));
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

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::param::{ParamMut, ParamVisitor, ParamVisitorMut};

    /// One parameter vector with a gradient of ones.
    struct Weights {
        value: ArrayD<f64>,
        grad: ArrayD<f64>,
    }

    impl Weights {
        fn new() -> Self {
            Self {
                value: ArrayD::zeros(IxDyn(&[3])),
                grad: ArrayD::ones(IxDyn(&[3])),
            }
        }
    }

    impl Parameters<f64> for Weights {
        fn visit_params(&self, visitor: &mut ParamVisitor<'_, f64>) {
            visitor("w", self.value.view(), self.grad.view());
        }

        fn visit_params_mut(&mut self, visitor: &mut ParamVisitorMut<'_, f64>) {
            let (value, grad) = (self.value.view_mut(), self.grad.view_mut());
            visitor("w", ParamMut { value, grad });
        }
    }

    #[test]
    fn hyper_parameters_that_break_the_update_are_refused_before_it() {
        let bad = [
            AdamConfig {
                beta1: 1.0,
                ..AdamConfig::default()
            },
            AdamConfig {
                beta2: -0.1,
                ..AdamConfig::default()
            },
            AdamConfig {
                learning_rate: f64::NAN,
                ..AdamConfig::default()
            },
            AdamConfig {
                learning_rate: -1e-3,
                ..AdamConfig::default()
            },
            AdamConfig {
                epsilon: 0.0,
                ..AdamConfig::default()
            },
            AdamConfig {
                clip_norm: Some(-1.0),
                ..AdamConfig::default()
            },
        ];
        for config in bad {
            let mut weights = Weights::new();
            let mut adam = Adam::new(config, &weights);
            let refused = adam.step(&mut weights);
            assert!(
                matches!(refused, Err(ModelError::InvalidConfig { .. })),
                "{config:?}: {refused:?}"
            );
            assert_eq!(adam.steps(), 0);
            assert!(weights.value.iter().all(|&w| w == 0.0), "{config:?}");
        }
        let mut weights = Weights::new();
        let mut adam = Adam::new(AdamConfig::default(), &weights);
        assert!(adam.step(&mut weights).is_ok());
    }

    #[test]
    fn a_step_count_past_i32_still_moves_the_weights_and_the_last_count_is_refused() {
        for steps in [1u64 << 31, u64::MAX - 1] {
            let mut weights = Weights::new();
            let mut adam = Adam::new(AdamConfig::default(), &weights);
            let moments = || vec![ArrayD::zeros(IxDyn(&[3]))];
            adam.restore(steps, moments(), moments());
            adam.step(&mut weights).unwrap();
            // Bias corrections of 1: the first update of a unit gradient is −α·(1−β₁)/√(1−β₂).
            let want = -1e-3 * 0.1 / 0.001f64.sqrt();
            for &w in &weights.value {
                assert!(
                    (w - want).abs() < 1e-6 * want.abs(),
                    "{steps}: {w} vs {want}"
                );
            }
        }
        let mut weights = Weights::new();
        let mut adam = Adam::new(AdamConfig::default(), &weights);
        let moments = || vec![ArrayD::zeros(IxDyn(&[3]))];
        adam.restore(u64::MAX, moments(), moments());
        let refused = adam.step(&mut weights);
        assert!(matches!(refused, Err(ModelError::InvalidConfig { .. })));
        assert_eq!(adam.steps(), u64::MAX);
    }
}
