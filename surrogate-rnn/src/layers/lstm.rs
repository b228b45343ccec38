//! The LSTM baseline: non-linear, serial over time.

use ndarray::{s, Array1, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, Ix1, Ix2};
use scan_core::LinearScan;

use super::{check_backward, check_input, Layer};
use crate::init::Initializer;
use crate::ops::{add_column_sums, gemm, rows, sigmoid};
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::workspace::Workspace;
use crate::{ModelError, Param, Parameters, Real};

/// The standard LSTM, `m → n`, the serial baseline (cuDNN's cell):
///
/// ```text
/// f_t, i_t, o_t = σ(U_{f,i,o} h_{t-1} + V_{f,i,o} x_t + b_{f,i,o})
/// z_t = tanh(U_z h_{t-1} + V_z x_t + b_z)
/// c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t
/// h_t = o_t ⊙ tanh(c_t)                    (tanh on the cell, as cuDNN; h_0 = c_0 = 0)
/// ```
///
/// The input projections of all steps are one `(T·B, m)·(m, 4n)` product; then each step
/// costs one `(B, n)·(n, 4n)` product and one fused elementwise pass over its gates, all
/// in buffers allocated once per call. Gates are kept row-major `(T·B, 4n)` (`[f i o z]`)
/// so each step's block is contiguous.
///
/// Backward is backpropagation through time in the same tight loop:
/// `∂h_t = ∂out_t + ∂P_{t+1} Uᵀ`, `∂c_t = ∂h_t ⊙ o_t ⊙ (1 − tanh²c_t) + ∂c_{t+1} ⊙ f_{t+1}`,
/// `∂f = ∂c ⊙ c_{t-1}`, `∂i = ∂c ⊙ z`, `∂z = ∂c ⊙ i`, `∂o = ∂h ⊙ tanh c_t`, through the
/// activations to `∂P_t`; afterwards `∂U += h_{t-1}ᵀ∂P_t`, `∂V += xᵀ∂P`, `∂b += Σ∂P` and
/// `∂x = ∂P Vᵀ` as single large products.
#[derive(Clone, Debug)]
pub struct Lstm<E: Real> {
    /// `[V_f V_i V_o V_z]`, `(m, 4n)`.
    pub input_weight: Param<E, Ix2>,
    /// `[U_f U_i U_o U_z]`, `(n, 4n)`.
    pub recurrent_weight: Param<E, Ix2>,
    /// `[b_f b_i b_o b_z]`, `(4n)`.
    pub bias: Param<E, Ix1>,
}

/// What [`Lstm::forward`] keeps: the activated gates `(T·B, 4n)` and the cells `c`,
/// `5·T·B·n` elements.
#[derive(Debug)]
pub struct LstmCache<E> {
    gates: Array2<E>,
    cell: Array2<E>,
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

    fn n(&self) -> usize {
        self.recurrent_weight.value.nrows()
    }
}

params_from_fields!(Lstm: input_weight, recurrent_weight, bias);

impl<E: Real> Layer<E> for Lstm<E> {
    type Cache = LstmCache<E>;

    fn input_size(&self) -> usize {
        self.input_weight.value.nrows()
    }

    fn output_size(&self) -> usize {
        self.n()
    }

    unpooled_layer_entry_points!(LstmCache<E>);
}

