//! The part every recurrent layer shares: checking a call, taking the incoming state and
//! the cache apart, and putting the results together; each layer supplies only its
//! equations ([`Recurrence::run`], [`Recurrence::run_backward`]).

use super::primitives::ScanGrad;
use super::{check_backward, check_forward, copy_state, LayerCache, LayerOutput, LayerState};
use crate::backend::{Backend, ScanEnds};
use crate::{ModelError, Parameters, Real};

/// What every layer file uses: the primitives, the recurrence contract, the backend and
/// the parameter types.
pub(crate) mod prelude {
    pub(crate) use super::super::primitives::*;
    pub(crate) use super::super::{
        copy_matrix, last_step, recycle, rows_of_each, rows_of_each_ref,
    };
    pub(crate) use super::{ran, Back, BackRun, Forward, Grads, Recurrence, Run};
    pub(crate) use crate::backend::{Backend, Candidate, Transpose};
    pub(crate) use crate::init::Initializer;
    pub(crate) use crate::param::{ParamVisitor, ParamVisitorMut};
    pub(crate) use crate::{ModelError, Param, Parameters, Real};
}

/// The result of [`Recurrence::run`].
pub(crate) type Forward<E, B> = Result<Ran<<B as Backend<E>>::Matrix>, ModelError>;

/// The result of [`Recurrence::run_backward`].
pub(crate) type Back<E, B> = Result<Grads<<B as Backend<E>>::Matrix>, ModelError>;

/// A checked forward call: the input `(T·B, m)` and the incoming state's parts.
pub(crate) struct Run<'a, E: Real, B: Backend<E>> {
    pub(crate) x: B::View<'a>,
    pub(crate) n_steps: usize,
    pub(crate) n_batch: usize,
    initial: Option<Vec<B::View<'a>>>,
}

/// A checked backward call: the forward call's input and output, ∂L/∂output, the cached
/// buffers, the incoming state, ∂L/∂(final state) and whether ∂L/∂input is wanted.
pub(crate) struct BackRun<'a, E: Real, B: Backend<E>> {
    pub(crate) x: B::View<'a>,
    pub(crate) h: B::View<'a>,
    pub(crate) grad_h: B::View<'a>,
    pub(crate) n_steps: usize,
    pub(crate) n_batch: usize,
    pub(crate) buffers: Vec<B::Matrix>,
    initial: Option<Vec<B::View<'a>>>,
    grad_final: Option<Vec<B::View<'a>>>,
    want_input: bool,
}

/// Part `k` of an optional list of state views.
fn part<V: Copy>(parts: &Option<Vec<V>>, k: usize) -> Option<V> {
    parts.as_ref().and_then(|p| p.get(k).copied())
}

impl<'a, E: Real, B: Backend<E>> Run<'a, E, B> {
    /// `T·B`.
    pub(crate) fn rows(&self) -> usize {
        self.n_steps * self.n_batch
    }

    /// Part `k` of the incoming state (`None`: zeros).
    pub(crate) fn initial(&self, k: usize) -> Option<B::View<'a>> {
        part(&self.initial, k)
    }

    /// Part `k` of the state that entered this part of the sequence: `entered` where it
    /// came from an earlier part ([`Backend::scan_part`], [`Backend::carry`]), else the
    /// incoming state.
    pub(crate) fn entering<'s>(
        &'s self,
        b: &B,
        entered: &'s Option<B::Matrix>,
        k: usize,
    ) -> Option<B::View<'s>> {
        match entered {
            Some(matrix) => Some(b.view(matrix)),
            None => self
                .initial
                .as_ref()
                .and_then(|p| p.get(k))
                .map(|v| b.shorten(v)),
        }
    }
}

impl<'a, E: Real, B: Backend<E>> BackRun<'a, E, B> {
    /// `T·B`.
    pub(crate) fn rows(&self) -> usize {
        self.n_steps * self.n_batch
    }

