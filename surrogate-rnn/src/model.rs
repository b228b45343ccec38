//! Stacked recurrent classifiers: input encoder, recurrent layers, head on the last step.

use ndarray::{s, Array2, Array3, ArrayView3};
use scan_core::LinearScan;
use serde::{Deserialize, Serialize};

use crate::init::Initializer;
use crate::layers::{
    Dense, Embedding, Gilr, GilrCache, GilrLstm, GilrLstmCache, Layer, Lstm, LstmCache,
    OneHotSequence, Qrnn, QrnnCache, Sru, SruCache,
};
use crate::param::{visit_child, visit_child_mut, ParamVisitor, ParamVisitorMut};
use crate::workspace::Workspace;
use crate::{softmax_cross_entropy, Adam, InitConfig, ModelError, Parameters, Real};

/// Which recurrent layer a model stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerKind {
    /// [`Gilr`].
    Gilr,
    /// [`GilrLstm`].
    GilrLstm,
    /// [`Qrnn`] with a causal filter of `width` steps (the paper uses 2 and 10).
    Qrnn {
        /// Filter width k ≥ 1.
        width: usize,
    },
    /// [`Sru`] (every layer's input must be `hidden` wide: use `input_projection`).
    Sru,
    /// [`Lstm`], the serial non-linear baseline.
    Lstm,
}

