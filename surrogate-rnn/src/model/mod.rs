//! Stacked recurrent classifiers: input encoder, recurrent layers, head on the last step.

mod chunked;
mod classifier;
mod recurrent;

pub use chunked::{Backprop, ModelState, Stream};
pub use classifier::{BatchStats, Classifier, ForwardPass, InputEncoder, PassGrads, TrainStats};
pub use recurrent::RecurrentLayer;

use ndarray::ArrayView3;
use serde::{Deserialize, Serialize};

use crate::layers::OneHotSequence;
use crate::{ModelError, Real};

/// Which recurrent layer a model stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerKind {
    /// [`Gilr`](crate::Gilr).
    Gilr,
    /// [`GilrLstm`](crate::GilrLstm).
    GilrLstm,
    /// [`Qrnn`](crate::Qrnn) with a causal filter of `width` steps (the paper uses 2 and 10).
    Qrnn {
        /// Filter width k ≥ 1.
        width: usize,
    },
    /// [`Sru`](crate::Sru) (every layer's input must be `hidden` wide: use `input_projection`).
    Sru,
    /// [`Lstm`](crate::Lstm), the serial non-linear baseline.
    Lstm,
    /// [`GilrLstm`](crate::GilrLstm) with the bounded output `h = o ⊙ tanh(c)` instead of
    /// the paper's `h = o ⊙ c` (opt-in; same parameters, same state).
    GilrLstmTanh,
}

impl LayerKind {
    /// A short label: `gilr`, `gilr-lstm`, `qrnn-k2`, `sru`, `lstm`, `gilr-lstm-tanh`.
    pub fn label(&self) -> String {
        match self {
            Self::Gilr => "gilr".into(),
            Self::GilrLstm => "gilr-lstm".into(),
            Self::Qrnn { width } => format!("qrnn-k{width}"),
            Self::Sru => "sru".into(),
            Self::Lstm => "lstm".into(),
            Self::GilrLstmTanh => "gilr-lstm-tanh".into(),
        }
    }
}

/// What the model reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputKind {
    /// Dense `(T, B, size)` arrays.
    Dense {
        /// Features per step.
        size: usize,
    },
    /// Scaled one-hot vectors ([`OneHotSequence`]) in `vocab` dimensions, read through an
    /// [`Embedding`](crate::Embedding) lookup (needs `input_projection`).
    OneHot {
        /// The one-hot dimension.
        vocab: usize,
    },
}

/// The architecture of a [`Classifier`]; stored in checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The recurrent layer type.
    pub layer: LayerKind,
    /// The input type.
    pub input: InputKind,
    /// Width of an input encoder in front of the first recurrent layer: an [`Embedding`](crate::Embedding)
    /// for one-hot inputs (required), a linear [`Dense`](crate::Dense) map for dense inputs (optional;
    /// needed by SRU when the input size ≠ `hidden`).
    pub input_projection: Option<usize>,
    /// Hidden units per recurrent layer n.
    pub hidden: usize,
    /// Number of stacked recurrent layers.
    pub layers: usize,
    /// Number of output classes.
    pub classes: usize,
}

