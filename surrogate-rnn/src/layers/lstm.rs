//! The LSTM baseline: non-linear, serial over time.

use ndarray::{s, Array1, Axis, Ix1, Ix2};

use super::{
    cache, check_backward, check_forward, copy_matrix, last_step, recycle, state_part, Layer,
    LayerCache, LayerGrads, LayerOutput, LayerState,
};
use crate::backend::{Backend, Transpose};
use crate::init::Initializer;
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::{ModelError, Param, Parameters, Real};

/// The standard LSTM, `m → n`, the serial baseline (cuDNN's cell):
///
/// ```text
/// f_t, i_t, o_t = σ(U_{f,i,o} h_{t-1} + V_{f,i,o} x_t + b_{f,i,o})
/// z_t = tanh(U_z h_{t-1} + V_z x_t + b_z)
/// c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t
/// h_t = o_t ⊙ tanh(c_t)                    (tanh on the cell, as cuDNN)
/// ```
///
/// The input projections of all steps are one `(T·B, m)·(m, 4n)` product; then each step
/// is one `(B, n)·(n, 4n)` product and one LSTM-cell pass. Gates are kept row-major
/// `(T·B, 4n)` (`[f i o z]`) so each step's block is contiguous. State: `h` and `c`.
///
/// Backward is backpropagation through time: per step, from the last, the cell's backward
/// (with `∂h_t = ∂out_t + ∂P_{t+1} Uᵀ` and the carried `∂c`); afterwards
/// `∂U += h_{t-1}ᵀ∂P_t`, `∂V += xᵀ∂P`, `∂b += Σ∂P`, `∂x = ∂P Vᵀ` as single products.
#[derive(Clone, Debug)]
pub struct Lstm<E: Real> {
    input_weight: Param<E, Ix2>,
    recurrent_weight: Param<E, Ix2>,
    bias: Param<E, Ix1>,
}

const NAME: &str = "Lstm";

impl<E: Real> Lstm<E> {
    pub(crate) fn init(init: &mut Initializer, m: usize, n: usize) -> Self {
        let input_weight = init.glorot_gates(m, 4, n);
        let recurrent_weight = init.glorot_gates(n, 4, n);
        let mut bias = Array1::zeros(4 * n);
        init.decay_bias(bias.slice_mut(s![..n]));
        if matches!(init.config.gate_bias, crate::GateBiasInit::Chrono { .. }) {
            let forget: Array1<E> = bias.slice(s![..n]).to_owned();
            bias.slice_mut(s![n..2 * n]).assign(&forget.mapv(|b| -b));
        }
        Self {
            input_weight: Param::new(input_weight),
            recurrent_weight: Param::new(recurrent_weight),
            bias: Param::new(bias),
        }
    }

    fn n(&self) -> usize {
        self.recurrent_weight.value.nrows()
    }
}

params_from_fields!(Lstm: input_weight, recurrent_weight, bias);

impl<E: Real> Layer<E> for Lstm<E> {
    fn input_size(&self) -> usize {
        self.input_weight.value.nrows()
    }

    fn output_size(&self) -> usize {
        self.n()
    }

    fn state_dims(&self, n_batch: usize) -> Vec<(usize, usize)> {
        vec![(n_batch, self.n()); 2]
    }

    fn forward<B: Backend<E>>(
        &self,
        b: &B,
        x: B::View<'_>,
        n_batch: usize,
        initial: Option<&LayerState<B::Matrix>>,
    ) -> Result<LayerOutput<B::Matrix>, ModelError> {
        const OP: &str = "Lstm::forward";
        let state = initial.map(|s| (s, self.state_dims(n_batch)));
        let n_steps = check_forward(b, OP, x, n_batch, self.input_size(), state)?;
        let (n, n_rows) = (self.n(), n_steps * n_batch);
        let c_0 = state_part(b, initial, OP, 1)?;
        let mut gates = b.scratch(n_rows, 4 * n)?;
        let bias = b.host(self.bias.value.view().insert_axis(Axis(0)));
        b.fill_rows(bias, b.view_mut(&mut gates))?;
        let v = b.host(self.input_weight.value.view());
        b.matmul(
            x,
            Transpose::No,
            v,
            Transpose::No,
            b.view_mut(&mut gates),
            true,
        )?;
        let [mut cell, mut h] = super::primitives::matrices::<E, B, 2>(b, n_rows, n, false)?;
        let u = b.host(self.recurrent_weight.value.view());
        // c_{t−1}, carried in its own buffer (the cell pass reads it while writing c_t).
        let mut c_prev = match c_0 {
            Some(c_0) => Some(copy_matrix(b, c_0)?),
            None => None,
        };
        for t in 0..n_steps {
            let start = t * n_batch;
            let mut pre = b.rows_mut(b.view_mut(&mut gates), start, n_batch)?;
            let h_prev = match t {
                0 => state_part(b, initial, OP, 0)?,
                _ => Some(b.rows(b.view(&h), start - n_batch, n_batch)?),
            };
            if let Some(h_prev) = h_prev {
                b.matmul(
                    h_prev,
                    Transpose::No,
                    u,
                    Transpose::No,
                    b.reborrow(&mut pre),
                    true,
                )?;
            }
            let c_t = b.rows_mut(b.view_mut(&mut cell), start, n_batch)?;
            let h_t = b.rows_mut(b.view_mut(&mut h), start, n_batch)?;
            b.lstm_cell(pre, c_prev.as_ref().map(|c| b.view(c)), c_t, h_t)?;
            let c_t = b.rows(b.view(&cell), start, n_batch)?;
            match c_prev.as_mut() {
                Some(carry) => b.copy(c_t, b.view_mut(carry))?,
                None => c_prev = Some(copy_matrix(b, c_t)?),
            }
        }
        recycle(b, c_prev);
        let state = LayerState::new(vec![
            last_step(b, &h, n_batch)?,
            last_step(b, &cell, n_batch)?,
        ]);
        let cache = cache(b, NAME, (n_steps, n_batch), [gates, cell], initial)?;
        Ok(LayerOutput {
            output: h,
            cache,
            state,
        })
    }

