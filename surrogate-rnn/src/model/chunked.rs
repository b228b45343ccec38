//! Running a sequence in chunks: carried state, chunked backpropagation with
//! recomputation, truncated BPTT, and streaming inference.

use ndarray::{s, Array2, ArrayView2, ArrayView3};
use scan_core::LinearScan;

use super::classifier::{batch_stats, PassGrads};
use super::{BatchStats, Classifier, ForwardPass, TrainStats};
use crate::backend::{Backend, CpuBackend};
use crate::layers::{recycle, LayerState, OneHotSequence};
use crate::{softmax_cross_entropy, Adam, ModelError, ModelInput, Parameters, Real};

/// The recurrent state of every layer of a [`Classifier`] at a chunk boundary (or the
/// gradient of one), for a batch of `n_batch` sequences.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelState<M> {
    pub(crate) layers: Vec<LayerState<M>>,
    pub(crate) n_batch: usize,
}

impl<M> ModelState<M> {
    /// A state from one [`LayerState`] per recurrent layer (e.g. received from another
    /// process); checked against the model when used.
    pub fn new(layers: Vec<LayerState<M>>, n_batch: usize) -> Self {
        Self { layers, n_batch }
    }

    /// The per-layer states, by value.
    pub fn into_layers(self) -> Vec<LayerState<M>> {
        self.layers
    }

    /// One state per recurrent layer, input first.
    pub fn layers(&self) -> &[LayerState<M>] {
        &self.layers
    }

    /// The batch size the state belongs to.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    fn recycle<E: Real, B: Backend<E, Matrix = M>>(self, backend: &B) {
        recycle(
            backend,
            self.layers.into_iter().flat_map(LayerState::into_parts),
        );
    }
}

/// How [`Classifier::loss_and_grad_chunked`] backpropagates across chunk boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backprop {
    /// Exact gradients: the gradient of each chunk's incoming state is carried into the
    /// previous chunk (full backpropagation through time, in O(chunk) memory).
    Full,
    /// Truncated BPTT: gradients stop at chunk boundaries. The forward pass (and the
    /// loss) is unchanged; with the loss on the last step only, only the last chunk
    /// receives gradients.
    Truncated,
}

/// Steps `start..start + len` of an input: a view for dense inputs, a copy for one-hot.
enum Chunk<'a, E> {
    Dense(ArrayView3<'a, E>),
    OneHot(OneHotSequence<E>),
}

impl<'a, E: Real> Chunk<'a, E> {
    fn of(input: ModelInput<'a, E>, start: usize, len: usize) -> Result<Self, ModelError> {
        match input {
            ModelInput::Dense(x) => {
                if start.checked_add(len).is_none_or(|end| end > x.dim().0) {
                    return Err(ModelError::InvalidInput {
                        operation: "Classifier::chunk",
                        reason: format!("steps {start}..{start}+{len} of {}", x.dim().0),
                    });
                }
                Ok(Self::Dense(x.slice_move(s![start..start + len, .., ..])))
            }
            ModelInput::OneHot(x) => Ok(Self::OneHot(x.steps(start, len)?)),
        }
    }

    fn input(&self) -> ModelInput<'_, E> {
        match self {
            Self::Dense(x) => ModelInput::Dense(x.view()),
            Self::OneHot(x) => ModelInput::OneHot(x),
        }
    }
}

/// The chunk boundaries `(start, len)` of `n_steps` steps in chunks of `chunk_len`.
fn chunks(
    operation: &'static str,
    n_steps: usize,
    chunk_len: usize,
) -> Result<Vec<(usize, usize)>, ModelError> {
    if chunk_len == 0 {
        return Err(ModelError::InvalidInput {
            operation,
            reason: "the chunk length must be ≥ 1".into(),
        });
    }
    Ok((0..n_steps)
        .step_by(chunk_len)
        .map(|start| (start, chunk_len.min(n_steps - start)))
        .collect())
}

/// Streaming inference: feed a sequence chunk by chunk (in order); the model keeps only
/// the state between chunks, so memory does not grow with the sequence length.
#[derive(Debug)]
pub struct Stream<'m, E: Real> {
    model: &'m Classifier<E>,
    state: Option<ModelState<Array2<E>>>,
    logits: Option<Array2<E>>,
    n_steps: usize,
}

