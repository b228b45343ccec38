//! The quasi-recurrent layer (Bradbury et al. 2017).

use ndarray::{s, Array1, Array2, Array3, ArrayView3, Ix1, Ix3};
use scan_core::LinearScan;

use super::{check_backward, check_input, Layer};
use crate::init::Initializer;
use crate::ops::{
    add_column_sums, block, gate_blocks_mut, gemm, par_zip, rows, rows_of, scan_backward,
    scan_forward, sigmoid,
};
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::workspace::Workspace;
use crate::{ModelError, Param, Parameters, Real};

/// QRNN with filter width k, `m → n`, fo-pooling (PAPER.md §2):
///
/// ```text
/// P_t = Σ_{s=0}^{k-1} x_{t-s} W_s + b      (causal convolution; x_{t<0} = 0)
/// z_t = tanh(P_z),  f_t = σ(P_f),  o_t = σ(P_o)
/// c_t = f_t ⊙ c_{t-1} + (1 − f_t) ⊙ z_t     (scan, c_0 = 0)
/// h_t = o_t ⊙ c_t
/// ```
///
/// The convolution is `k` matrix products per gate over row-shifted views of the input
/// (tap s maps rows `0..(T−s)B` to rows `sB..TB`), with no im2col copy.
///
/// Backward: `∂o = ∂h ⊙ c`, `∂c = ∂h ⊙ o` feeds the backward scan (`G`, `∂decay`);
/// `∂f = ∂decay − G ⊙ z`, `∂z = G ⊙ (1 − f)`; through the activations to `∂P`; then per
/// tap `∂W_s += x_{·−s}ᵀ ∂P`, `∂x_{·−s} += ∂P W_sᵀ`, and `∂b += Σ ∂P`.
#[derive(Clone, Debug)]
pub struct Qrnn<E: Real> {
    /// `W_s = [W_z W_f W_o]` per tap s, `(k, m, 3n)`; tap s reads `x_{t-s}`.
    pub filter: Param<E, Ix3>,
    /// `[b_z b_f b_o]`, `(3n)`.
    pub bias: Param<E, Ix1>,
}

/// What [`Qrnn::forward`] keeps: the gates `z, f, o` and `c`, `4·T·B·n` elements.
#[derive(Debug)]
pub struct QrnnCache<E> {
    gates: Array3<E>,
    cell: Array2<E>,
}

impl<E: Real> Qrnn<E> {
    pub(crate) fn init(init: &mut Initializer, width: usize, m: usize, n: usize) -> Self {
        let filter = init.glorot_filter(width, m, 3, n);
        let mut bias = Array1::zeros(3 * n);
        init.decay_bias(bias.slice_mut(s![n..2 * n]));
        Self {
            filter: Param::new(filter),
            bias: Param::new(bias),
        }
    }

    /// The filter width k.
    pub fn width(&self) -> usize {
        self.filter.value.dim().0
    }

    fn n(&self) -> usize {
        self.bias.value.len() / 3
    }
}

params_from_fields!(Qrnn: filter, bias);

impl<E: Real> Layer<E> for Qrnn<E> {
    type Cache = QrnnCache<E>;

    fn input_size(&self) -> usize {
        self.filter.value.dim().1
    }

    fn output_size(&self) -> usize {
        self.n()
    }

    unpooled_layer_entry_points!(QrnnCache<E>);
}