    /// Part `k` of the incoming state of the forward pass.
    pub(crate) fn initial(&self, k: usize) -> Option<B::View<'a>> {
        part(&self.initial, k)
    }

    /// Part `k` of ∂L/∂(final state).
    pub(crate) fn grad_final(&self, k: usize) -> Option<B::View<'a>> {
        part(&self.grad_final, k)
    }

    /// The backward input of a scan primitive whose states are `state`, with part `k` of
    /// the incoming state and of ∂L/∂(final state) as its ends.
    pub(crate) fn scan_grad<'s>(
        &'s self,
        b: &B,
        state: B::View<'s>,
        grad_state: B::View<'s>,
        k: usize,
    ) -> ScanGrad<B::View<'s>> {
        let short = |parts: &'s Option<Vec<B::View<'a>>>| {
            parts.as_ref().and_then(|p| p.get(k)).map(|v| b.shorten(v))
        };
        let ends = ScanEnds {
            initial: short(&self.initial),
            grad_last: short(&self.grad_final),
        };
        ScanGrad {
            state,
            ends,
            grad_state,
            want_initial: self.initial.is_some(),
        }
    }

    /// Whether the caller wants ∂L/∂input (not when the input is data).
    pub(crate) fn wants_input(&self) -> bool {
        self.want_input
    }

    /// A zeroed (or, with `zeroed` false, unspecified) `(T·B, m)` matrix for ∂L/∂input,
    /// or `None` when the caller needs no input gradient (the input is data).
    pub(crate) fn grad_input(
        &self,
        b: &B,
        m: usize,
        zeroed: bool,
    ) -> Result<Option<B::Matrix>, ModelError> {
        match (self.want_input, zeroed) {
            (false, _) => Ok(None),
            (true, true) => b.zeros(self.rows(), m).map(Some),
            (true, false) => b.scratch(self.rows(), m).map(Some),
        }
    }

    /// Whether the forward pass started from a given state (so its gradient is wanted).
    pub(crate) fn has_initial(&self) -> bool {
        self.initial.is_some()
    }

    /// The cached buffers, checked to be `N`.
    pub(crate) fn take_buffers<const N: usize>(&mut self) -> Result<[B::Matrix; N], ModelError> {
        std::mem::take(&mut self.buffers)
            .try_into()
            .map_err(|_| ModelError::InvalidInput {
                operation: "Layer::backward",
                reason: "the cache holds another number of buffers".into(),
            })
    }
}

/// What a layer's forward computation returns.
pub(crate) struct Ran<M> {
    pub(crate) output: M,
    pub(crate) buffers: Vec<M>,
    pub(crate) state: Vec<M>,
    /// Per state part, the state that entered from an earlier part of a split sequence
    /// (all `None`, or empty, when the incoming state is what entered).
    pub(crate) entered: Vec<Option<M>>,
}

/// `Ok(Ran { output, buffers, state })`.
pub(crate) fn ran<M>(output: M, buffers: Vec<M>, state: Vec<M>) -> Result<Ran<M>, ModelError> {
    Ok(Ran {
        output,
        buffers,
        state,
        entered: Vec::new(),
    })
}

impl<M> Ran<M> {
    /// The same result with the states that entered from an earlier part, per state part.
    pub(crate) fn entered(self, entered: Vec<Option<M>>) -> Self {
        Self { entered, ..self }
    }
}

/// The state that entered from an earlier part: `None` when no part did, all parts when
/// every one did.
fn entered_state<M>(entered: Vec<Option<M>>) -> Result<Option<LayerState<M>>, ModelError> {
    if entered.iter().all(Option::is_none) {
        return Ok(None);
    }
    let parts = entered.into_iter().collect::<Option<Vec<M>>>();
    parts
        .map(|parts| Some(LayerState::new(parts)))
        .ok_or_else(|| ModelError::InvalidInput {
            operation: "Layer::forward",
            reason: "only some state parts entered from an earlier part of the sequence".into(),
        })
}

