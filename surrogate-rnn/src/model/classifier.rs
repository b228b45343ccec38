//! The classifier: input encoder, recurrent layers, head on the last step.

use ndarray::{Array2, Array3, ArrayView2, CowArray, Ix2};
use scan_core::LinearScan;

use super::chunked::ModelState;
use super::RecurrentLayer;
use crate::backend::{Backend, CpuBackend};
use crate::init::Initializer;
use crate::layers::{recycle, Dense, Embedding, Layer, LayerCache, LayerState};
use crate::param::{visit_child, visit_child_mut, ParamVisitor, ParamVisitorMut};
use crate::workspace::Workspace;
use crate::{
    softmax_cross_entropy, Adam, InitConfig, InputKind, ModelConfig, ModelError, ModelInput,
    Parameters, Real,
};

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
/// The methods that take a `&dyn LinearScan` run on the [`CpuBackend`] with that scan and
/// with buffers from a pool the model keeps from one pass to the next (switching between
/// serial and parallel scans is that one argument); the `*_on` methods run on any
/// [`Backend`]. Fields are private: the configuration and the layers are consistent by
/// construction, and parameters change only through [`Parameters::visit_params_mut`].
#[derive(Clone, Debug)]
pub struct Classifier<E: Real> {
    config: ModelConfig,
    encoder: Option<InputEncoder<E>>,
    layers: Vec<RecurrentLayer<E>>,
    head: Dense<E>,
    /// Activation and gradient buffers kept from one pass to the next (a clone starts
    /// with an empty pool).
    workspace: Workspace<E>,
}

/// Everything a [`Classifier`] forward pass keeps for its backward pass, and what that
/// backward pass checks before using it: the model's layer count, the input kind and
/// `(T, B)`.
#[derive(Debug)]
pub struct ForwardPass<E, M = Array2<E>> {
    n_layers: usize,
    /// The configuration of the model that ran the pass.
    config: ModelConfig,
    dims: (usize, usize),
    encoded: Option<M>,
    outputs: Vec<M>,
    caches: Vec<LayerCache<M>>,
    head_cache: LayerCache<M>,
    logits: M,
    logits_host: Array2<E>,
}

impl<E: Real, M> ForwardPass<E, M> {
    /// The logits, `(B, classes)`.
    pub fn logits(&self) -> ArrayView2<'_, E> {
        self.logits_host.view()
    }

    /// `(T, B)` of the input.
    pub fn dims(&self) -> (usize, usize) {
        self.dims
    }
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

/// The result of [`Classifier::backward_on`].
#[derive(Debug)]
pub struct PassGrads<E, M = Array2<E>> {
    /// ∂L/∂input `(T, B, size)` for dense inputs (with or without a linear encoder).
    pub input: Option<Array3<E>>,
    /// ∂L/∂(incoming state), if the forward pass started from one.
    pub state: Option<ModelState<M>>,
}

/// What a backward pass starts from: ∂L/∂logits (if the loss reads the pass's logits)
/// and ∂L/∂(final state) (from the next chunk, if any).
type GradsIn<'a, 's, E, M> = (Option<ArrayView2<'a, E>>, Option<&'s ModelState<M>>);

/// A dense `(T, B, F)` input as `(T·B, F)` rows, copied only if not contiguous.
pub(crate) fn dense_rows<'a, E: Real>(
    x: ndarray::ArrayView3<'a, E>,
) -> Result<CowArray<'a, E, Ix2>, ModelError> {
    let (n_steps, n_batch, n_features) = x.dim();
    let shape = (n_steps * n_batch, n_features);
    let bad = |_| ModelError::InvalidInput {
        operation: "Classifier",
        reason: "the dense input cannot be seen as rows".into(),
    };
    if x.is_standard_layout() {
        Ok(CowArray::from(x.into_shape_with_order(shape).map_err(bad)?))
    } else {
        // A fallible allocation: a broadcast view can stand for more than memory holds.
        let mut owned = crate::backend::host::try_zeros(shape.0, shape.1)?;
        owned
            .view_mut()
            .into_shape_with_order((n_steps, n_batch, n_features))
            .map_err(bad)?
            .assign(&x);
        Ok(CowArray::from(owned))
    }
}