impl<E: Real> Stream<'_, E> {
    /// Runs the next chunk `(T_chunk, B)` from the state the previous chunks left.
    pub fn feed(
        &mut self,
        scan: &dyn LinearScan<E>,
        chunk: ModelInput<'_, E>,
    ) -> Result<(), ModelError> {
        self.model.next_generation();
        let backend = self.model.cpu(scan);
        let model = self.model;
        let previous = self.state.as_ref();
        let (logits, state) =
            crate::backend::on_cpu_pool(|| model.infer_on(&backend, chunk, previous))?;
        if let Some(previous) = self.state.replace(state) {
            previous.recycle(&backend);
        }
        self.logits = Some(logits);
        self.n_steps += chunk.dim().0;
        Ok(())
    }

    /// The logits after the last step fed so far, `(B, classes)`.
    pub fn logits(&self) -> Option<ArrayView2<'_, E>> {
        self.logits.as_ref().map(|l| l.view())
    }

    /// The number of steps fed so far.
    pub fn n_steps(&self) -> usize {
        self.n_steps
    }

    /// The state after the last step fed so far.
    pub fn state(&self) -> Option<&ModelState<Array2<E>>> {
        self.state.as_ref()
    }
}

impl<E: Real> Classifier<E> {
    /// A [`Stream`] for feeding sequences chunk by chunk.
    pub fn stream(&self) -> Stream<'_, E> {
        Stream {
            model: self,
            state: None,
            logits: None,
            n_steps: 0,
        }
    }

    /// The logits `(B, classes)` of `input`, run in chunks of `chunk_len` steps with the
    /// state carried across: the same numbers as [`Classifier::logits`] (to rounding), with
    /// activation memory proportional to `chunk_len·B` instead of `T·B`.
    pub fn predict_streaming(
        &self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        chunk_len: usize,
    ) -> Result<Array2<E>, ModelError> {
        let (n_steps, _) = self.check_input("Classifier::predict_streaming", &input)?;
        let mut stream = self.stream();
        for (start, len) in chunks("Classifier::predict_streaming", n_steps, chunk_len)? {
            stream.feed(scan, Chunk::of(input, start, len)?.input())?;
        }
        let Stream { logits, state, .. } = stream;
        if let Some(state) = state {
            state.recycle(&self.cpu(scan));
        }
        logits.ok_or_else(|| ModelError::InvalidInput {
            operation: "Classifier::predict_streaming",
            reason: "the input has no steps".into(),
        })
    }

    /// Loss and accuracy from [`Classifier::predict_streaming`].
    pub fn evaluate_streaming(
        &self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
        chunk_len: usize,
    ) -> Result<BatchStats, ModelError> {
        let logits = self.predict_streaming(scan, input, chunk_len)?;
        let loss = softmax_cross_entropy(logits.view(), labels)?;
        Ok(batch_stats(loss.loss, loss.n_correct, labels.len()))
    }

    /// Runs one chunk from `state` (zeros when `None`), keeping what
    /// [`Classifier::backward_chunk`] needs; returns the pass and the state after the
    /// chunk's last step.
    pub fn forward_chunk(
        &self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        state: Option<&ModelState<Array2<E>>>,
    ) -> Result<(ForwardPass<E>, ModelState<Array2<E>>), ModelError> {
        self.next_generation();
        crate::backend::on_cpu_pool(|| self.forward_on(&self.cpu(scan), input, state))
    }

    /// Backpropagates through a chunk: `grad_logits` if the loss reads this chunk's
    /// logits, `grad_state` the gradient of the chunk's final state (what the next
    /// chunk's backward returned). Returns ∂L/∂(incoming state) if the chunk started from
    /// one, and ∂L/∂input for dense inputs without an encoder.
    pub fn backward_chunk(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        pass: ForwardPass<E>,
        grad_logits: Option<ArrayView2<'_, E>>,
        grad_state: Option<&ModelState<Array2<E>>>,
    ) -> Result<PassGrads<E>, ModelError> {
        let workspace = self.take_workspace();
        let result = crate::backend::on_cpu_pool(|| {
            let backend = CpuBackend::pooled(scan, &workspace);
            self.backward_on(&backend, input, pass, grad_logits, grad_state)
        });
        self.restore_workspace(workspace);
        result
    }

    /// The gradients of the mean cross-entropy, computed chunk by chunk in memory that
    /// does not grow with `T` beyond one state per chunk: a first pass keeps only the
    /// states at chunk boundaries; then, from the last chunk to the first, each chunk's
    /// forward pass is recomputed from its boundary state just before its backward pass.
    /// With [`Backprop::Full`] the gradients equal [`Classifier::loss_and_grad`]'s (to
    /// rounding); with [`Backprop::Truncated`] they stop at chunk boundaries.
    pub fn loss_and_grad_chunked(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
        chunk_len: usize,
        mode: Backprop,
    ) -> Result<BatchStats, ModelError> {
        const OP: &str = "Classifier::loss_and_grad_chunked";
        let (n_steps, _) = self.check_input(OP, &input)?;
        let bounds = chunks(OP, n_steps, chunk_len)?;
        let workspace = self.take_workspace();
        let result = crate::backend::on_cpu_pool(|| {
            self.backprop_chunks(
                &CpuBackend::pooled(scan, &workspace),
                input,
                labels,
                &bounds,
                mode,
            )
        });
        self.restore_workspace(workspace);
        result
    }

    /// [`Classifier::train_step`] with the gradients of
    /// [`Classifier::loss_and_grad_chunked`]: zero the gradients, chunked forward and
    /// backward (`Backprop::Full`: the same update as `train_step`, to rounding, in
    /// O(chunk) activation memory; `Backprop::Truncated`: truncated BPTT), Adam update.
    pub fn train_step_chunked(
        &mut self,
        optimizer: &mut Adam<E>,
        scan: &dyn LinearScan<E>,
        input: ModelInput<'_, E>,
        labels: &[usize],
        chunk_len: usize,
        mode: Backprop,
    ) -> Result<TrainStats, ModelError> {
        self.zero_grad();
        let batch = self.loss_and_grad_chunked(scan, input, labels, chunk_len, mode)?;
        let report = optimizer.step(self)?;
        Ok(TrainStats {
            batch,
            grad_norm: report.grad_norm,
            clipped: report.clipped,
        })
    }

    fn backprop_chunks<B: Backend<E>>(
        &mut self,
        b: &B,
        input: ModelInput<'_, E>,
        labels: &[usize],
        bounds: &[(usize, usize)],
        mode: Backprop,
    ) -> Result<BatchStats, ModelError> {
        let Some((&(last_start, last_len), earlier)) = bounds.split_last() else {
            return Err(ModelError::InvalidInput {
                operation: "Classifier::loss_and_grad_chunked",
                reason: "the input has no steps".into(),
            });
        };
        // The state entering each chunk.
        let mut states: Vec<Option<ModelState<B::Matrix>>> = vec![None];
        for &(start, len) in earlier {
            let chunk = Chunk::of(input, start, len)?;
            let (_, state) =
                self.infer_on(b, chunk.input(), states.last().and_then(Option::as_ref))?;
            states.push(Some(state));
        }
        let chunk = Chunk::of(input, last_start, last_len)?;
        let initial = states.pop().flatten();
        let (pass, final_state) = self.forward_on(b, chunk.input(), initial.as_ref())?;
        final_state.recycle(b);
        let loss = softmax_cross_entropy(pass.logits(), labels)?;
        let grad_logits = Some(loss.grad_logits.view());
        let mut carried = self.backward_params_on(b, chunk.input(), pass, grad_logits, None)?;
        if let Some(initial) = initial {
            initial.recycle(b);
        }
        if mode == Backprop::Full {
            for &(start, len) in earlier.iter().rev() {
                let chunk = Chunk::of(input, start, len)?;
                let initial = states.pop().flatten();
                let (pass, final_state) = self.forward_on(b, chunk.input(), initial.as_ref())?;
                final_state.recycle(b);
                let state =
                    self.backward_params_on(b, chunk.input(), pass, None, carried.as_ref())?;
                if let Some(previous) = std::mem::replace(&mut carried, state) {
                    previous.recycle(b);
                }
                if let Some(initial) = initial {
                    initial.recycle(b);
                }
            }
        }
        if let Some(carried) = carried {
            carried.recycle(b);
        }
        Ok(batch_stats(loss.loss, loss.n_correct, labels.len()))
    }
}