    fn backward<B: Backend<E>>(
        &mut self,
        b: &B,
        x: B::View<'_>,
        h: B::View<'_>,
        cache: LayerCache<B::Matrix>,
        grad_h: B::View<'_>,
        grad_final: Option<&LayerState<B::Matrix>>,
    ) -> Result<LayerGrads<B::Matrix>, ModelError> {
        const OP: &str = "Lstm::backward";
        let (m, n) = (self.input_size(), self.n());
        let finals = grad_final.map(|s| (s, self.state_dims(cache.dims().1)));
        let (n_steps, n_batch) = check_backward(b, OP, &cache, x, m, h, grad_h, n, finals)?;
        let n_rows = n_steps * n_batch;
        let ([mut gates, cell], initial) = cache.take::<2>(OP, NAME)?;
        let h_0 = state_part(b, initial.as_ref(), OP, 0)?;
        let (grad_h_last, grad_c_last) = (
            state_part(b, grad_final, OP, 0)?,
            state_part(b, grad_final, OP, 1)?,
        );
        let mut grad_recurrent = match grad_h_last {
            Some(d) => copy_matrix(b, d)?,
            None => b.zeros(n_batch, n)?,
        };
        let mut grad_cell = match grad_c_last {
            Some(d) => copy_matrix(b, d)?,
            None => b.zeros(n_batch, n)?,
        };
        let u = b.host(self.recurrent_weight.value.view());
        for t in (0..n_steps).rev() {
            let start = t * n_batch;
            let c_prev = match t {
                0 => state_part(b, initial.as_ref(), OP, 1)?,
                _ => Some(b.rows(b.view(&cell), start - n_batch, n_batch)?),
            };
            let pre = b.rows_mut(b.view_mut(&mut gates), start, n_batch)?;
            let c_t = b.rows(b.view(&cell), start, n_batch)?;
            let dh_t = b.rows(grad_h, start, n_batch)?;
            b.lstm_cell_backward(
                pre,
                c_t,
                c_prev,
                dh_t,
                b.view(&grad_recurrent),
                b.view_mut(&mut grad_cell),
            )?;
            if t > 0 || h_0.is_some() {
                let dp = b.rows(b.view(&gates), start, n_batch)?;
                b.matmul(
                    dp,
                    Transpose::No,
                    u,
                    Transpose::Yes,
                    b.view_mut(&mut grad_recurrent),
                    false,
                )?;
            }
        }
        let shifted = n_rows - n_batch;
        let grad_u = b.host_mut(self.recurrent_weight.grad.view_mut());
        let late = b.rows(b.view(&gates), n_batch, shifted)?;
        b.matmul(
            b.rows(h, 0, shifted)?,
            Transpose::Yes,
            late,
            Transpose::No,
            grad_u,
            true,
        )?;
        if let Some(h_0) = h_0 {
            let grad_u = b.host_mut(self.recurrent_weight.grad.view_mut());
            let first = b.rows(b.view(&gates), 0, n_batch)?;
            b.matmul(h_0, Transpose::Yes, first, Transpose::No, grad_u, true)?;
        }
        let grad_v = b.host_mut(self.input_weight.grad.view_mut());
        b.matmul(
            x,
            Transpose::Yes,
            b.view(&gates),
            Transpose::No,
            grad_v,
            true,
        )?;
        let grad_bias = b.host_mut(self.bias.grad.view_mut().insert_axis(Axis(0)));
        b.add_column_sums(b.view(&gates), grad_bias)?;
        let mut grad_x = b.scratch(n_rows, m)?;
        let v = b.host(self.input_weight.value.view());
        b.matmul(
            b.view(&gates),
            Transpose::No,
            v,
            Transpose::Yes,
            b.view_mut(&mut grad_x),
            false,
        )?;
        recycle(b, [gates, cell]);
        let initial = match h_0 {
            Some(_) => Some(LayerState::new(vec![grad_recurrent, grad_cell])),
            None => {
                recycle(b, [grad_recurrent, grad_cell]);
                None
            }
        };
        Ok(LayerGrads {
            input: grad_x,
            initial,
        })
    }
}
