//! The affine layer.

use ndarray::{Array1, Array2, Axis, Ix1, Ix2};

use super::recurrence::prelude::*;

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

layer_from_recurrence!(Dense: weight, bias);

/// A dense layer is a recurrence without state: each step on its own.
impl<E: Real> Recurrence<E> for Dense<E> {
    fn sizes(&self) -> (usize, usize) {
        self.weight.value.dim()
    }

    fn parts(&self, _n_batch: usize) -> Vec<(usize, usize)> {
        Vec::new()
    }

    fn run<B: Backend<E>>(&self, b: &B, run: Run<'_, E, B>) -> Forward<E, B> {
        let mut y = b.scratch(run.rows(), self.sizes().1)?;
        let bias = b.host(self.bias.value.view().insert_axis(Axis(0)));
        b.fill_rows(bias, b.view_mut(&mut y))?;
        let w = b.host(self.weight.value.view());
        b.matmul(
            run.x,
            Transpose::No,
            w,
            Transpose::No,
            b.view_mut(&mut y),
            true,
        )?;
        ran(y, Vec::new(), Vec::new())
    }

    fn run_backward<B: Backend<E>>(&mut self, b: &B, run: BackRun<'_, E, B>) -> Back<E, B> {
        let grad_w = b.host_mut(self.weight.grad.view_mut());
        b.matmul(
            run.x,
            Transpose::Yes,
            run.grad_h,
            Transpose::No,
            grad_w,
            true,
        )?;
        let grad_b = b.host_mut(self.bias.grad.view_mut().insert_axis(Axis(0)));
        b.add_column_sums(run.grad_h, grad_b)?;
        let mut grad_x = run.grad_input(b, self.sizes().0, false)?;
        if let Some(grad_x) = grad_x.as_mut() {
            let w = b.host(self.weight.value.view());
            let gx = b.view_mut(grad_x);
            b.matmul(run.grad_h, Transpose::No, w, Transpose::Yes, gx, false)?;
        }
        Ok(Grads {
            input: grad_x,
            initial: None,
        })
    }
}