impl<E: Real> Qrnn<E> {
    pub(crate) fn forward_with(
        &self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<(Array3<E>, QrnnCache<E>), ModelError> {
        let (n_steps, n_batch) = check_input("Qrnn::forward", &input, self.input_size())?;
        let n = self.n();
        let n_rows = n_steps * n_batch;
        let x = rows(input);
        let mut gates = ws.zeros((3, n_rows, n));
        for tap in 0..self.width().min(n_steps) {
            let source = x.slice(s![..n_rows - tap * n_batch, ..]);
            let w = self.filter.value.index_axis(ndarray::Axis(0), tap);
            for (k, mut out) in gates.outer_iter_mut().enumerate() {
                gemm(
                    E::one(),
                    &source,
                    &block(w, k, n),
                    E::one(),
                    &mut out.slice_mut(s![tap * n_batch.., ..]),
                );
            }
        }
        let b = self.bias.value.view();
        let (b_z, b_f, b_o) = (
            b.slice(s![..n]),
            b.slice(s![n..2 * n]),
            b.slice(s![2 * n..]),
        );
        let [mut z, mut f, mut o] = gate_blocks_mut::<E, 3>(&mut gates);
        let mut impulse = ws.scratch((n_rows, n));
        // One pass: z = tanh(P_z), f = σ(P_f) and the impulse (1 − f) ⊙ z.
        par_zip!(
            (
                z.view_mut(),
                f.view_mut(),
                &mut impulse,
                rows_of(&b_z, n_rows),
                rows_of(&b_f, n_rows),
            ),
            |z, f, x, &b_z, &b_f| {
                let (zv, fv) = ((*z + b_z).tanh(), sigmoid(*f + b_f));
                *z = zv;
                *f = fv;
                *x = (E::one() - fv) * zv;
            }
        );
        let mut cell = ws.scratch((n_rows, n));
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
            QrnnCache { gates, cell },
        ))
    }

    pub(crate) fn backward_with(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        output: ArrayView3<'_, E>,
        cache: QrnnCache<E>,
        grad_output: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<Array3<E>, ModelError> {
        let (n_steps, n_batch) = check_backward(
            "Qrnn::backward",
            &input,
            self.input_size(),
            &output,
            &grad_output,
            self.n(),
        )?;
        let n = self.n();
        let n_rows = n_steps * n_batch;
        let QrnnCache { mut gates, cell } = cache;
        let dh = rows(grad_output);
        let mut grad_state = ws.scratch((n_rows, n));
        let mut grad_decay = ws.scratch((n_rows, n));
        let mut grad_impulse = ws.scratch((n_rows, n));
        {
            let [z, f, mut o] = gate_blocks_mut::<E, 3>(&mut gates);
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
            par_zip!((z, f, &grad_decay, &grad_impulse), |z, f, &da, &dx| {
                let (zv, fv) = (*z, *f);
                *f = (da - dx * zv) * fv * (E::one() - fv);
                *z = dx * (E::one() - fv) * (E::one() - zv * zv);
            });
        }
        for buffer in [grad_state, grad_decay, grad_impulse, cell] {
            ws.give_back(buffer);
        }
        let x = rows(input);
        let m = self.input_size();
        let mut grad_x = ws.zeros((n_rows, m));
        for tap in 0..self.width().min(n_steps) {
            let source = x.slice(s![..n_rows - tap * n_batch, ..]);
            let w = self.filter.value.index_axis(ndarray::Axis(0), tap);
            let mut gw = self.filter.grad.index_axis_mut(ndarray::Axis(0), tap);
            for (k, dp) in gates.outer_iter().enumerate() {
                let dp = dp.slice(s![tap * n_batch.., ..]);
                gemm(
                    E::one(),
                    &source.t(),
                    &dp,
                    E::one(),
                    &mut gw.slice_mut(s![.., k * n..(k + 1) * n]),
                );
                gemm(
                    E::one(),
                    &dp,
                    &block(w, k, n).t(),
                    E::one(),
                    &mut grad_x.slice_mut(s![..n_rows - tap * n_batch, ..]),
                );
            }
        }
        for (k, dp) in gates.outer_iter().enumerate() {
            add_column_sums(self.bias.grad.slice_mut(s![k * n..(k + 1) * n]), dp);
        }
        ws.give_back(gates);
        Ok(crate::ops::to_3d(grad_x, n_steps, n_batch))
    }
}

impl<E: Real> QrnnCache<E> {
    /// Gives the cached buffers back to `ws` (when no backward pass will use them).
    pub(crate) fn give_back(self, ws: &Workspace<E>) {
        ws.give_back(self.gates);
        ws.give_back(self.cell);
    }
}
