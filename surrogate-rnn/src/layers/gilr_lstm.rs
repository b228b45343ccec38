//! The LSTM with a GILR surrogate for its recurrent input.

use ndarray::{s, Array1, Ix1, Ix2};

use super::primitives::{
    bias_block, gated_scan, gated_scan_backward, input_gated_scan, input_gated_scan_backward,
    matrices, output_gate, output_gate_backward, project, project_backward,
};
use super::{
    cache, check_backward, check_forward, last_step, recycle, rows_of_each, rows_of_each_ref,
    state_part, Layer, LayerCache, LayerGrads, LayerOutput, LayerState,
};
use crate::backend::{Backend, Candidate, ScanEnds};
use crate::init::Initializer;
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::{ModelError, Param, Parameters, Real};

/// GILR-LSTM, `m → n` (PAPER.md §2): an LSTM whose gates read a GILR surrogate `h̃`
/// instead of the LSTM's own output, so both recurrences are linear and run on the scan:
///
/// ```text
/// g_t = σ(V_g x_t + b_g)      j_t = tanh(V_j x_t + b_j)
/// h̃_t = g_t ⊙ h̃_{t-1} + (1 − g_t) ⊙ j_t                     (gated scan)
/// f_t, i_t, o_t = σ(U_{f,i,o} h̃_{t-1} + V_{f,i,o} x_t + b_{f,i,o})
/// z_t = tanh(U_z h̃_{t-1} + V_z x_t + b_z)
/// c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t                            (input-gated scan)
/// h_t = o_t ⊙ c_t                                            (output gate)
/// ```
///
/// **Choice:** the gates read `h̃_{t-1}`, as PAPER.md's equations write it (the authors'
/// released code feeds `h̃_t`). Then `h̃` is a strict summary of the past, exactly like the
/// LSTM state it replaces. `U h̃_{t-1}` for all steps is one product on `h̃` shifted by one
/// step (rows `0..(T−1)B` feed rows `B..TB`); the first step reads the incoming `h̃_0`.
///
/// Parameters: `input_weight = [V_g V_j V_f V_i V_o V_z]` `(m, 6n)`,
/// `recurrent_weight = [U_f U_i U_o U_z]` `(n, 4n)`, `bias` `(6n)` in the same gate order.
/// State: `h̃` and `c`. Backward runs the primitives in reverse: output gate, input-gated
/// scan, the shifted projection (`∂h̃_{t-1} += ∂P_t Uᵀ`, `∂U += h̃_{t-1}ᵀ ∂P_t`), gated
/// scan, input projection.
#[derive(Clone, Debug)]
pub struct GilrLstm<E: Real> {
    input_weight: Param<E, Ix2>,
    recurrent_weight: Param<E, Ix2>,
    bias: Param<E, Ix1>,
}

const NAME: &str = "GilrLstm";
const G: usize = 0;
const J: usize = 1;
const F: usize = 2;
const I: usize = 3;
const O: usize = 4;
const Z: usize = 5;

