//! Seeded, portable parameter initialisation.
//!
//! Every model draws its parameters from one [`ChaCha8Rng`] seeded with the user's seed,
//! in a fixed order, converting from `f64`: the same seed gives the same parameters on
//! every machine (bit-for-bit for a given element type).

use ndarray::{Array2, Array3, ArrayViewMut1};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{ModelError, Real};

/// How the biases of decay ("forget") gates are initialised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GateBiasInit {
    /// All biases zero, as in the paper's code: the decays start near σ(0) = 0.5, a memory
    /// of a couple of steps.
    Zero,
    /// Decay-gate biases set to this constant (e.g. 1.0, the classic LSTM forget bias).
    Constant {
        /// The bias value.
        value: f64,
    },
    /// "Chrono" initialisation (Tallec & Ollivier 2018): each decay-gate bias is
    /// `ln(u)`, `u ~ Uniform(1, max_len − 1)`, so the decays `σ(b) = u/(1+u)` give memory
    /// time scales spread up to `max_len` steps; LSTM-style input gates get `−b`.
    /// This is what makes very long dependencies learnable in few iterations.
    Chrono {
        /// The longest dependency the model should be able to keep at initialisation.
        max_len: usize,
    },
}

/// How a model's parameters are initialised: Glorot/Xavier-uniform weights (per gate
/// block, as the paper's code), zero biases except decay gates, which follow `gate_bias`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitConfig {
    /// The decay-gate bias scheme.
    pub gate_bias: GateBiasInit,
}

impl InitConfig {
    /// Checks that the scheme gives finite biases: a constant bias must be finite.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self.gate_bias {
            GateBiasInit::Constant { value } if !value.is_finite() => {
                Err(ModelError::InvalidConfig {
                    reason: format!("the constant gate bias {value} is not finite"),
                })
            }
            _ => Ok(()),
        }
    }
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            gate_bias: GateBiasInit::Zero,
        }
    }
}

/// The random source and scheme used while building a model.
pub(crate) struct Initializer {
    pub(crate) rng: ChaCha8Rng,
    pub(crate) config: InitConfig,
}

impl Initializer {
    pub(crate) fn new(config: InitConfig, seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            config,
        }
    }

    /// Glorot-uniform `(fan_in, fan_out)` matrix: `U(−a, a)`, `a = √(6/(fan_in+fan_out))`.
    pub(crate) fn glorot<E: Real>(&mut self, fan_in: usize, fan_out: usize) -> Array2<E> {
        let limit = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
        Array2::from_shape_simple_fn((fan_in, fan_out), || {
            E::from_f64(self.rng.gen_range(-limit..=limit))
        })
    }

    /// A `(fan_in, n_gates·n)` matrix of Glorot blocks, each block `(fan_in, n)` drawn
    /// with fans `(fan_in, n)`.
    pub(crate) fn glorot_gates<E: Real>(
        &mut self,
        fan_in: usize,
        n_gates: usize,
        n: usize,
    ) -> Array2<E> {
        let mut w = Array2::zeros((fan_in, n_gates * n));
        for k in 0..n_gates {
            let block = self.glorot::<E>(fan_in, n);
            w.slice_mut(ndarray::s![.., k * n..(k + 1) * n])
                .assign(&block);
        }
        w
    }

    /// A `(width, fan_in, n_gates·n)` convolution filter; fans are `(width·fan_in, n)`.
    pub(crate) fn glorot_filter<E: Real>(
        &mut self,
        width: usize,
        fan_in: usize,
        n_gates: usize,
        n: usize,
    ) -> Array3<E> {
        let limit = (6.0 / (width * fan_in + n).max(1) as f64).sqrt();
        Array3::from_shape_simple_fn((width, fan_in, n_gates * n), || {
            E::from_f64(self.rng.gen_range(-limit..=limit))
        })
    }

    /// Fills a decay-gate bias block following the configured scheme.
    pub(crate) fn decay_bias<E: Real>(&mut self, mut bias: ArrayViewMut1<'_, E>) {
        match self.config.gate_bias {
            GateBiasInit::Zero => bias.fill(E::zero()),
            GateBiasInit::Constant { value } => bias.fill(E::from_f64(value)),
            GateBiasInit::Chrono { max_len } => {
                let high = (max_len as f64 - 1.0).max(1.0 + 1e-9);
                for b in bias.iter_mut() {
                    *b = E::from_f64(self.rng.gen_range(1.0..high).ln());
                }
            }
        }
    }
}