impl LayerKind {
    /// A short label: `gilr`, `gilr-lstm`, `qrnn-k2`, `sru`, `lstm`.
    pub fn label(&self) -> String {
        match self {
            Self::Gilr => "gilr".into(),
            Self::GilrLstm => "gilr-lstm".into(),
            Self::Qrnn { width } => format!("qrnn-k{width}"),
            Self::Sru => "sru".into(),
            Self::Lstm => "lstm".into(),
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
    /// [`Embedding`] lookup (needs `input_projection`).
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
    /// Width of an input encoder in front of the first recurrent layer: an [`Embedding`]
    /// for one-hot inputs (required), a linear [`Dense`] map for dense inputs (optional;
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

/// One recurrent layer of any kind (the stack holds these).
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub enum RecurrentLayer<E: Real> {
    Gilr(Gilr<E>),
    GilrLstm(GilrLstm<E>),
    Qrnn(Qrnn<E>),
    Sru(Sru<E>),
    Lstm(Lstm<E>),
}

/// The forward cache of a [`RecurrentLayer`].
#[derive(Debug)]
#[allow(missing_docs)]
pub enum RecurrentCache<E> {
    Gilr(GilrCache<E>),
    GilrLstm(GilrLstmCache<E>),
    Qrnn(QrnnCache<E>),
    Sru(SruCache<E>),
    Lstm(LstmCache<E>),
}

macro_rules! dispatch {
    ($self:expr, $layer:ident => $body:expr) => {
        match $self {
            RecurrentLayer::Gilr($layer) => $body,
            RecurrentLayer::GilrLstm($layer) => $body,
            RecurrentLayer::Qrnn($layer) => $body,
            RecurrentLayer::Sru($layer) => $body,
            RecurrentLayer::Lstm($layer) => $body,
        }
    };
}

impl<E: Real> RecurrentLayer<E> {
    /// A standalone `m → n` layer of `kind`, initialised from `seed` (see [`InitConfig`]).
    pub fn new(
        kind: LayerKind,
        m: usize,
        n: usize,
        init: InitConfig,
        seed: u64,
    ) -> Result<Self, ModelError> {
        if m == 0 || n == 0 {
            return Err(ModelError::InvalidConfig {
                reason: format!("layer sizes must be ≥ 1 (got m = {m}, n = {n})"),
            });
        }
        match kind {
            LayerKind::Qrnn { width: 0 } => Err(ModelError::InvalidConfig {
                reason: "the QRNN filter width must be ≥ 1".into(),
            }),
            LayerKind::Sru if m != n => Err(ModelError::InvalidConfig {
                reason: format!("SRU needs input size = hidden size (got m = {m}, n = {n})"),
            }),
            _ => Ok(Self::init(kind, &mut Initializer::new(init, seed), m, n)),
        }
    }

    fn init(kind: LayerKind, init: &mut Initializer, m: usize, n: usize) -> Self {
        match kind {
            LayerKind::Gilr => Self::Gilr(Gilr::init(init, m, n)),
            LayerKind::GilrLstm => Self::GilrLstm(GilrLstm::init(init, m, n)),
            LayerKind::Qrnn { width } => Self::Qrnn(Qrnn::init(init, width, m, n)),
            LayerKind::Sru => Self::Sru(Sru::init(init, n)),
            LayerKind::Lstm => Self::Lstm(Lstm::init(init, m, n)),
        }
    }
}

impl<E: Real> Layer<E> for RecurrentLayer<E> {
    type Cache = RecurrentCache<E>;

    fn input_size(&self) -> usize {
        dispatch!(self, l => l.input_size())
    }

    fn output_size(&self) -> usize {
        dispatch!(self, l => l.output_size())
    }

    fn forward(
        &self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
    ) -> Result<(Array3<E>, RecurrentCache<E>), ModelError> {
        self.forward_with(scan, input, &Workspace::unpooled())
    }

    /// A cache from a layer of another kind is an [`ModelError::InvalidInput`].
    fn backward(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        output: ArrayView3<'_, E>,
        cache: RecurrentCache<E>,
        grad_output: ArrayView3<'_, E>,
    ) -> Result<Array3<E>, ModelError> {
        self.backward_with(
            scan,
            input,
            output,
            cache,
            grad_output,
            &Workspace::unpooled(),
        )
    }
}

impl<E: Real> RecurrentLayer<E> {
    /// [`Layer::forward`] with buffers from `ws`.
    pub(crate) fn forward_with(
        &self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<(Array3<E>, RecurrentCache<E>), ModelError> {
        Ok(match self {
            Self::Gilr(l) => {
                let (y, c) = l.forward_with(scan, input, ws)?;
                (y, RecurrentCache::Gilr(c))
            }
            Self::GilrLstm(l) => {
                let (y, c) = l.forward_with(scan, input, ws)?;
                (y, RecurrentCache::GilrLstm(c))
            }
            Self::Qrnn(l) => {
                let (y, c) = l.forward_with(scan, input, ws)?;
                (y, RecurrentCache::Qrnn(c))
            }
            Self::Sru(l) => {
                let (y, c) = l.forward_with(scan, input, ws)?;
                (y, RecurrentCache::Sru(c))
            }
            Self::Lstm(l) => {
                let (y, c) = l.forward_with(scan, input, ws)?;
                (y, RecurrentCache::Lstm(c))
            }
        })
    }

    /// [`Layer::backward`] with buffers from `ws`; the cache's buffers go back to `ws`.
    pub(crate) fn backward_with(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        output: ArrayView3<'_, E>,
        cache: RecurrentCache<E>,
        grad_output: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<Array3<E>, ModelError> {
        match (self, cache) {
            (Self::Gilr(l), RecurrentCache::Gilr(c)) => {
                l.backward_with(scan, input, output, c, grad_output, ws)
            }
            (Self::GilrLstm(l), RecurrentCache::GilrLstm(c)) => {
                l.backward_with(scan, input, output, c, grad_output, ws)
            }
            (Self::Qrnn(l), RecurrentCache::Qrnn(c)) => {
                l.backward_with(scan, input, output, c, grad_output, ws)
            }
            (Self::Sru(l), RecurrentCache::Sru(c)) => {
                l.backward_with(scan, input, output, c, grad_output, ws)
            }
            (Self::Lstm(l), RecurrentCache::Lstm(c)) => {
                l.backward_with(scan, input, output, c, grad_output, ws)
            }
            _ => Err(ModelError::InvalidInput {
                operation: "RecurrentLayer::backward",
                reason: "the cache comes from a layer of another kind".into(),
            }),
        }
    }
}

impl<E: Real> Parameters<E> for RecurrentLayer<E> {
    fn visit_params(&self, visitor: &mut ParamVisitor<'_, E>) {
        dispatch!(self, l => l.visit_params(visitor))
    }

    fn visit_params_mut(&mut self, visitor: &mut ParamVisitorMut<'_, E>) {
        dispatch!(self, l => l.visit_params_mut(visitor))
    }
}

/// The encoder in front of the first recurrent layer.
#[derive(Clone, Debug)]
pub enum InputEncoder<E: Real> {
    /// Index lookup for one-hot inputs.
    Embedding(Embedding<E>),
    /// A linear map for dense inputs.
    Linear(Dense<E>),
}

/// A sequence classifier: optional input encoder, `layers` recurrent layers of `hidden`
/// units, and a [`Dense`] head on the last step's output, trained with softmax
/// cross-entropy.
///
/// Every method that runs a recurrence takes the scan backend as its first argument, so
/// switching between serial and parallel scans is that one argument (a `&dyn LinearScan`:
/// one virtual call per scan, negligible next to the scan itself).
#[derive(Clone, Debug)]
pub struct Classifier<E: Real> {
    config: ModelConfig,
    /// The input encoder, if the configuration has one.
    pub encoder: Option<InputEncoder<E>>,
    /// The recurrent layers, input first.
    pub layers: Vec<RecurrentLayer<E>>,
    /// The classification head, `(hidden, classes)`.
    pub head: Dense<E>,
    /// Activation and gradient buffers kept from one pass to the next (a clone starts
    /// with an empty pool).
    workspace: Workspace<E>,
}

/// Everything a [`Classifier`] forward pass keeps for its backward pass.
#[derive(Debug)]
pub struct ForwardPass<E> {
    encoded: Option<Array3<E>>,
    outputs: Vec<Array3<E>>,
    caches: Vec<RecurrentCache<E>>,
    /// The logits, `(B, classes)`.
    pub logits: Array2<E>,
}

/// Loss and accuracy of one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchStats {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of sequences classified correctly.
    pub accuracy: f64,
    /// Number of sequences classified correctly.
    pub n_correct: usize,
    /// Number of sequences in the batch.
    pub n_sequences: usize,
}

/// The result of [`Classifier::train_step`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainStats {
    /// Loss and accuracy on the batch, before the update.
    pub batch: BatchStats,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether clipping scaled the gradients.
    pub clipped: bool,
}

impl<E: Real> Classifier<E> {
    /// Builds a model with parameters drawn from `seed` (see [`InitConfig`]).
    pub fn new(config: ModelConfig, init: InitConfig, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        let mut init = Initializer::new(init, seed);
        let encoder = match (config.input, config.input_projection) {
            (InputKind::OneHot { vocab }, Some(d)) => Some(InputEncoder::Embedding(
                Embedding::init(&mut init, vocab, d),
            )),
            (InputKind::Dense { size }, Some(d)) => {
                Some(InputEncoder::Linear(Dense::init(&mut init, size, d)))
            }
            _ => None,
        };
        let mut layers = Vec::with_capacity(config.layers);
        let mut m = config.first_layer_input();
        for _ in 0..config.layers {
            layers.push(RecurrentLayer::init(
                config.layer,
                &mut init,
                m,
                config.hidden,
            ));
            m = config.hidden;
        }
        let head = Dense::init(&mut init, config.hidden, config.classes);
        Ok(Self {
            config,
            encoder,
            layers,
            head,
            workspace: Workspace::pooled(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn check_input(
        &self,
        operation: &'static str,
        input: &ModelInput<'_, E>,
    ) -> Result<(), ModelError> {
        let (n_steps, n_batch) = input.dim();
        if n_steps == 0 || n_batch == 0 {
            return Err(ModelError::InvalidInput {
                operation,
                reason: format!("a batch needs T ≥ 1 and B ≥ 1 (got T = {n_steps}, B = {n_batch})"),
            });
        }
        match (input, self.config.input) {
            (ModelInput::Dense(x), InputKind::Dense { size }) => {
                crate::error::check_shape(operation, "input", &[n_steps, n_batch, size], x.shape())
            }
            (ModelInput::OneHot(x), InputKind::OneHot { vocab }) => {
                crate::error::check_shape(operation, "input vocabulary", &[vocab], &[x.vocab()])
            }
            _ => Err(ModelError::InvalidInput {
                operation,
                reason: format!("the model expects {:?} input", self.config.input),
            }),
        }
    }

    fn encode(&self, input: &ModelInput<'_, E>) -> Result<Option<Array3<E>>, ModelError> {
        let no_scan: &dyn LinearScan<E> = &scan_core::Reference;
        Ok(match (&self.encoder, input) {
            (Some(InputEncoder::Embedding(e)), ModelInput::OneHot(x)) => {
                Some(e.forward_with(x, &self.workspace)?)
            }
            (Some(InputEncoder::Linear(d)), ModelInput::Dense(x)) => {
                Some(d.forward(no_scan, *x)?.0)
            }
            (None, ModelInput::OneHot(x)) => Some(x.to_dense()),
            _ => None,
        })
    }

    /// Runs the model, keeping everything the backward pass needs.
    pub fn forward(
        &self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
    ) -> Result<ForwardPass<E>, ModelError> {
        self.check_input("Classifier::forward", &input)?;
        self.workspace.next_generation();
        let encoded = self.encode(&input)?;
        let mut outputs: Vec<Array3<E>> = Vec::with_capacity(self.layers.len());
        let mut caches = Vec::with_capacity(self.layers.len());
        for (k, layer) in self.layers.iter().enumerate() {
            let layer_input = match (k, &encoded, &input) {
                (0, Some(e), _) => e.view(),
                (0, None, ModelInput::Dense(x)) => x.view(),
                (0, None, ModelInput::OneHot(_)) => {
                    unreachable!("one-hot inputs are always encoded")
                }
                _ => outputs[k - 1].view(),
            };
            let (y, cache) = layer.forward_with(scan, layer_input, &self.workspace)?;
            outputs.push(y);
            caches.push(cache);
        }
        let last = outputs.last().expect("at least one layer");
        let n_steps = last.dim().0;
        let logits = self.head.forward_2d(last.slice(s![n_steps - 1, .., ..]))?;
        Ok(ForwardPass {
            encoded,
            outputs,
            caches,
            logits,
        })
    }

    /// The logits `(B, classes)` only: each layer's cache and input are dropped as soon as
    /// the next layer has run, so inference needs far less memory than training.
    pub fn logits(
        &self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
    ) -> Result<Array2<E>, ModelError> {
        self.check_input("Classifier::logits", &input)?;
        self.workspace.next_generation();
        let ws = &self.workspace;
        let encoded = self.encode(&input)?;
        let mut current: Option<Array3<E>> = None;
        for (k, layer) in self.layers.iter().enumerate() {
            let layer_input = match (k, &encoded, &input, &current) {
                (0, Some(e), _, _) => e.view(),
                (0, None, ModelInput::Dense(x), _) => x.view(),
                (_, _, _, Some(c)) => c.view(),
                _ => unreachable!("one-hot inputs are always encoded"),
            };
            let (y, cache) = layer.forward_with(scan, layer_input, ws)?;
            give_back_cache(ws, cache);
            if let Some(previous) = current.replace(y) {
                ws.give_back(previous);
            }
        }
        if let Some(encoded) = encoded {
            ws.give_back(encoded);
        }
        let last = current.expect("at least one layer");
        let n_steps = last.dim().0;
        let logits = self.head.forward_2d(last.slice(s![n_steps - 1, .., ..]));
        ws.give_back(last);
        logits
    }

    /// Backpropagates ∂L/∂logits through a forward pass, accumulating every parameter's
    /// gradient. Returns ∂L/∂input for dense inputs without an encoder (else `None`).
    pub fn backward(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        pass: ForwardPass<E>,
        grad_logits: ndarray::ArrayView2<'_, E>,
    ) -> Result<Option<Array3<E>>, ModelError> {
        let ForwardPass {
            encoded,
            mut outputs,
            caches,
            logits,
        } = pass;
        crate::error::check_shape(
            "Classifier::backward",
            "grad_logits",
            logits.shape(),
            grad_logits.shape(),
        )?;
        let last = outputs.last().expect("at least one layer");
        let (n_steps, n_batch, n) = last.dim();
        let grad_last = self
            .head
            .backward_2d(last.slice(s![n_steps - 1, .., ..]), grad_logits)?;
        let ws = &self.workspace;
        let mut grad = ws.zeros((n_steps, n_batch, n));
        grad.slice_mut(s![n_steps - 1, .., ..]).assign(&grad_last);
        for (k, cache) in caches.into_iter().enumerate().rev() {
            let output = outputs.pop().expect("one output per layer");
            let layer_input = match (k, &encoded, &input) {
                (0, Some(e), _) => e.view(),
                (0, None, ModelInput::Dense(x)) => x.view(),
                (0, None, ModelInput::OneHot(_)) => {
                    unreachable!("one-hot inputs are always encoded")
                }
                _ => outputs[k - 1].view(),
            };
            let grad_input = self.layers[k].backward_with(
                scan,
                layer_input,
                output.view(),
                cache,
                grad.view(),
                ws,
            )?;
            ws.give_back(std::mem::replace(&mut grad, grad_input));
            ws.give_back(output);
        }
        match (&mut self.encoder, &input) {
            (Some(InputEncoder::Embedding(e)), ModelInput::OneHot(x)) => {
                e.backward(x, grad.view())?;
                ws.give_back(grad);
                if let Some(encoded) = encoded {
                    ws.give_back(encoded);
                }
                Ok(None)
            }
            (Some(InputEncoder::Linear(d)), ModelInput::Dense(x)) => {
                let no_scan: &dyn LinearScan<E> = &scan_core::Reference;
                let encoded = encoded.expect("dense inputs with a linear encoder are encoded");
                let grad_x = d.backward(no_scan, *x, encoded.view(), (), grad.view())?;
                Ok(Some(grad_x))
            }
            (None, ModelInput::Dense(_)) => Ok(Some(grad)),
            _ => Ok(None),
        }
    }

    /// Forward, loss and backward: accumulates the gradients of the mean cross-entropy.
    pub fn loss_and_grad(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
    ) -> Result<BatchStats, ModelError> {
        let pass = self.forward(scan, input)?;
        let loss = softmax_cross_entropy(pass.logits.view(), labels)?;
        self.backward(scan, input, pass, loss.grad_logits.view())?;
        Ok(batch_stats(loss.loss, loss.n_correct, labels.len()))
    }

    /// Loss and accuracy without gradients (uses [`Classifier::logits`]).
    pub fn evaluate(
        &self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
    ) -> Result<BatchStats, ModelError> {
        let logits = self.logits(scan, input)?;
        let loss = softmax_cross_entropy(logits.view(), labels)?;
        Ok(batch_stats(loss.loss, loss.n_correct, labels.len()))
    }

    /// One training iteration: zero the gradients, forward, loss, backward, Adam update.
    pub fn train_step(
        &mut self,
        optimizer: &mut Adam<E>,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
    ) -> Result<TrainStats, ModelError> {
        self.zero_grad();
        let batch = self.loss_and_grad(scan, input, labels)?;
        let report = optimizer.step(self)?;
        Ok(TrainStats {
            batch,
            grad_norm: report.grad_norm,
            clipped: report.clipped,
        })
    }
}

/// Gives the buffers of a forward cache back to `ws` (inference keeps no caches).
fn give_back_cache<E: Real>(ws: &Workspace<E>, cache: RecurrentCache<E>) {
    match cache {
        RecurrentCache::Gilr(c) => c.give_back(ws),
        RecurrentCache::GilrLstm(c) => c.give_back(ws),
        RecurrentCache::Qrnn(c) => c.give_back(ws),
        RecurrentCache::Sru(c) => c.give_back(ws),
        RecurrentCache::Lstm(c) => c.give_back(ws),
    }
}

fn batch_stats(loss: f64, n_correct: usize, n_sequences: usize) -> BatchStats {
    BatchStats {
        loss,
        accuracy: n_correct as f64 / n_sequences.max(1) as f64,
        n_correct,
        n_sequences,
    }
}

impl<E: Real> Parameters<E> for Classifier<E> {
    fn visit_params(&self, visitor: &mut ParamVisitor<'_, E>) {
        match &self.encoder {
            Some(InputEncoder::Embedding(e)) => visit_child(e, "encoder", visitor),
            Some(InputEncoder::Linear(d)) => visit_child(d, "encoder", visitor),
            None => {}
        }
        for (k, layer) in self.layers.iter().enumerate() {
            visit_child(layer, &format!("layers.{k}"), visitor);
        }
        visit_child(&self.head, "head", visitor);
    }

    fn visit_params_mut(&mut self, visitor: &mut ParamVisitorMut<'_, E>) {
        match &mut self.encoder {
            Some(InputEncoder::Embedding(e)) => visit_child_mut(e, "encoder", visitor),
            Some(InputEncoder::Linear(d)) => visit_child_mut(d, "encoder", visitor),
            None => {}
        }
        for (k, layer) in self.layers.iter_mut().enumerate() {
            visit_child_mut(layer, &format!("layers.{k}"), visitor);
        }
        visit_child_mut(&mut self.head, "head", visitor);
    }
}