impl<E: Real> GilrLstm<E> {
    pub(crate) fn init(init: &mut Initializer, m: usize, n: usize) -> Self {
        let input_weight = init.glorot_gates(m, 6, n);
        let recurrent_weight = init.glorot_gates(n, 4, n);
        let mut bias = Array1::zeros(6 * n);
        init.decay_bias(bias.slice_mut(s![G * n..(G + 1) * n]));
        init.decay_bias(bias.slice_mut(s![F * n..(F + 1) * n]));
        if matches!(init.config.gate_bias, crate::GateBiasInit::Chrono { .. }) {
            let forget: Array1<E> = bias.slice(s![F * n..(F + 1) * n]).to_owned();
            bias.slice_mut(s![I * n..(I + 1) * n])
                .assign(&forget.mapv(|b| -b));
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

params_from_fields!(GilrLstm: input_weight, recurrent_weight, bias);

impl<E: Real> Layer<E> for GilrLstm<E> {
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
        const OP: &str = "GilrLstm::forward";
        let state = initial.map(|s| (s, self.state_dims(n_batch)));
        let n_steps = check_forward(b, OP, x, n_batch, self.input_size(), state)?;
        let (n, n_rows) = (self.n(), n_steps * n_batch);
        let (surrogate_0, cell_0) = (
            state_part(b, initial, OP, 0)?,
            state_part(b, initial, OP, 1)?,
        );
        let mut gates = matrices::<E, B, 6>(b, n_rows, n, false)?;
        let w = b.host(self.input_weight.value.view());
        project(b, x, w, &mut gates.each_mut().map(|g| b.view_mut(g)), false)?;
        let bias = self.bias.value.view();
        let bias = |k| bias_block(b, bias, k, n);
        let [g, j, f, i, o, z] = &mut gates;
        let surrogate = gated_scan(
            b,
            n_steps,
            g,
            bias(G)?,
            j,
            bias(J)?,
            Candidate::Tanh,
            surrogate_0,
        )?;
        // P_{f,i,o,z} at step t += h̃_{t−1}·U: rows B.. from h̃ rows ..(T−1)B, rows ..B
        // from the incoming h̃_0.
        let u = b.host(self.recurrent_weight.value.view());
        let shifted = n_rows - n_batch;
        let previous = b.rows(b.view(&surrogate), 0, shifted)?;
        let late = rows_of_each(b, [&mut *f, &mut *i, &mut *o, &mut *z], n_batch, shifted)?;
        project(b, previous, u, &mut { late }, true)?;
        if let Some(h_0) = surrogate_0 {
            let first = rows_of_each(b, [&mut *f, &mut *i, &mut *o, &mut *z], 0, n_batch)?;
            project(b, h_0, u, &mut { first }, true)?;
        }
        let cell = input_gated_scan(
            b,
            n_steps,
            [f, i, z],
            [bias(F)?, bias(I)?, bias(Z)?],
            cell_0,
        )?;
        let h = output_gate(b, o, bias(O)?, b.view(&cell), None)?;
        let state = LayerState::new(vec![
            last_step(b, &surrogate, n_batch)?,
            last_step(b, &cell, n_batch)?,
        ]);
        let [g, j, f, i, o, z] = gates;
        let cache = cache(
            b,
            NAME,
            (n_steps, n_batch),
            [g, j, f, i, o, z, surrogate, cell],
            initial,
        )?;
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
        const OP: &str = "GilrLstm::backward";
        let (m, n) = (self.input_size(), self.n());
        let finals = grad_final.map(|s| (s, self.state_dims(cache.dims().1)));
        let (n_steps, n_batch) = check_backward(b, OP, &cache, x, m, h, grad_h, n, finals)?;
        let n_rows = n_steps * n_batch;
        let ([mut g, mut j, mut f, mut i, mut o, mut z, surrogate, cell], initial) =
            cache.take::<8>(OP, NAME)?;
        let (surrogate_0, cell_0) = (
            state_part(b, initial.as_ref(), OP, 0)?,
            state_part(b, initial.as_ref(), OP, 1)?,
        );
        let (grad_surrogate_last, grad_cell_last) = (
            state_part(b, grad_final, OP, 0)?,
            state_part(b, grad_final, OP, 1)?,
        );
        let want_initial = initial.is_some();
        let (grad_cell, _) = output_gate_backward(b, &mut o, b.view(&cell), None, grad_h)?;
        let ends = ScanEnds {
            initial: cell_0,
            grad_last: grad_cell_last,
        };
        let grad_cell_0 = input_gated_scan_backward(
            b,
            n_steps,
            [&mut f, &mut i, &mut z],
            b.view(&cell),
            ends,
            b.view(&grad_cell),
            want_initial,
        )?;
        b.recycle(grad_cell);
        // ∂h̃_{t−1} = Σ_k ∂P_{k,t} U_kᵀ and ∂U_k += h̃_{t−1}ᵀ ∂P_{k,t}, t ≥ 1, then t = 0.
        let u = b.host(self.recurrent_weight.value.view());
        let shifted = n_rows - n_batch;
        let mut grad_surrogate = b.zeros(n_rows, n)?;
        {
            let late = rows_of_each_ref(b, [&f, &i, &o, &z], n_batch, shifted)?;
            project_backward(
                b,
                b.rows(b.view(&surrogate), 0, shifted)?,
                u,
                b.host_mut(self.recurrent_weight.grad.view_mut()),
                None,
                &late,
                b.rows_mut(b.view_mut(&mut grad_surrogate), 0, shifted)?,
            )?;
        }
        let mut grad_surrogate_0 = None;
        if let Some(h_0) = surrogate_0 {
            let first = rows_of_each_ref(b, [&f, &i, &o, &z], 0, n_batch)?;
            let mut grad_h_0 = b.zeros(n_batch, n)?;
            project_backward(
                b,
                h_0,
                u,
                b.host_mut(self.recurrent_weight.grad.view_mut()),
                None,
                &first,
                b.view_mut(&mut grad_h_0),
            )?;
            grad_surrogate_0 = Some(grad_h_0);
        }
        let ends = ScanEnds {
            initial: surrogate_0,
            grad_last: grad_surrogate_last,
        };
        let grad_scan_0 = gated_scan_backward(
            b,
            n_steps,
            &mut g,
            &mut j,
            Candidate::Tanh,
            b.view(&surrogate),
            ends,
            b.view(&grad_surrogate),
            want_initial,
        )?;
        if let (Some(total), Some(from_scan)) = (grad_surrogate_0.as_mut(), grad_scan_0) {
            b.add_assign(b.view(&from_scan), b.view_mut(total))?;
            b.recycle(from_scan);
        }
        recycle(b, [grad_surrogate, surrogate, cell]);
        let mut grad_x = b.zeros(n_rows, m)?;
        let gates = [g, j, f, i, o, z];
        project_backward(
            b,
            x,
            b.host(self.input_weight.value.view()),
            b.host_mut(self.input_weight.grad.view_mut()),
            Some(b.host_mut(self.bias.grad.view_mut().insert_axis(ndarray::Axis(0)))),
            &gates.each_ref().map(|p| b.view(p)),
            b.view_mut(&mut grad_x),
        )?;
        recycle(b, gates);
        let initial = match (grad_surrogate_0, grad_cell_0) {
            (Some(dh), Some(dc)) => Some(LayerState::new(vec![dh, dc])),
            _ => None,
        };
        Ok(LayerGrads {
            input: grad_x,
            initial,
        })
    }
}