/// What a layer's backward computation returns: ∂L/∂input (when wanted) and, when the
/// forward pass had an incoming state, its gradient.
pub(crate) struct Grads<M> {
    pub(crate) input: Option<M>,
    pub(crate) initial: Option<Vec<M>>,
}

/// A recurrent layer as its equations: the [`Layer`] implementation around them is shared.
pub(crate) trait Recurrence<E: Real>: Parameters<E> {
    /// `(m, n)`.
    fn sizes(&self) -> (usize, usize);

    /// The `(rows, cols)` of each state part.
    fn parts(&self, n_batch: usize) -> Vec<(usize, usize)>;

    /// The forward equations.
    fn run<B: Backend<E>>(&self, b: &B, run: Run<'_, E, B>) -> Forward<E, B>;

    /// The backward equations.
    fn run_backward<B: Backend<E>>(&mut self, b: &B, run: BackRun<'_, E, B>) -> Back<E, B>;

    /// The name its caches carry when it is a variant of its type that computes other
    /// values (so a cache of one variant is refused by the other).
    fn variant(&self) -> Option<&'static str> {
        None
    }
}

fn views<'a, E: Real, B: Backend<E>>(
    b: &B,
    state: Option<&'a LayerState<B::Matrix>>,
) -> Option<Vec<B::View<'a>>> {
    state.map(|s| s.parts.iter().map(|p| b.view(p)).collect())
}

/// The [`Layer`] methods of a [`Recurrence`], written once.
macro_rules! layer_from_recurrence {
    ($layer:ident: $($field:ident),+) => {
        params_from_fields!($layer: $($field),+);

        impl<E: Real> $crate::layers::Layer<E> for $layer<E> {
            fn input_size(&self) -> usize {
                $crate::layers::recurrence::Recurrence::sizes(self).0
            }

            fn output_size(&self) -> usize {
                $crate::layers::recurrence::Recurrence::sizes(self).1
            }

            fn state_dims(&self, n_batch: usize) -> Vec<(usize, usize)> {
                $crate::layers::recurrence::Recurrence::parts(self, n_batch)
            }

            fn forward<'a, B: $crate::backend::Backend<E>>(
                &self,
                b: &B,
                x: B::View<'a>,
                n_batch: usize,
                initial: Option<&'a $crate::layers::LayerState<B::Matrix>>,
            ) -> Result<$crate::layers::LayerOutput<B::Matrix>, ModelError> {
                $crate::layers::recurrence::forward(self, stringify!($layer), b, x, n_batch, initial)
            }

            fn backward<'a, B: $crate::backend::Backend<E>>(
                &mut self,
                b: &B,
                x: B::View<'a>,
                h: B::View<'a>,
                cache: $crate::layers::LayerCache<B::Matrix>,
                grad_h: B::View<'a>,
                grad_final: Option<&'a $crate::layers::LayerState<B::Matrix>>,
            ) -> Result<$crate::layers::LayerGrads<B::Matrix>, ModelError> {
                let (input, initial) = $crate::layers::recurrence::backward(self, stringify!($layer), (b, x, h), cache, grad_h, grad_final, true)?;
                let input = input.ok_or_else(|| ModelError::InvalidInput {
                    operation: "Layer::backward",
                    reason: "internal error: the layer formed no input gradient although one was asked for".into(),
                })?;
                Ok($crate::layers::LayerGrads { input, initial })
            }

            fn backward_params<'a, B: $crate::backend::Backend<E>>(
                &mut self,
                b: &B,
                x: B::View<'a>,
                h: B::View<'a>,
                cache: $crate::layers::LayerCache<B::Matrix>,
                grad_h: B::View<'a>,
                grad_final: Option<&'a $crate::layers::LayerState<B::Matrix>>,
            ) -> Result<Option<$crate::layers::LayerState<B::Matrix>>, ModelError> {
                let (input, initial) = $crate::layers::recurrence::backward(self, stringify!($layer), (b, x, h), cache, grad_h, grad_final, false)?;
                if let Some(input) = input {
                    b.recycle(input);
                }
                Ok(initial)
            }
        }
    };
}

