//! One recurrent layer of any kind.

use crate::backend::Backend;
use crate::init::Initializer;
use crate::layers::{
    Gilr, GilrLstm, Layer, LayerCache, LayerGrads, LayerOutput, LayerState, Lstm, Qrnn, Sru,
};
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::{InitConfig, LayerKind, ModelError, Parameters, Real};

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
        init.validate()?;
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
            _ => {
                super::check_parameter_count::<E>(super::layer_parameters(kind, m, n))?;
                Ok(Self::init(kind, &mut Initializer::new(init, seed), m, n))
            }
        }
    }

    pub(crate) fn init(kind: LayerKind, init: &mut Initializer, m: usize, n: usize) -> Self {
        match kind {
            LayerKind::Gilr => Self::Gilr(Gilr::init(init, m, n)),
            LayerKind::GilrLstm => Self::GilrLstm(GilrLstm::init(init, m, n)),
            LayerKind::GilrLstmTanh => {
                Self::GilrLstm(GilrLstm::init(init, m, n).with_bounded_output())
            }
            LayerKind::Qrnn { width } => Self::Qrnn(Qrnn::init(init, width, m, n)),
            LayerKind::Sru => Self::Sru(Sru::init(init, n)),
            LayerKind::Lstm => Self::Lstm(Lstm::init(init, m, n)),
        }
    }
}

impl<E: Real> Layer<E> for RecurrentLayer<E> {
    fn input_size(&self) -> usize {
        dispatch!(self, l => l.input_size())
    }

    fn output_size(&self) -> usize {
        dispatch!(self, l => l.output_size())
    }

    fn state_dims(&self, n_batch: usize) -> Vec<(usize, usize)> {
        dispatch!(self, l => l.state_dims(n_batch))
    }

    fn forward<'a, B: Backend<E>>(
        &self,
        backend: &B,
        input: B::View<'a>,
        n_batch: usize,
        initial: Option<&'a LayerState<B::Matrix>>,
    ) -> Result<LayerOutput<B::Matrix>, ModelError> {
        dispatch!(self, l => l.forward(backend, input, n_batch, initial))
    }

    /// A cache from a layer of another kind is an [`ModelError::InvalidInput`].
    fn backward<'a, B: Backend<E>>(
        &mut self,
        backend: &B,
        input: B::View<'a>,
        output: B::View<'a>,
        cache: LayerCache<B::Matrix>,
        grad_output: B::View<'a>,
        grad_final: Option<&'a LayerState<B::Matrix>>,
    ) -> Result<LayerGrads<B::Matrix>, ModelError> {
        dispatch!(self, l => l.backward(backend, input, output, cache, grad_output, grad_final))
    }

    fn backward_params<'a, B: Backend<E>>(
        &mut self,
        backend: &B,
        input: B::View<'a>,
        output: B::View<'a>,
        cache: LayerCache<B::Matrix>,
        grad_output: B::View<'a>,
        grad_final: Option<&'a LayerState<B::Matrix>>,
    ) -> Result<Option<LayerState<B::Matrix>>, ModelError> {
        dispatch!(self, l => l.backward_params(backend, input, output, cache, grad_output, grad_final))
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
