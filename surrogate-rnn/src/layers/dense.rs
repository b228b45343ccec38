//! The affine layer.

use ndarray::{Array1, Array2, Axis, Ix1, Ix2};

use super::{
    cache, check_backward, check_forward, Layer, LayerCache, LayerGrads, LayerOutput, LayerState,
};
use crate::backend::{Backend, Transpose};
use crate::init::Initializer;
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::{ModelError, Param, Parameters, Real};

/// An affine map applied at every step: `y = x·W + b`, `W` of shape `(m, n)`.
///
/// Backward: `∂W += xᵀ·∂y`, `∂b += Σ_rows ∂y`, `∂x = ∂y·Wᵀ`.
/// Also the classification head (on the last step's `(B, n)` rows).
#[derive(Clone, Debug)]
pub struct Dense<E: Real> {
    weight: Param<E, Ix2>,
    bias: Param<E, Ix1>,
}

impl<E: Real> Dense<E> {
    /// A Glorot-initialised `m → n` layer with zero bias.
    pub(crate) fn init(init: &mut Initializer, m: usize, n: usize) -> Self {
        Self {
            weight: Param::new(init.glorot(m, n)),
            bias: Param::new(Array1::zeros(n)),
        }
    }

    /// Builds a layer from explicit weights `(m, n)` and bias `(n)`.
    pub fn from_arrays(weight: Array2<E>, bias: Array1<E>) -> Result<Self, ModelError> {
        crate::error::check_shape(
            "Dense::from_arrays",
            "bias",
            &[weight.ncols()],
            bias.shape(),
        )?;
        Ok(Self {
            weight: Param::new(weight),
            bias: Param::new(bias),
        })
    }
}

params_from_fields!(Dense: weight, bias);

const NAME: &str = "Dense";

impl<E: Real> Layer<E> for Dense<E> {
    fn input_size(&self) -> usize {
        self.weight.value.nrows()
    }

    fn output_size(&self) -> usize {
        self.weight.value.ncols()
    }

    /// No state: a dense layer looks at one step at a time.
    fn state_dims(&self, _n_batch: usize) -> Vec<(usize, usize)> {
        Vec::new()
    }

    fn forward<B: Backend<E>>(
        &self,
        b: &B,
        x: B::View<'_>,
        n_batch: usize,
        initial: Option<&LayerState<B::Matrix>>,
    ) -> Result<LayerOutput<B::Matrix>, ModelError> {
        let state = initial.map(|s| (s, Vec::new()));
        let n_steps = check_forward(b, "Dense::forward", x, n_batch, self.input_size(), state)?;
        let mut y = b.scratch(n_steps * n_batch, self.output_size())?;
        let bias = b.host(self.bias.value.view().insert_axis(Axis(0)));
        b.fill_rows(bias, b.view_mut(&mut y))?;
        let w = b.host(self.weight.value.view());
        b.matmul(x, Transpose::No, w, Transpose::No, b.view_mut(&mut y), true)?;
        let cache = cache::<E, B, 0>(b, NAME, (n_steps, n_batch), [], None)?;
        Ok(LayerOutput {
            output: y,
            cache,
            state: LayerState::new(Vec::new()),
        })
    }

    fn backward<B: Backend<E>>(
        &mut self,
        b: &B,
        x: B::View<'_>,
        y: B::View<'_>,
        cache: LayerCache<B::Matrix>,
        grad_y: B::View<'_>,
        grad_final: Option<&LayerState<B::Matrix>>,
    ) -> Result<LayerGrads<B::Matrix>, ModelError> {
        const OP: &str = "Dense::backward";
        let (m, n) = (self.input_size(), self.output_size());
        let finals = grad_final.map(|s| (s, Vec::new()));
        let (n_steps, n_batch) = check_backward(b, OP, &cache, x, m, y, grad_y, n, finals)?;
        cache.take::<0>(OP, NAME)?;
        let grad_w = b.host_mut(self.weight.grad.view_mut());
        b.matmul(x, Transpose::Yes, grad_y, Transpose::No, grad_w, true)?;
        let grad_b = b.host_mut(self.bias.grad.view_mut().insert_axis(Axis(0)));
        b.add_column_sums(grad_y, grad_b)?;
        let mut grad_x = b.scratch(n_steps * n_batch, m)?;
        let w = b.host(self.weight.value.view());
        b.matmul(
            grad_y,
            Transpose::No,
            w,
            Transpose::Yes,
            b.view_mut(&mut grad_x),
            false,
        )?;
        Ok(LayerGrads {
            input: grad_x,
            initial: None,
        })
    }
}
