//! The LSTM with a GILR surrogate for its recurrent input.

use ndarray::{s, Array1, Array2, Array3, ArrayView3, Ix1, Ix2};
use scan_core::LinearScan;

use super::{check_backward, check_input, Layer};
use crate::init::Initializer;
use crate::ops::{
    block, gate_blocks_mut, gemm, par_zip, project_gates, project_gates_backward, rows, rows_of,
    scan_backward, scan_forward, sigmoid,
};
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::workspace::Workspace;
use crate::{ModelError, Param, Parameters, Real};

/// GILR-LSTM, `m → n` (PAPER.md §2): an LSTM whose gates read a GILR surrogate `h̃`
/// instead of the LSTM's own output, so both recurrences are linear and run on the scan:
///
/// ```text
/// g_t = σ(V_g x_t + b_g)      j_t = tanh(V_j x_t + b_j)
/// h̃_t = g_t ⊙ h̃_{t-1} + (1 − g_t) ⊙ j_t                     (scan 1, h̃_0 = 0)
/// f_t, i_t, o_t = σ(U_{f,i,o} h̃_{t-1} + V_{f,i,o} x_t + b_{f,i,o})
/// z_t = tanh(U_z h̃_{t-1} + V_z x_t + b_z)
/// c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t                            (scan 2, c_0 = 0)
/// h_t = o_t ⊙ c_t
/// ```
///
/// **Choice:** the gates read `h̃_{t-1}`, as PAPER.md's equations write it (the authors'
/// released code feeds `h̃_t`). Then `h̃` is a strict summary of the past, exactly like the
/// LSTM state it replaces, and the step-t gates still see `x_t` through `V`. The product
/// `U h̃_{t-1}` for all steps is one `(T·B, n)·(n, 4n)` product on `h̃` shifted by one
/// step (rows `0..(T−1)B` feed rows `B..TB`), with no copy.
///
/// Parameters: `input_weight = [V_g V_j V_f V_i V_o V_z]` `(m, 6n)`,
/// `recurrent_weight = [U_f U_i U_o U_z]` `(n, 4n)`, `bias` `(6n)` in the same gate order.
///
/// Backward (scan 2 then scan 1, each giving `G = ∂impulse` and `∂decay = state_{t-1}⊙G`):
/// `∂o = ∂h ⊙ c`, `∂c = ∂h ⊙ o` feeds scan 2; `∂f = ∂decay₂`, `∂i = G₂ ⊙ z`,
/// `∂z = G₂ ⊙ i`; through σ/tanh to `∂P_{f,i,o,z}`; `∂h̃_{t-1} = Σ ∂P_{·,t} U_·ᵀ` feeds
/// scan 1, and `∂U += h̃_{t-1}ᵀ ∂P_t`; `∂g = ∂decay₁ − G₁ ⊙ j`, `∂j = G₁ ⊙ (1 − g)`;
/// finally `∂V += xᵀ∂P`, `∂b += Σ∂P`, `∂x = ∂P Vᵀ`.
#[derive(Clone, Debug)]
pub struct GilrLstm<E: Real> {
    /// `[V_g V_j V_f V_i V_o V_z]`, `(m, 6n)`.
    pub input_weight: Param<E, Ix2>,
    /// `[U_f U_i U_o U_z]`, `(n, 4n)`.
    pub recurrent_weight: Param<E, Ix2>,
    /// `[b_g b_j b_f b_i b_o b_z]`, `(6n)`.
    pub bias: Param<E, Ix1>,
}

/// What [`GilrLstm::forward`] keeps for the backward pass: the six activated gates, `h̃`
/// and `c`: `8·T·B·n` elements.
#[derive(Debug)]
pub struct GilrLstmCache<E> {
    gates: Array3<E>,
    surrogate: Array2<E>,
    cell: Array2<E>,
}

const G: usize = 0;
const J: usize = 1;
const F: usize = 2;
const I: usize = 3;

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
    type Cache = GilrLstmCache<E>;

    fn input_size(&self) -> usize {
        self.input_weight.value.nrows()
    }

    fn output_size(&self) -> usize {
        self.n()
    }

    unpooled_layer_entry_points!(GilrLstmCache<E>);
}