impl<E: Real> Classifier<E> {
    /// Builds a model with parameters drawn from `seed` (see [`InitConfig`]).
    pub fn new(config: ModelConfig, init: InitConfig, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        init.validate()?;
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

    /// The input encoder, if the configuration has one.
    pub fn encoder(&self) -> Option<&InputEncoder<E>> {
        self.encoder.as_ref()
    }

    /// The recurrent layers, input first.
    pub fn layers(&self) -> &[RecurrentLayer<E>] {
        &self.layers
    }

    /// The classification head, `hidden → classes`.
    pub fn head(&self) -> &Dense<E> {
        &self.head
    }

    /// The CPU backend on `scan` with this model's buffer pool.
    pub(crate) fn cpu<'a>(&'a self, scan: &'a dyn LinearScan<E>) -> CpuBackend<'a, E> {
        CpuBackend::pooled(scan, &self.workspace)
    }

    /// Checks an input against the configuration, returning `(T, B)`.
    pub(crate) fn check_input(
        &self,
        operation: &'static str,
        input: &ModelInput<'_, E>,
    ) -> Result<(usize, usize), ModelError> {
        let (n_steps, n_batch) = input.dim();
        if n_steps == 0 || n_batch == 0 {
            return Err(ModelError::InvalidInput {
                operation,
                reason: format!("a batch needs T ≥ 1 and B ≥ 1 (got T = {n_steps}, B = {n_batch})"),
            });
        }
        match (input, self.config.input) {
            (ModelInput::Dense(x), InputKind::Dense { size }) => {
                crate::error::check_shape(operation, "input", &[n_steps, n_batch, size], x.shape())?
            }
            (ModelInput::OneHot(x), InputKind::OneHot { vocab }) => {
                crate::error::check_shape(operation, "input vocabulary", &[vocab], &[x.vocab()])?
            }
            _ => {
                return Err(ModelError::InvalidInput {
                    operation,
                    reason: format!("the model expects {:?} input", self.config.input),
                })
            }
        }
        Ok((n_steps, n_batch))
    }

    /// The first recurrent layer's input: the encoder's output, or `None` for a dense
    /// input read directly (see [`Classifier::raw_rows`]).
    fn encode<B: Backend<E>>(
        &self,
        b: &B,
        input: &ModelInput<'_, E>,
        n_batch: usize,
    ) -> Result<Option<B::Matrix>, ModelError> {
        match (&self.encoder, input) {
            (Some(InputEncoder::Embedding(e)), ModelInput::OneHot(x)) => Ok(Some(e.forward(b, x)?)),
            (Some(InputEncoder::Linear(d)), ModelInput::Dense(x)) => {
                let rows = dense_rows(*x)?;
                let out = d.forward(b, b.host(rows.view()), n_batch, None)?;
                Ok(Some(out.output))
            }
            (None, ModelInput::Dense(_)) => Ok(None),
            _ => Err(mismatched_input()),
        }
    }

    /// Runs the model from `state` (zeros when `None`) on any backend, keeping what the
    /// backward pass needs; returns the pass and the state after the last step.
    #[allow(clippy::type_complexity)]
    pub fn forward_on<B: Backend<E>>(
        &self,
        b: &B,
        input: ModelInput<'_, E>,
        state: Option<&ModelState<B::Matrix>>,
    ) -> Result<(ForwardPass<E, B::Matrix>, ModelState<B::Matrix>), ModelError> {
        let (n_steps, n_batch) = self.check_input("Classifier::forward", &input)?;
        self.check_state(b, "Classifier::forward", state, n_batch)?;
        let encoded = self.encode(b, &input, n_batch)?;
        let raw = match (&encoded, input) {
            (None, ModelInput::Dense(x)) => Some(dense_rows(x)?),
            _ => None,
        };
        let mut outputs: Vec<B::Matrix> = Vec::with_capacity(self.layers.len());
        let mut caches = Vec::with_capacity(self.layers.len());
        let mut finals = Vec::with_capacity(self.layers.len());
        for (k, layer) in self.layers.iter().enumerate() {
            let layer_input = match (k, &encoded, &raw) {
                (0, Some(e), _) => b.view(e),
                (0, None, Some(r)) => b.host(r.view()),
                (0, None, None) => return Err(mismatched_input()),
                _ => b.view(&outputs[k - 1]),
            };
            let initial = state.map(|s| &s.layers[k]);
            let out = layer.forward(b, layer_input, n_batch, initial)?;
            outputs.push(out.output);
            caches.push(out.cache);
            finals.push(out.state);
        }
        let (logits, head_cache) = self.head_forward(b, outputs.last(), n_steps, n_batch)?;
        let logits_host = b.download(b.view(&logits));
        let pass = ForwardPass {
            n_layers: self.layers.len(),
            config: self.config,
            dims: (n_steps, n_batch),
            encoded,
            outputs,
            caches,
            head_cache,
            logits,
            logits_host,
        };
        Ok((
            pass,
            ModelState {
                layers: finals,
                n_batch,
            },
        ))
    }

    /// The head on the last step of the last layer's output.
    fn head_forward<B: Backend<E>>(
        &self,
        b: &B,
        last: Option<&B::Matrix>,
        n_steps: usize,
        n_batch: usize,
    ) -> Result<(B::Matrix, LayerCache<B::Matrix>), ModelError> {
        let last = last.ok_or_else(no_layers)?;
        let last_step = b.rows(b.view(last), (n_steps - 1) * n_batch, n_batch)?;
        let out = self.head.forward(b, last_step, n_batch, None)?;
        Ok((out.output, out.cache))
    }

    /// Checks that a carried state fits this model and batch.
    pub(crate) fn check_state<M, B: Backend<E, Matrix = M>>(
        &self,
        b: &B,
        operation: &'static str,
        state: Option<&ModelState<M>>,
        n_batch: usize,
    ) -> Result<(), ModelError> {
        let Some(state) = state else { return Ok(()) };
        crate::error::check_shape(
            operation,
            "state layers",
            &[self.layers.len()],
            &[state.layers.len()],
        )?;
        crate::error::check_shape(operation, "state batch", &[n_batch], &[state.n_batch])?;
        for (layer, s) in self.layers.iter().zip(&state.layers) {
            crate::layers::check_state(b, operation, s, &layer.state_dims(n_batch))?;
        }
        Ok(())
    }

    /// Backpropagates through a forward pass on any backend: `grad_logits` (if the loss
    /// reads this pass's logits) and `grad_state`, the gradient of the pass's final state
    /// (from the next chunk, if any). Accumulates every parameter's gradient.
    pub fn backward_on<B: Backend<E>>(
        &mut self,
        b: &B,
        input: ModelInput<'_, E>,
        pass: ForwardPass<E, B::Matrix>,
        grad_logits: Option<ArrayView2<'_, E>>,
        grad_state: Option<&ModelState<B::Matrix>>,
    ) -> Result<PassGrads<E, B::Matrix>, ModelError> {
        self.backward_pass(b, input, pass, (grad_logits, grad_state), true)
    }

    /// [`Classifier::backward_on`] for a caller that needs no ∂L/∂input (training): the
    /// same parameter gradients without the products that form the input's gradient.
    /// Returns ∂L/∂(incoming state) if the pass started from one.
    pub fn backward_params_on<B: Backend<E>>(
        &mut self,
        b: &B,
        input: ModelInput<'_, E>,
        pass: ForwardPass<E, B::Matrix>,
        grad_logits: Option<ArrayView2<'_, E>>,
        grad_state: Option<&ModelState<B::Matrix>>,
    ) -> Result<Option<ModelState<B::Matrix>>, ModelError> {
        let grads = self.backward_pass(b, input, pass, (grad_logits, grad_state), false)?;
        Ok(grads.state)
    }

    /// The backward pass; ∂L/∂input (for dense inputs) only `with_input`.
    fn backward_pass<B: Backend<E>>(
        &mut self,
        b: &B,
        input: ModelInput<'_, E>,
        pass: ForwardPass<E, B::Matrix>,
        (grad_logits, grad_state): GradsIn<'_, '_, E, B::Matrix>,
        with_input: bool,
    ) -> Result<PassGrads<E, B::Matrix>, ModelError> {
        const OP: &str = "Classifier::backward";
        let dims = self.check_input(OP, &input)?;
        self.check_pass(&pass, dims)?;
        self.check_state(b, OP, grad_state, dims.1)?;
        let (n_steps, n_batch) = dims;
        let ForwardPass {
            encoded,
            mut outputs,
            caches,
            head_cache,
            logits,
            ..
        } = pass;
        let last = outputs.last().ok_or_else(no_layers)?;
        let n = b.matrix_dims(last).1;
        let mut grad = b.zeros(n_steps * n_batch, n)?;
        let last_rows = (n_steps - 1) * n_batch;
        match grad_logits {
            Some(grad_logits) => {
                crate::error::check_shape(
                    OP,
                    "grad_logits",
                    &[n_batch, self.config.classes],
                    grad_logits.shape(),
                )?;
                let last_step = b.rows(b.view(last), last_rows, n_batch)?;
                let grad_head = self.head.backward(
                    b,
                    last_step,
                    b.view(&logits),
                    head_cache,
                    b.shorten(&b.host(grad_logits)),
                    None,
                )?;
                b.copy(
                    b.view(&grad_head.input),
                    b.rows_mut(b.view_mut(&mut grad), last_rows, n_batch)?,
                )?;
                b.recycle(grad_head.input);
            }
            None => head_cache.recycle(b),
        }
        b.recycle(logits);
        let raw = match (&encoded, input) {
            (None, ModelInput::Dense(x)) => Some(dense_rows(x)?),
            _ => None,
        };
        let mut grad_initial = Vec::with_capacity(self.layers.len());
        for (k, cache) in caches.into_iter().enumerate().rev() {
            let output = outputs.pop().ok_or_else(no_layers)?;
            let layer_input = match (k, &encoded, &raw) {
                (0, Some(e), _) => b.view(e),
                (0, None, Some(r)) => b.host(r.view()),
                (0, None, None) => return Err(mismatched_input()),
                _ => b.view(&outputs[k - 1]),
            };
            let grad_final = grad_state.map(|s| &s.layers[k]);
            let (output_view, grad_view) = (b.view(&output), b.view(&grad));
            let layer = &mut self.layers[k];
            if k == 0 && encoded.is_none() && !with_input {
                // The first layer reads the data: no ∂L/∂input to form.
                let initial = layer.backward_params(
                    b,
                    layer_input,
                    output_view,
                    cache,
                    grad_view,
                    grad_final,
                )?;
                b.recycle(output);
                grad_initial.push(initial);
                continue;
            }
            let grads =
                layer.backward(b, layer_input, output_view, cache, grad_view, grad_final)?;
            b.recycle(std::mem::replace(&mut grad, grads.input));
            b.recycle(output);
            grad_initial.push(grads.initial);
        }
        grad_initial.reverse();
        let state = grad_initial
            .into_iter()
            .collect::<Option<Vec<LayerState<B::Matrix>>>>()
            .map(|layers| ModelState { layers, n_batch });
        let input_grad = match (&mut self.encoder, input) {
            (Some(InputEncoder::Embedding(e)), ModelInput::OneHot(x)) => {
                e.backward(b, x, b.view(&grad))?;
                None
            }
            (Some(InputEncoder::Linear(d)), ModelInput::Dense(x)) => {
                let encoded = encoded.as_ref().ok_or_else(mismatched_input)?;
                let rows = dense_rows(x)?;
                let cache = LayerCache::stateless("Dense", (n_steps, n_batch));
                let (x, y, dy) = (b.host(rows.view()), b.view(encoded), b.view(&grad));
                if with_input {
                    let grads = d.backward(b, x, y, cache, dy, None)?;
                    let grad_x = to_3d(b.download(b.view(&grads.input)), n_steps, n_batch)?;
                    b.recycle(grads.input);
                    Some(grad_x)
                } else {
                    d.backward_params(b, x, y, cache, dy, None)?;
                    None
                }
            }
            // Without `with_input`, `grad` is still ∂L/∂(first layer's output).
            (None, ModelInput::Dense(_)) if with_input => {
                Some(to_3d(b.download(b.view(&grad)), n_steps, n_batch)?)
            }
            (None, ModelInput::Dense(_)) => None,
            _ => return Err(mismatched_input()),
        };
        b.recycle(grad);
        recycle(b, encoded);
        Ok(PassGrads {
            input: input_grad,
            state,
        })
    }

    /// Checks that `pass` comes from this model and this input.
    fn check_pass<M>(
        &self,
        pass: &ForwardPass<E, M>,
        dims: (usize, usize),
    ) -> Result<(), ModelError> {
        const OP: &str = "Classifier::backward";
        crate::error::check_shape(
            OP,
            "forward pass layers",
            &[self.layers.len()],
            &[pass.n_layers],
        )?;
        crate::error::check_shape(
            OP,
            "forward pass (T, B)",
            &[dims.0, dims.1],
            &[pass.dims.0, pass.dims.1],
        )?;
        if pass.config != self.config
            || pass.caches.len() != pass.n_layers
            || pass.outputs.len() != pass.n_layers
        {
            return Err(ModelError::InvalidInput {
                operation: OP,
                reason: format!(
                    "the forward pass was run by a model of another configuration ({:?}), \
                     not this one ({:?})",
                    pass.config, self.config
                ),
            });
        }
        Ok(())
    }

    /// Runs the model, keeping everything the backward pass needs.
    pub fn forward(
        &self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
    ) -> Result<ForwardPass<E>, ModelError> {
        self.workspace.next_generation();
        crate::backend::on_cpu_pool(|| Ok(self.forward_on(&self.cpu(scan), input, None)?.0))
    }

    /// The logits `(B, classes)` only: each layer's cache and input are dropped as soon as
    /// the next layer has run, so inference needs far less memory than training.
    pub fn logits(
        &self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
    ) -> Result<Array2<E>, ModelError> {
        self.workspace.next_generation();
        let b = self.cpu(scan);
        let (logits, state) = crate::backend::on_cpu_pool(|| self.infer_on(&b, input, None))?;
        recycle(
            &b,
            state.layers.into_iter().flat_map(LayerState::into_parts),
        );
        Ok(logits)
    }

    /// Inference from `state`: the logits of the last step and the final state, keeping
    /// no caches (two layers' activations at a time).
    #[allow(clippy::type_complexity)]
    pub(crate) fn infer_on<B: Backend<E>>(
        &self,
        b: &B,
        input: ModelInput<'_, E>,
        state: Option<&ModelState<B::Matrix>>,
    ) -> Result<(Array2<E>, ModelState<B::Matrix>), ModelError> {
        let (n_steps, n_batch) = self.check_input("Classifier::logits", &input)?;
        self.check_state(b, "Classifier::logits", state, n_batch)?;
        let encoded = self.encode(b, &input, n_batch)?;
        let raw = match (&encoded, input) {
            (None, ModelInput::Dense(x)) => Some(dense_rows(x)?),
            _ => None,
        };
        let mut current: Option<B::Matrix> = None;
        let mut finals = Vec::with_capacity(self.layers.len());
        for (k, layer) in self.layers.iter().enumerate() {
            let layer_input = match (&current, &encoded, &raw) {
                (Some(c), _, _) => b.view(c),
                (None, Some(e), _) => b.view(e),
                (None, None, Some(r)) => b.host(r.view()),
                (None, None, None) => return Err(mismatched_input()),
            };
            let initial = state.map(|s| &s.layers[k]);
            let out = layer.forward(b, layer_input, n_batch, initial)?;
            out.cache.recycle(b);
            finals.push(out.state);
            if let Some(previous) = current.replace(out.output) {
                b.recycle(previous);
            }
        }
        recycle(b, encoded);
        let (logits, head_cache) = self.head_forward(b, current.as_ref(), n_steps, n_batch)?;
        head_cache.recycle(b);
        recycle(b, current);
        let host = b.download(b.view(&logits));
        b.recycle(logits);
        Ok((
            host,
            ModelState {
                layers: finals,
                n_batch,
            },
        ))
    }

    /// Backpropagates ∂L/∂logits through a forward pass, accumulating every parameter's
    /// gradient. Returns ∂L/∂input for dense inputs (else `None`).
    ///
    /// `input` must be the input the pass ran on, and the parameters unchanged since:
    /// a pass from a model of another configuration, or an input of another shape or
    /// kind, is an error, but another input of the same shape cannot be told apart and
    /// gives the gradients of a pass that never ran.
    pub fn backward(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        pass: ForwardPass<E>,
        grad_logits: ArrayView2<'_, E>,
    ) -> Result<Option<Array3<E>>, ModelError> {
        let grads = self.on_pooled_cpu(scan, |model, b| {
            model.backward_on(b, input, pass, Some(grad_logits), None)
        })?;
        Ok(grads.input)
    }

    /// Runs `work` on this model's pooled `CpuBackend`, on the backend's pool.
    fn on_pooled_cpu<R: Send>(
        &mut self,
        scan: &dyn LinearScan<E>,
        work: impl FnOnce(&mut Self, &CpuBackend<'_, E>) -> Result<R, ModelError> + Send,
    ) -> Result<R, ModelError> {
        let workspace = std::mem::take(&mut self.workspace);
        let result = crate::backend::on_cpu_pool(|| {
            let b = CpuBackend::pooled(scan, &workspace);
            work(self, &b)
        });
        self.workspace = workspace;
        result
    }

    /// Forward, loss and backward: accumulates the gradients of the mean cross-entropy.
    pub fn loss_and_grad(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
    ) -> Result<BatchStats, ModelError> {
        let pass = self.forward(scan, input)?;
        let loss = softmax_cross_entropy(pass.logits(), labels)?;
        let grad_logits = Some(loss.grad_logits.view());
        self.on_pooled_cpu(scan, |model, b| {
            model.backward_params_on(b, input, pass, grad_logits, None)
        })?;
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

    /// Runs `work` with this model and the CPU backend on `scan` whose buffers come from
    /// the model's pool (kept from one pass to the next), for callers that drive
    /// [`Classifier::forward_on`] and [`Classifier::backward_on`] themselves, e.g. on a
    /// backend that wraps this one.
    pub fn with_pooled_cpu<R>(
        &mut self,
        scan: &dyn LinearScan<E>,
        work: impl FnOnce(&mut Self, CpuBackend<'_, E>) -> R,
    ) -> R {
        let workspace = self.take_workspace();
        workspace.next_generation();
        let result = work(self, CpuBackend::pooled(scan, &workspace));
        self.restore_workspace(workspace);
        result
    }

    /// The pool, taken out for a backward pass that borrows `self` mutably.
    pub(crate) fn take_workspace(&mut self) -> Workspace<E> {
        std::mem::take(&mut self.workspace)
    }

    /// Puts the pool back after [`Classifier::take_workspace`].
    pub(crate) fn restore_workspace(&mut self, workspace: Workspace<E>) {
        self.workspace = workspace;
    }

    /// Starts a new pool generation (once per pass).
    pub(crate) fn next_generation(&self) {
        self.workspace.next_generation();
    }
}

fn mismatched_input() -> ModelError {
    ModelError::InvalidInput {
        operation: "Classifier",
        reason: "the input does not match the model's encoder".into(),
    }
}

fn no_layers() -> ModelError {
    ModelError::InvalidConfig {
        reason: "the model has no recurrent layers".into(),
    }
}

fn to_3d<E>(rows: Array2<E>, n_steps: usize, n_batch: usize) -> Result<Array3<E>, ModelError> {
    let n = rows.ncols();
    rows.into_shape_with_order((n_steps, n_batch, n))
        .map_err(|_| ModelError::InvalidInput {
            operation: "Classifier::backward",
            reason: "the input gradient has the wrong number of rows".into(),
        })
}

pub(crate) fn batch_stats(loss: f64, n_correct: usize, n_sequences: usize) -> BatchStats {
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
