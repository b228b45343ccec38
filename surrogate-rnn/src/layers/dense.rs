//! The affine layer.

use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3, Ix1, Ix2};
use scan_core::LinearScan;

use super::{check_backward, check_input, Layer};
use crate::init::Initializer;
use crate::ops::{add_column_sums, gemm, rows, to_3d};
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::{ModelError, Param, Parameters, Real};

/// An affine map applied at every step: `y = x·W + b`, `W` of shape `(m, n)`.
///
/// Backward: `∂W += xᵀ·∂y`, `∂b += Σ_rows ∂y`, `∂x = ∂y·Wᵀ`.
/// Also the classification head (on `(B, n)` matrices, see [`Dense::forward_2d`]).
#[derive(Clone, Debug)]
pub struct Dense<E: Real> {
    /// `W`, shape `(m, n)`.
    pub weight: Param<E, Ix2>,
    /// `b`, shape `(n)`.
    pub bias: Param<E, Ix1>,
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

    /// `y = x·W + b` on a `(rows, m)` matrix.
    pub fn forward_2d(&self, input: ArrayView2<'_, E>) -> Result<Array2<E>, ModelError> {
        let (n_rows, m) = input.dim();
        crate::error::check_shape(
            "Dense::forward_2d",
            "input",
            &[n_rows, self.input_size()],
            &[n_rows, m],
        )?;
        let mut out = Array2::zeros((n_rows, self.output_size()));
        out.rows_mut()
            .into_iter()
            .for_each(|mut row| row.assign(&self.bias.value));
        gemm(
            E::one(),
            &input,
            &self.weight.value.view(),
            E::one(),
            &mut out.view_mut(),
        );
        Ok(out)
    }

    /// Accumulates `∂W`, `∂b` for a `(rows, m)` input and returns `∂x`.
    pub fn backward_2d(
        &mut self,
        input: ArrayView2<'_, E>,
        grad_output: ArrayView2<'_, E>,
    ) -> Result<Array2<E>, ModelError> {
        let (n_rows, _) = input.dim();
        crate::error::check_shape(
            "Dense::backward_2d",
            "input",
            &[n_rows, self.input_size()],
            input.shape(),
        )?;
        crate::error::check_shape(
            "Dense::backward_2d",
            "grad_output",
            &[n_rows, self.output_size()],
            grad_output.shape(),
        )?;
        gemm(
            E::one(),
            &input.t(),
            &grad_output,
            E::one(),
            &mut self.weight.grad.view_mut(),
        );
        add_column_sums(self.bias.grad.view_mut(), grad_output);
        let mut grad_input = Array2::zeros((n_rows, self.input_size()));
        gemm(
            E::one(),
            &grad_output,
            &self.weight.value.t(),
            E::zero(),
            &mut grad_input.view_mut(),
        );
        Ok(grad_input)
    }
}

params_from_fields!(Dense: weight, bias);

impl<E: Real> Layer<E> for Dense<E> {
    type Cache = ();

    fn input_size(&self) -> usize {
        self.weight.value.nrows()
    }

    fn output_size(&self) -> usize {
        self.weight.value.ncols()
    }

    fn forward(
        &self,
        _scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
    ) -> Result<(Array3<E>, ()), ModelError> {
        let (n_steps, n_batch) = check_input("Dense::forward", &input, self.input_size())?;
        let out = self.forward_2d(rows(input).view())?;
        Ok((to_3d(out, n_steps, n_batch), ()))
    }

    fn backward(
        &mut self,
        _scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        output: ArrayView3<'_, E>,
        _cache: (),
        grad_output: ArrayView3<'_, E>,
    ) -> Result<Array3<E>, ModelError> {
        let (n_steps, n_batch) = check_backward(
            "Dense::backward",
            &input,
            self.input_size(),
            &output,
            &grad_output,
            self.output_size(),
        )?;
        let grad = self.backward_2d(rows(input).view(), rows(grad_output).view())?;
        Ok(to_3d(grad, n_steps, n_batch))
    }
}