impl ModelConfig {
    /// Checks that the configuration describes a buildable model.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| Err(ModelError::InvalidConfig { reason });
        if self.hidden == 0 || self.layers == 0 || self.classes == 0 {
            return bad(format!(
                "hidden ({}), layers ({}) and classes ({}) must all be ≥ 1",
                self.hidden, self.layers, self.classes
            ));
        }
        if self.input_projection == Some(0) {
            return bad("input_projection must be ≥ 1 when set".into());
        }
        let raw_size = match self.input {
            InputKind::Dense { size } => size,
            InputKind::OneHot { vocab } => {
                if self.input_projection.is_none() {
                    return bad("one-hot inputs need input_projection (the embedding width)".into());
                }
                vocab
            }
        };
        if raw_size == 0 {
            return bad("the input size must be ≥ 1".into());
        }
        if let LayerKind::Qrnn { width: 0 } = self.layer {
            return bad("the QRNN filter width must be ≥ 1".into());
        }
        let encoder = match self.input_projection {
            Some(d) => raw_size.checked_mul(d).and_then(|p| p.checked_add(d)),
            None => Some(0),
        };
        // The first layer reads the input, the `layers − 1` others (layers ≥ 1) `hidden`
        // units: counted in closed form, so a huge layer count is refused at once.
        let first = layer_parameters(self.layer, self.first_layer_input(), self.hidden);
        let others = layer_parameters(self.layer, self.hidden, self.hidden)
            .and_then(|p| p.checked_mul(self.layers - 1));
        let sum = |a: Option<usize>, b: Option<usize>| a.zip(b).and_then(|(a, b)| a.checked_add(b));
        let total = sum(sum(encoder, first), others);
        let head = self
            .hidden
            .checked_mul(self.classes)
            .and_then(|p| p.checked_add(self.classes));
        check_parameter_count::<f64>(sum(total, head))?;
        if self.layer == LayerKind::Sru && self.first_layer_input() != self.hidden {
            return bad(format!(
                "SRU's highway connection needs input size = hidden ({} ≠ {}); set input_projection = {}",
                self.first_layer_input(),
                self.hidden,
                self.hidden
            ));
        }
        Ok(())
    }

    /// The input width of the first recurrent layer.
    pub fn first_layer_input(&self) -> usize {
        match (self.input_projection, self.input) {
            (Some(d), _) => d,
            (None, InputKind::Dense { size }) => size,
            (None, InputKind::OneHot { vocab }) => vocab,
        }
    }
}

/// An input for [`Classifier`]: dense or one-hot, time-major.
#[derive(Clone, Copy, Debug)]
pub enum ModelInput<'a, E> {
    /// `(T, B, size)`.
    Dense(ArrayView3<'a, E>),
    /// `(T, B)` scaled one-hot vectors.
    OneHot(&'a OneHotSequence<E>),
}

impl<E: Real> ModelInput<'_, E> {
    /// `(T, B)`.
    pub fn dim(&self) -> (usize, usize) {
        match self {
            Self::Dense(x) => (x.dim().0, x.dim().1),
            Self::OneHot(x) => x.dim(),
        }
    }
}

/// The number of parameters of one `m → n` layer of `kind` (`None` on overflow).
pub(crate) fn layer_parameters(kind: LayerKind, m: usize, n: usize) -> Option<usize> {
    let (input_gates, recurrent_gates, taps) = match kind {
        LayerKind::Gilr => (2, 0, 1),
        LayerKind::GilrLstm | LayerKind::GilrLstmTanh => (6, 4, 1),
        LayerKind::Qrnn { width } => (3, 0, width),
        LayerKind::Sru => (3, 0, 1),
        LayerKind::Lstm => (4, 4, 1),
    };
    let input = taps
        .checked_mul(m)?
        .checked_mul(input_gates)?
        .checked_mul(n)?;
    let recurrent = n.checked_mul(recurrent_gates)?.checked_mul(n)?;
    let bias = input_gates.checked_mul(n)?;
    input.checked_add(recurrent)?.checked_add(bias)
}

/// An error unless `count` parameters (and their gradients and optimizer moments) fit in
/// memory: the count must not overflow and four copies must be allocatable.
pub(crate) fn check_parameter_count<E>(count: Option<usize>) -> Result<(), ModelError> {
    let too_large = || ModelError::InvalidConfig {
        reason: format!(
            "the model is too large: {} parameters",
            count.map_or("more than usize::MAX".into(), |c| c.to_string())
        ),
    };
    let count = count.ok_or_else(too_large)?;
    let bytes = count
        .checked_mul(4 * std::mem::size_of::<E>())
        .ok_or_else(too_large)?;
    if bytes > isize::MAX as usize {
        return Err(too_large());
    }
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes).map_err(|_| too_large())
}