/// [`Layer::forward`] of a [`Recurrence`]: checks, the layer's equations, the cache.
pub(crate) fn forward<'a, E: Real, L: Recurrence<E>, B: Backend<E>>(
    layer: &L,
    name: &'static str,
    b: &B,
    x: B::View<'a>,
    n_batch: usize,
    initial: Option<&'a LayerState<B::Matrix>>,
) -> Result<LayerOutput<B::Matrix>, ModelError> {
    let (m, _) = layer.sizes();
    let state = initial.map(|s| (s, layer.parts(n_batch)));
    let n_steps = check_forward(b, name, x, n_batch, m, state)?;
    let run = Run {
        x,
        n_steps,
        n_batch,
        initial: views(b, initial),
    };
    let Ran {
        output,
        buffers,
        state,
        entered,
    } = layer.run(b, run)?;
    let initial = match entered_state(entered)? {
        Some(entered) => Some(entered),
        None => initial.map(|s| copy_state(b, s)).transpose()?,
    };
    let cache = LayerCache {
        layer: layer.variant().unwrap_or(name),
        n_steps,
        n_batch,
        buffers,
        initial,
    };
    Ok(LayerOutput {
        output,
        cache,
        state: LayerState::new(state),
    })
}

/// ∂L/∂input (when wanted) and ∂L/∂(incoming state) (when the forward pass had one).
pub(crate) type GradsOut<M> = (Option<M>, Option<LayerState<M>>);

/// [`Layer::backward`] (or, without `want_input`, [`Layer::backward_params`]) of a
/// [`Recurrence`]: checks, the cache taken apart, the layer's backward equations; returns
/// ∂L/∂input (when wanted) and ∂L/∂(incoming state).
pub(crate) fn backward<'a, E: Real, L: Recurrence<E>, B: Backend<E>>(
    layer: &mut L,
    name: &'static str,
    (b, x, h): (&B, B::View<'a>, B::View<'a>),
    cache: LayerCache<B::Matrix>,
    grad_h: B::View<'a>,
    grad_final: Option<&'a LayerState<B::Matrix>>,
    want_input: bool,
) -> Result<GradsOut<B::Matrix>, ModelError> {
    let (m, n) = layer.sizes();
    let finals = grad_final.map(|s| (s, layer.parts(cache.n_batch)));
    let dims = check_backward(b, name, &cache, x, m, h, grad_h, n, finals)?;
    let name = layer.variant().unwrap_or(name);
    if cache.layer != name {
        return Err(ModelError::InvalidInput {
            operation: "Layer::backward",
            reason: format!(
                "the cache comes from a {} layer, not a {}",
                cache.layer, name
            ),
        });
    }
    if let Some(initial) = &cache.initial {
        let parts = layer.parts(cache.n_batch);
        let fits = initial.parts.len() == parts.len()
            && initial
                .parts
                .iter()
                .zip(&parts)
                .all(|(p, &dims)| b.matrix_dims(p) == dims);
        if !fits {
            return Err(ModelError::InvalidInput {
                operation: "Layer::backward",
                reason: format!(
                    "the cache's incoming state does not fit this {name} layer's state parts {parts:?}"
                ),
            });
        }
    }
    let LayerCache {
        buffers, initial, ..
    } = cache;
    let run = BackRun {
        x: b.shorten(&x),
        h: b.shorten(&h),
        grad_h: b.shorten(&grad_h),
        n_steps: dims.0,
        n_batch: dims.1,
        buffers,
        initial: views(b, initial.as_ref()),
        grad_final: grad_final.map(|s| s.parts.iter().map(|p| b.view(p)).collect()),
        want_input,
    };
    let grads = layer.run_backward(b, run)?;
    if let Some(initial) = initial {
        super::recycle(b, initial.parts);
    }
    Ok((grads.input, grads.initial.map(LayerState::new)))
}