impl<E: Real> Lstm<E> {
    pub(crate) fn forward_with(
        &self,
        _scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<(Array3<E>, LstmCache<E>), ModelError> {
        let (n_steps, n_batch) = check_input("Lstm::forward", &input, self.input_size())?;
        let n = self.n();
        let n_rows = n_steps * n_batch;
        let x = rows(input);
        let mut gates = ws.scratch((n_rows, 4 * n));
        for mut row in gates.rows_mut() {
            row.assign(&self.bias.value);
        }
        gemm(
            E::one(),
            &x.view(),
            &self.input_weight.value.view(),
            E::one(),
            &mut gates.view_mut(),
        );
        let mut cell = ws.scratch((n_rows, n));
        let mut h = ws.scratch((n_rows, n));
        let u = self.recurrent_weight.value.view();
        let gate_slice = gates.as_slice_mut().expect("fresh arrays are contiguous");
        let cell_slice = cell.as_slice_mut().expect("fresh arrays are contiguous");
        let h_slice = h.as_slice_mut().expect("fresh arrays are contiguous");
        let step_len = n_batch * n;
        for t in 0..n_steps {
            let pre = &mut gate_slice[t * 4 * step_len..(t + 1) * 4 * step_len];
            let (h_done, h_rest) = h_slice.split_at_mut(t * step_len);
            let (c_done, c_rest) = cell_slice.split_at_mut(t * step_len);
            if t > 0 {
                let previous = &h_done[(t - 1) * step_len..];
                let previous = ArrayView2::from_shape((n_batch, n), previous).expect("sized");
                let mut pre =
                    ArrayViewMut2::from_shape((n_batch, 4 * n), &mut *pre).expect("sized");
                gemm(E::one(), &previous, &u, E::one(), &mut pre);
            }
            let c_prev = if t > 0 {
                Some(&c_done[(t - 1) * step_len..])
            } else {
                None
            };
            for b in 0..n_batch {
                let p = &mut pre[b * 4 * n..(b + 1) * 4 * n];
                for j in 0..n {
                    let f = sigmoid(p[j]);
                    let i = sigmoid(p[n + j]);
                    let o = sigmoid(p[2 * n + j]);
                    let z = p[3 * n + j].tanh();
                    p[j] = f;
                    p[n + j] = i;
                    p[2 * n + j] = o;
                    p[3 * n + j] = z;
                    let previous = c_prev.map_or(E::zero(), |c| c[b * n + j]);
                    let c = f * previous + i * z;
                    c_rest[b * n + j] = c;
                    h_rest[b * n + j] = o * c.tanh();
                }
            }
        }
        Ok((
            crate::ops::to_3d(h, n_steps, n_batch),
            LstmCache { gates, cell },
        ))
    }

    pub(crate) fn backward_with(
        &mut self,
        _scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        output: ArrayView3<'_, E>,
        cache: LstmCache<E>,
        grad_output: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<Array3<E>, ModelError> {
        let (n_steps, n_batch) = check_backward(
            "Lstm::backward",
            &input,
            self.input_size(),
            &output,
            &grad_output,
            self.n(),
        )?;
        let n = self.n();
        let n_rows = n_steps * n_batch;
        let step_len = n_batch * n;
        let LstmCache { mut gates, cell } = cache;
        let dh_out = rows(grad_output);
        let dh_out = dh_out.as_standard_layout();
        let dh_out = dh_out.as_slice().expect("standard layout");
        let cell_slice = cell.as_slice().expect("fresh arrays are contiguous");
        let mut grad_recurrent = Array2::<E>::zeros((n_batch, n));
        let mut grad_cell_next = vec![E::zero(); step_len];
        let u = self.recurrent_weight.value.view();
        {
            let gate_slice = gates.as_slice_mut().expect("fresh arrays are contiguous");
            for t in (0..n_steps).rev() {
                let pre = &mut gate_slice[t * 4 * step_len..(t + 1) * 4 * step_len];
                let dh_rec = grad_recurrent.as_slice().expect("contiguous");
                for b in 0..n_batch {
                    let p = &mut pre[b * 4 * n..(b + 1) * 4 * n];
                    for j in 0..n {
                        let k = b * n + j;
                        let row = t * step_len + k;
                        let dh = dh_out[row] + dh_rec[k];
                        let (f, i, o, z) = (p[j], p[n + j], p[2 * n + j], p[3 * n + j]);
                        let c = cell_slice[row];
                        let c_prev = if t > 0 {
                            cell_slice[row - step_len]
                        } else {
                            E::zero()
                        };
                        let tc = c.tanh();
                        let dc = dh * o * (E::one() - tc * tc) + grad_cell_next[k];
                        grad_cell_next[k] = dc * f;
                        p[j] = dc * c_prev * f * (E::one() - f);
                        p[n + j] = dc * z * i * (E::one() - i);
                        p[2 * n + j] = dh * tc * o * (E::one() - o);
                        p[3 * n + j] = dc * i * (E::one() - z * z);
                    }
                }
                if t > 0 {
                    let dp = ArrayView2::from_shape((n_batch, 4 * n), &*pre).expect("sized");
                    gemm(
                        E::one(),
                        &dp,
                        &u.t(),
                        E::zero(),
                        &mut grad_recurrent.view_mut(),
                    );
                }
            }
        }
        let h = rows(output);
        let shifted = n_rows.saturating_sub(n_batch);
        gemm(
            E::one(),
            &h.slice(s![..shifted, ..]).t(),
            &gates.slice(s![n_batch.min(n_rows).., ..]),
            E::one(),
            &mut self.recurrent_weight.grad.view_mut(),
        );
        let x = rows(input);
        gemm(
            E::one(),
            &x.t(),
            &gates.view(),
            E::one(),
            &mut self.input_weight.grad.view_mut(),
        );
        add_column_sums(self.bias.grad.view_mut(), gates.view());
        let mut grad_x = ws.scratch((n_rows, self.input_size()));
        gemm(
            E::one(),
            &gates.view(),
            &self.input_weight.value.t(),
            E::zero(),
            &mut grad_x.view_mut(),
        );
        ws.give_back(gates);
        ws.give_back(cell);
        Ok(crate::ops::to_3d(grad_x, n_steps, n_batch))
    }
}

impl<E: Real> LstmCache<E> {
    /// Gives the cached buffers back to `ws` (when no backward pass will use them).
    pub(crate) fn give_back(self, ws: &Workspace<E>) {
        ws.give_back(self.gates);
        ws.give_back(self.cell);
    }
}
