//! The LSTM baseline: non-linear, serial over time.

use ndarray::{s, Array1, Axis, Ix1, Ix2};

use super::recurrence::prelude::*;

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
/// The per-step products read `U` (forward) and `Uᵀ` (backward) laid out once per pass by
/// [`Backend::pack`] (unless the pass has a single product), so no step packs or
/// allocates.
#[derive(Clone, Debug)]
pub struct Lstm<E: Real> {
    input_weight: Param<E, Ix2>,
    recurrent_weight: Param<E, Ix2>,
    bias: Param<E, Ix1>,
}

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
}

layer_from_recurrence!(Lstm: input_weight, recurrent_weight, bias);

/// The recurrent weight as a pass's per-step products read it: packed once when the pass
/// has more than one of them (packing costs about one product at batch 1, so a one-step
/// pass, e.g. streamed inference step by step, reads it as it is).
enum StepWeight<'a, E: Real, B: Backend<E>> {
    Packed(B::Packed),
    Plain(B::View<'a>, Transpose),
}

impl<'a, E: Real, B: Backend<E>> StepWeight<'a, E, B> {
    fn new(
        b: &B,
        weight: B::View<'a>,
        transpose: Transpose,
        products: usize,
    ) -> Result<Self, ModelError> {
        Ok(match products > 1 {
            true => Self::Packed(b.pack(weight, transpose)?),
            false => Self::Plain(weight, transpose),
        })
    }

    /// `c (+)= a·op(U)`.
    fn product(
        &self,
        b: &B,
        a: B::View<'_>,
        c: B::ViewMut<'_>,
        accumulate: bool,
    ) -> Result<(), ModelError> {
        match self {
            Self::Packed(packed) => b.matmul_packed(a, packed, c, accumulate),
            Self::Plain(weight, transpose) => b.matmul(
                a,
                Transpose::No,
                b.shorten(weight),
                *transpose,
                c,
                accumulate,
            ),
        }
    }

    fn recycle(self, b: &B) {
        if let Self::Packed(packed) = self {
            b.recycle_packed(packed);
        }
    }
}

impl<E: Real> Recurrence<E> for Lstm<E> {
    fn sizes(&self) -> (usize, usize) {
        let m = self.input_weight.value.nrows();
        (m, self.bias.value.len() / 4)
    }

    fn parts(&self, n_batch: usize) -> Vec<(usize, usize)> {
        vec![(n_batch, self.sizes().1); 2]
    }

