//! The LSTM with a GILR surrogate for its recurrent input.

use ndarray::{s, Array1, Ix1, Ix2};

use super::recurrence::prelude::*;

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
/// [`LayerKind::GilrLstmTanh`](crate::LayerKind::GilrLstmTanh) opts into the bounded
/// output `h_t = o_t ⊙ tanh(c_t)` (the LSTM's): `c` still comes from the linear scan, only
/// what leaves the layer is squashed, so `|h| < 1` however long the sequence.
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
    /// `h = o ⊙ tanh(c)` instead of the paper's `h = o ⊙ c`.
    bounded_output: bool,
}

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
            bounded_output: false,
        }
    }
}

layer_from_recurrence!(GilrLstm: input_weight, recurrent_weight, bias);

impl<E: Real> Recurrence<E> for GilrLstm<E> {
    fn sizes(&self) -> (usize, usize) {
        (
            self.input_weight.value.nrows(),
            self.recurrent_weight.value.nrows(),
        )
    }

    fn parts(&self, n_batch: usize) -> Vec<(usize, usize)> {
        vec![(n_batch, self.sizes().1); 2]
    }

    fn run<B: Backend<E>>(&self, b: &B, run: Run<'_, E, B>) -> Forward<E, B> {
        let (n, n_batch) = (self.sizes().1, run.n_batch);
        let mut gates = project_input::<E, B, 6>(b, run.x, &self.input_weight)?;
        let bias = |k| bias_block(b, self.bias.value.view(), k, n);
        let [g, j, f, i, o, z] = &mut gates;
        let (surrogate, entered) = gated_scan(
            b,
            run.n_steps,
            g,
            bias(G)?,
            j,
            bias(J)?,
            Candidate::Tanh,
            run.initial(0),
        )?;
        // h̃ before the first step: the incoming h̃_0, or the previous part's last h̃.
        let surrogate_0 = run.entering(b, &entered, 0);
        // P_{f,i,o,z} at step t += h̃_{t−1}·U: rows B.. from h̃ rows ..(T−1)B, rows ..B
        // from the incoming h̃_0.
        let u = b.host(self.recurrent_weight.value.view());
        let shifted = run.rows() - n_batch;
        let previous = b.rows(b.view(&surrogate), 0, shifted)?;
        let late = rows_of_each(b, [&mut *f, &mut *i, &mut *o, &mut *z], n_batch, shifted)?;
        project(b, previous, u, &mut { late }, true)?;
        if let Some(h_0) = surrogate_0 {
            let first = rows_of_each(b, [&mut *f, &mut *i, &mut *o, &mut *z], 0, n_batch)?;
            project(b, h_0, u, &mut { first }, true)?;
        }
        let biases = [bias(F)?, bias(I)?, bias(Z)?];
        let (cell, cell_0) = input_gated_scan(b, run.n_steps, [f, i, z], biases, run.initial(1))?;
        let h = self.output(b, o, bias(O)?, &cell)?;
        let state = vec![
            last_step(b, &surrogate, n_batch)?,
            last_step(b, &cell, n_batch)?,
        ];
        let [g, j, f, i, o, z] = gates;
        let buffers = vec![g, j, f, i, o, z, surrogate, cell];
        ran(h, buffers, state).map(|r| r.entered(vec![entered, cell_0]))
    }