impl<E: Real> GilrLstm<E> {
    pub(crate) fn forward_with(
        &self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<(Array3<E>, GilrLstmCache<E>), ModelError> {
        let (n_steps, n_batch) = check_input("GilrLstm::forward", &input, self.input_size())?;
        let n = self.n();
        let n_rows = n_steps * n_batch;
        let shifted = n_rows.saturating_sub(n_batch);
        let x = rows(input);
        let mut gates = ws.scratch((6, n_rows, n));
        project_gates(x.view(), self.input_weight.value.view(), &mut gates);
        let b = self.bias.value.view();
        let bias = |k: usize| b.slice_move(s![k * n..(k + 1) * n]);
        let u = self.recurrent_weight.value.view();
        let mut surrogate = ws.scratch((n_rows, n));
        let mut cell = ws.scratch((n_rows, n));
        let mut impulse = ws.scratch((n_rows, n));
        let [mut g, mut j, mut f, mut i, mut o, mut z] = gate_blocks_mut::<E, 6>(&mut gates);
        // One pass: g = σ(P_g), j = tanh(P_j) and scan 1's impulse (1 − g) ⊙ j.
        let (b_g, b_j) = (bias(G), bias(J));
        par_zip!(
            (
                g.view_mut(),
                j.view_mut(),
                &mut impulse,
                rows_of(&b_g, n_rows),
                rows_of(&b_j, n_rows),
            ),
            |g, j, x, &b_g, &b_j| {
                let (gv, jv) = (sigmoid(*g + b_g), (*j + b_j).tanh());
                *g = gv;
                *j = jv;
                *x = (E::one() - gv) * jv;
            }
        );
        scan_forward(
            scan,
            n_steps,
            g.view(),
            impulse.view(),
            surrogate.view_mut(),
        )?;
        let previous = surrogate.slice(s![..shifted, ..]);
        for (k, p) in [&mut f, &mut i, &mut o, &mut z].into_iter().enumerate() {
            gemm(
                E::one(),
                &previous,
                &block(u, k, n),
                E::one(),
                &mut p.slice_mut(s![n_batch.min(n_rows).., ..]),
            );
        }
        // f = σ(P_f); then i = σ(P_i), z = tanh(P_z) and scan 2's impulse i ⊙ z in one pass.
        let (b_f, b_i, b_o, b_z) = (bias(F), bias(I), bias(I + 1), bias(I + 2));
        par_zip!((f.view_mut(), rows_of(&b_f, n_rows)), |f, &b_f| {
            *f = sigmoid(*f + b_f)
        });
        par_zip!(
            (
                i.view_mut(),
                z.view_mut(),
                &mut impulse,
                rows_of(&b_i, n_rows),
                rows_of(&b_z, n_rows),
            ),
            |i, z, x, &b_i, &b_z| {
                let (iv, zv) = (sigmoid(*i + b_i), (*z + b_z).tanh());
                *i = iv;
                *z = zv;
                *x = iv * zv;
            }
        );
        scan_forward(scan, n_steps, f.view(), impulse.view(), cell.view_mut())?;
        // o = σ(P_o) and h = o ⊙ c in one pass, into the impulse buffer (no longer needed).
        let mut h = impulse;
        par_zip!(
            (&mut h, o.view_mut(), rows_of(&b_o, n_rows), &cell),
            |h, o, &b_o, &c| {
                let ov = sigmoid(*o + b_o);
                *o = ov;
                *h = ov * c;
            }
        );
        Ok((
            crate::ops::to_3d(h, n_steps, n_batch),
            GilrLstmCache {
                gates,
                surrogate,
                cell,
            },
        ))
    }

    pub(crate) fn backward_with(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        output: ArrayView3<'_, E>,
        cache: GilrLstmCache<E>,
        grad_output: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<Array3<E>, ModelError> {
        let (n_steps, n_batch) = check_backward(
            "GilrLstm::backward",
            &input,
            self.input_size(),
            &output,
            &grad_output,
            self.n(),
        )?;
        let n = self.n();
        let n_rows = n_steps * n_batch;
        let shifted = n_rows.saturating_sub(n_batch);
        let GilrLstmCache {
            mut gates,
            surrogate,
            cell,
        } = cache;
        let dh = rows(grad_output);
        let mut grad_state = ws.scratch((n_rows, n));
        let mut grad_decay = ws.scratch((n_rows, n));
        let mut grad_impulse = ws.scratch((n_rows, n));
        {
            let [_, _, f, i, mut o, z] = gate_blocks_mut::<E, 6>(&mut gates);
            // ∂c (direct) = ∂h ⊙ o; ∂P_o = ∂h ⊙ c ⊙ σ'(o).
            par_zip!((&mut grad_state, &mut o, &dh, &cell), |dc, o, &dh, &c| {
                let ov = *o;
                *dc = dh * ov;
                *o = dh * c * ov * (E::one() - ov);
            });
            scan_backward(
                scan,
                n_steps,
                f.view(),
                cell.view(),
                grad_state.view(),
                grad_decay.view_mut(),
                grad_impulse.view_mut(),
            )?;
            par_zip!(
                (f, i, z, &grad_decay, &grad_impulse),
                |f, i, z, &da, &dx| {
                    let (fv, iv, zv) = (*f, *i, *z);
                    *f = da * fv * (E::one() - fv);
                    *i = dx * zv * iv * (E::one() - iv);
                    *z = dx * iv * (E::one() - zv * zv);
                }
            );
        }
        // ∂h̃_{t-1} = Σ_k ∂P_{k,t} U_kᵀ, ∂U_k += h̃_{t-1}ᵀ ∂P_{k,t}, for t ≥ 1.
        grad_state.fill(E::zero());
        {
            let previous = surrogate.slice(s![..shifted, ..]);
            let u = self.recurrent_weight.value.view();
            let start = n_batch.min(n_rows);
            for k in 0..4 {
                let dp = gates.index_axis(ndarray::Axis(0), F + k);
                let dp = dp.slice(s![start.., ..]);
                gemm(
                    E::one(),
                    &dp,
                    &block(u, k, n).t(),
                    E::one(),
                    &mut grad_state.slice_mut(s![..shifted, ..]),
                );
                gemm(
                    E::one(),
                    &previous.t(),
                    &dp,
                    E::one(),
                    &mut self
                        .recurrent_weight
                        .grad
                        .slice_mut(s![.., k * n..(k + 1) * n]),
                );
            }
        }
        {
            let [g, j, _, _, _, _] = gate_blocks_mut::<E, 6>(&mut gates);
            scan_backward(
                scan,
                n_steps,
                g.view(),
                surrogate.view(),
                grad_state.view(),
                grad_decay.view_mut(),
                grad_impulse.view_mut(),
            )?;
            par_zip!((g, j, &grad_decay, &grad_impulse), |g, j, &da, &dx| {
                let (gv, jv) = (*g, *j);
                *g = (da - dx * jv) * gv * (E::one() - gv);
                *j = dx * (E::one() - gv) * (E::one() - jv * jv);
            });
        }
        for buffer in [grad_state, grad_decay, grad_impulse, surrogate, cell] {
            ws.give_back(buffer);
        }
        let x = rows(input);
        let mut grad_x = ws.zeros((n_rows, self.input_size()));
        project_gates_backward(
            x.view(),
            self.input_weight.value.view(),
            &mut self.input_weight.grad,
            &mut self.bias.grad,
            &gates,
            &mut grad_x.view_mut(),
        );
        ws.give_back(gates);
        Ok(crate::ops::to_3d(grad_x, n_steps, n_batch))
    }
}

impl<E: Real> GilrLstmCache<E> {
    /// Gives the cached buffers back to `ws` (when no backward pass will use them).
    pub(crate) fn give_back(self, ws: &Workspace<E>) {
        ws.give_back(self.gates);
        ws.give_back(self.surrogate);
        ws.give_back(self.cell);
    }
}