    fn run<B: Backend<E>>(&self, b: &B, run: Run<'_, E, B>) -> Forward<E, B> {
        let (n, n_batch) = (self.sizes().1, run.n_batch);
        let mut gates = b.scratch(run.rows(), 4 * n)?;
        let bias = b.host(self.bias.value.view().insert_axis(Axis(0)));
        b.fill_rows(bias, b.view_mut(&mut gates))?;
        let v = b.host(self.input_weight.value.view());
        b.matmul(
            run.x,
            Transpose::No,
            v,
            Transpose::No,
            b.view_mut(&mut gates),
            true,
        )?;
        let [mut cell, mut h] = matrices::<E, B, 2>(b, run.rows(), n, false)?;
        let h_0 = run.initial(0);
        let products = run.n_steps - usize::from(h_0.is_none());
        let u = b.host(self.recurrent_weight.value.view());
        let u = StepWeight::new(b, u, Transpose::No, products)?;
        // c_{t−1}, carried in its own buffer (the cell pass reads it while writing c_t).
        let mut c_prev = run.initial(1).map(|c| copy_matrix(b, c)).transpose()?;
        for t in 0..run.n_steps {
            let start = t * n_batch;
            let mut pre = b.rows_mut(b.view_mut(&mut gates), start, n_batch)?;
            let h_prev = match t {
                0 => h_0.as_ref().map(|v| b.shorten(v)),
                _ => Some(b.rows(b.view(&h), start - n_batch, n_batch)?),
            };
            if let Some(h_prev) = h_prev {
                u.product(b, h_prev, b.reborrow(&mut pre), true)?;
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
        u.recycle(b);
        let state = vec![last_step(b, &h, n_batch)?, last_step(b, &cell, n_batch)?];
        ran(h, vec![gates, cell], state)
    }

    fn run_backward<B: Backend<E>>(&mut self, b: &B, mut run: BackRun<'_, E, B>) -> Back<E, B> {
        let (n, n_batch) = (self.sizes().1, run.n_batch);
        let [mut gates, cell] = run.take_buffers()?;
        let carried = |k| match run.grad_final(k) {
            Some(d) => copy_matrix(b, d),
            None => b.zeros(n_batch, n),
        };
        let (mut grad_recurrent, mut grad_cell) = (carried(0)?, carried(1)?);
        let products = run.n_steps - usize::from(!run.has_initial());
        let u = b.host(self.recurrent_weight.value.view());
        let u_t = StepWeight::new(b, u, Transpose::Yes, products)?;
        let c_0 = run.initial(1);
        for t in (0..run.n_steps).rev() {
            let start = t * n_batch;
            let c_prev = match t {
                0 => c_0.as_ref().map(|v| b.shorten(v)),
                _ => Some(b.rows(b.view(&cell), start - n_batch, n_batch)?),
            };
            let pre = b.rows_mut(b.view_mut(&mut gates), start, n_batch)?;
            let c_t = b.rows(b.view(&cell), start, n_batch)?;
            let dh_t = b.rows(run.grad_h, start, n_batch)?;
            let (dh_rec, dc) = (b.view(&grad_recurrent), b.view_mut(&mut grad_cell));
            b.lstm_cell_backward(pre, c_t, c_prev, dh_t, dh_rec, dc)?;
            if t > 0 || run.has_initial() {
                let dp = b.rows(b.view(&gates), start, n_batch)?;
                let dh = b.view_mut(&mut grad_recurrent);
                u_t.product(b, dp, dh, false)?;
            }
        }
        u_t.recycle(b);
        let shifted = run.rows() - n_batch;
        let late = b.rows(b.view(&gates), n_batch, shifted)?;
        let grad_u = b.host_mut(self.recurrent_weight.grad.view_mut());
        b.matmul(
            b.rows(run.h, 0, shifted)?,
            Transpose::Yes,
            late,
            Transpose::No,
            grad_u,
            true,
        )?;
        if let Some(h_0) = run.initial(0) {
            let first = b.rows(b.view(&gates), 0, n_batch)?;
            let grad_u = b.host_mut(self.recurrent_weight.grad.view_mut());
            b.matmul(h_0, Transpose::Yes, first, Transpose::No, grad_u, true)?;
        }
        let grad_v = b.host_mut(self.input_weight.grad.view_mut());
        b.matmul(
            run.x,
            Transpose::Yes,
            b.view(&gates),
            Transpose::No,
            grad_v,
            true,
        )?;
        let grad_bias = b.host_mut(self.bias.grad.view_mut().insert_axis(Axis(0)));
        b.add_column_sums(b.view(&gates), grad_bias)?;
        let mut grad_x = run.grad_input(b, self.sizes().0, false)?;
        if let Some(grad_x) = grad_x.as_mut() {
            let v = b.host(self.input_weight.value.view());
            let (dp, gx) = (b.view(&gates), b.view_mut(grad_x));
            b.matmul(dp, Transpose::No, v, Transpose::Yes, gx, false)?;
        }
        recycle(b, [gates, cell]);
        let initial = if run.has_initial() {
            Some(vec![grad_recurrent, grad_cell])
        } else {
            recycle(b, [grad_recurrent, grad_cell]);
            None
        };
        Ok(Grads {
            input: grad_x,
            initial,
        })
    }
}