    fn variant(&self) -> Option<&'static str> {
        self.bounded_output.then_some("GilrLstmTanh")
    }

    fn run_backward<B: Backend<E>>(&mut self, b: &B, mut run: BackRun<'_, E, B>) -> Back<E, B> {
        let ((m, n), n_batch, n_steps) = (self.sizes(), run.n_batch, run.n_steps);
        let [mut g, mut j, mut f, mut i, mut o, mut z, surrogate, cell] = run.take_buffers()?;
        let grad_cell = self.output_backward(b, &mut o, &cell, run.grad_h)?;
        let grad = run.scan_grad(b, b.view(&cell), b.view(&grad_cell), 1);
        let grad_cell_0 = input_gated_scan_backward(b, n_steps, [&mut f, &mut i, &mut z], grad)?;
        b.recycle(grad_cell);
        // ∂h̃_{t−1} = Σ_k ∂P_{k,t} U_kᵀ and ∂U_k += h̃_{t−1}ᵀ ∂P_{k,t}: t ≥ 1, then t = 0.
        let shifted = run.rows() - n_batch;
        let mut grad_surrogate = b.zeros(run.rows(), n)?;
        let late = rows_of_each_ref(b, [&f, &i, &o, &z], n_batch, shifted)?;
        let previous = b.rows(b.view(&surrogate), 0, shifted)?;
        let grad_previous = b.rows_mut(b.view_mut(&mut grad_surrogate), 0, shifted)?;
        self.recurrent_backward(b, previous, &late, grad_previous)?;
        let mut grad_surrogate_0 = None;
        if let Some(h_0) = run.initial(0) {
            let first = rows_of_each_ref(b, [&f, &i, &o, &z], 0, n_batch)?;
            let mut grad_h_0 = b.zeros(n_batch, n)?;
            self.recurrent_backward(b, h_0, &first, b.view_mut(&mut grad_h_0))?;
            grad_surrogate_0 = Some(grad_h_0);
        }
        // The look-back's ∂h̃_0 goes to the part before (where the sequence is split);
        // the next part's lands on the last step's h̃ here.
        let mut grad_surrogate_0 = b.carry_backward(None, (n_batch, n), |from_next| {
            if let Some(from_next) = from_next {
                let last = b.rows_mut(b.view_mut(&mut grad_surrogate), shifted, n_batch)?;
                b.add_assign(from_next, last)?;
            }
            Ok(grad_surrogate_0)
        })?;
        let grad = run.scan_grad(b, b.view(&surrogate), b.view(&grad_surrogate), 0);
        let from_scan = gated_scan_backward(b, n_steps, [&mut g, &mut j], Candidate::Tanh, grad)?;
        if let (Some(total), Some(from_scan)) = (grad_surrogate_0.as_mut(), from_scan) {
            b.add_assign(b.view(&from_scan), b.view_mut(total))?;
            b.recycle(from_scan);
        }
        recycle(b, [grad_surrogate, surrogate, cell]);
        let (w, bias, grad_x) = (
            &mut self.input_weight,
            &mut self.bias,
            run.grad_input(b, m, true)?,
        );
        let gates = [g, j, f, i, o, z];
        let grad_x = project_input_backward(b, run.x, w, bias, &gates, grad_x)?;
        recycle(b, gates);
        let initial = grad_surrogate_0
            .zip(grad_cell_0)
            .map(|(dh, dc)| vec![dh, dc]);
        Ok(Grads {
            input: grad_x,
            initial,
        })
    }
}

impl<E: Real> GilrLstm<E> {
    /// Backward of the recurrent projection `P_{f,i,o,z} += h̃_prev·U`.
    fn recurrent_backward<B: Backend<E>>(
        &mut self,
        b: &B,
        previous: B::View<'_>,
        grad_gates: &[B::View<'_>],
        grad_previous: B::ViewMut<'_>,
    ) -> Result<(), ModelError> {
        let u = b.host(self.recurrent_weight.value.view());
        let grad_u = b.host_mut(self.recurrent_weight.grad.view_mut());
        project_backward(
            b,
            previous,
            u,
            grad_u,
            None,
            grad_gates,
            Some(grad_previous),
        )
    }

    /// The layer with the bounded output `h = o ⊙ tanh(c)`.
    pub(crate) fn with_bounded_output(mut self) -> Self {
        self.bounded_output = true;
        self
    }

    /// `h = o ⊙ c`, or `o ⊙ tanh(c)` with the bounded output; activates `o` in place.
    fn output<B: Backend<E>>(
        &self,
        b: &B,
        o: &mut B::Matrix,
        bias: B::View<'_>,
        cell: &B::Matrix,
    ) -> Result<B::Matrix, ModelError> {
        if !self.bounded_output {
            return output_gate(b, o, bias, b.view(cell), None);
        }
        let squashed = tanh_of(b, cell)?;
        let h = output_gate(b, o, bias, b.view(&squashed), None);
        b.recycle(squashed);
        h
    }

    /// Backward of [`GilrLstm::output`]: `∂c = ∂h ⊙ o` (linear) or
    /// `∂c = ∂h ⊙ o ⊙ (1 − tanh² c)` (bounded, `tanh c` recomputed rather than stored);
    /// overwrites `o` with `∂P_o`.
    fn output_backward<B: Backend<E>>(
        &self,
        b: &B,
        o: &mut B::Matrix,
        cell: &B::Matrix,
        grad_h: B::View<'_>,
    ) -> Result<B::Matrix, ModelError> {
        if !self.bounded_output {
            return Ok(output_gate_backward(b, o, b.view(cell), None, grad_h)?.0);
        }
        let squashed = tanh_of(b, cell)?;
        let (mut grad_cell, _) = output_gate_backward(b, o, b.view(&squashed), None, grad_h)?;
        b.tanh_backward(b.view(&squashed), b.view_mut(&mut grad_cell))?;
        b.recycle(squashed);
        Ok(grad_cell)
    }
}

/// `tanh` of every element of `x`, in a new matrix.
fn tanh_of<E: Real, B: Backend<E>>(b: &B, x: &B::Matrix) -> Result<B::Matrix, ModelError> {
    let (rows, n) = b.matrix_dims(x);
    let mut y = b.scratch(rows, n)?;
    b.tanh(b.view(x), b.view_mut(&mut y))?;
    Ok(y)
}
