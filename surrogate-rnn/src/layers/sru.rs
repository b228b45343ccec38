//! The simple recurrent unit (Lei & Zhang 2017), highway form.

use ndarray::{s, Array1, Array2, Array3, ArrayView3, Ix1, Ix2};
use scan_core::LinearScan;

use super::{check_backward, check_input, Layer};
use crate::init::Initializer;
use crate::ops::{
    gate_blocks_mut, par_zip, project_gates, project_gates_backward, rows, rows_of, scan_backward,
    scan_forward, sigmoid,
};
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::workspace::Workspace;
use crate::{ModelError, Param, Parameters, Real};

/// SRU, `n → n` (PAPER.md §2; the highway needs input size = hidden size):
///
/// ```text
/// x̃_t = W x_t + b_x,  f_t = σ(W_f x_t + b_f),  r_t = σ(W_r x_t + b_r)
/// c_t = f_t ⊙ c_{t-1} + (1 − f_t) ⊙ x̃_t      (scan, c_0 = 0)
/// h_t = r_t ⊙ c_t + (1 − r_t) ⊙ x_t
/// ```
///
/// (`b_x` is an addition to the paper's `x̃_t = W x_t`, initialised to zero.)
///
/// Backward: `∂r = ∂h ⊙ (c − x)`, `∂c = ∂h ⊙ r` feeds the backward scan (`G`, `∂decay`),
/// `∂f = ∂decay − G ⊙ x̃`, `∂x̃ = G ⊙ (1 − f)`; then `∂W += xᵀ∂P`, `∂b += Σ∂P` and
/// `∂x = ∂P Wᵀ + ∂h ⊙ (1 − r)`.
#[derive(Clone, Debug)]
pub struct Sru<E: Real> {
    /// `[W W_f W_r]`, `(n, 3n)`.
    pub input_weight: Param<E, Ix2>,
    /// `[b_x b_f b_r]`, `(3n)`.
    pub bias: Param<E, Ix1>,
}

/// What [`Sru::forward`] keeps: `x̃, f, r` and `c`, `4·T·B·n` elements.
#[derive(Debug)]
pub struct SruCache<E> {
    gates: Array3<E>,
    cell: Array2<E>,
}

impl<E: Real> Sru<E> {
    pub(crate) fn init(init: &mut Initializer, n: usize) -> Self {
        let input_weight = init.glorot_gates(n, 3, n);
        let mut bias = Array1::zeros(3 * n);
        init.decay_bias(bias.slice_mut(s![n..2 * n]));
        Self {
            input_weight: Param::new(input_weight),
            bias: Param::new(bias),
        }
    }

    fn n(&self) -> usize {
        self.input_weight.value.nrows()
    }
}

params_from_fields!(Sru: input_weight, bias);

impl<E: Real> Layer<E> for Sru<E> {
    type Cache = SruCache<E>;

    fn input_size(&self) -> usize {
        self.n()
    }

    fn output_size(&self) -> usize {
        self.n()
    }

    unpooled_layer_entry_points!(SruCache<E>);
}

impl<E: Real> Sru<E> {
    pub(crate) fn forward_with(
        &self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<(Array3<E>, SruCache<E>), ModelError> {
        let (n_steps, n_batch) = check_input("Sru::forward", &input, self.n())?;
        let n = self.n();
        let n_rows = n_steps * n_batch;
        let x = rows(input);
        let mut gates = ws.scratch((3, n_rows, n));
        project_gates(x.view(), self.input_weight.value.view(), &mut gates);
        let b = self.bias.value.view();
        let (b_x, b_f, b_r) = (
            b.slice(s![..n]),
            b.slice(s![n..2 * n]),
            b.slice(s![2 * n..]),
        );
        let [mut xt, mut f, mut r] = gate_blocks_mut::<E, 3>(&mut gates);
        let mut impulse = ws.scratch((n_rows, n));
        // One pass: x̃ = P_x, f = σ(P_f) and the impulse (1 − f) ⊙ x̃.
        par_zip!(
            (
                xt.view_mut(),
                f.view_mut(),
                &mut impulse,
                rows_of(&b_x, n_rows),
                rows_of(&b_f, n_rows),
            ),
            |xt, f, v, &b_x, &b_f| {
                let (xv, fv) = (*xt + b_x, sigmoid(*f + b_f));
                *xt = xv;
                *f = fv;
                *v = (E::one() - fv) * xv;
            }
        );
        let mut cell = ws.scratch((n_rows, n));
        scan_forward(scan, n_steps, f.view(), impulse.view(), cell.view_mut())?;
        // r = σ(P_r) and the highway output in one pass, into the impulse buffer.
        let mut h = impulse;
        par_zip!(
            (&mut h, r.view_mut(), rows_of(&b_r, n_rows), &cell, &x),
            |h, r, &b_r, &c, &x| {
                let rv = sigmoid(*r + b_r);
                *r = rv;
                *h = rv * c + (E::one() - rv) * x;
            }
        );
        Ok((
            crate::ops::to_3d(h, n_steps, n_batch),
            SruCache { gates, cell },
        ))
    }

    pub(crate) fn backward_with(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        output: ArrayView3<'_, E>,
        cache: SruCache<E>,
        grad_output: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<Array3<E>, ModelError> {
        let (n_steps, n_batch) = check_backward(
            "Sru::backward",
            &input,
            self.n(),
            &output,
            &grad_output,
            self.n(),
        )?;
        let n = self.n();
        let n_rows = n_steps * n_batch;
        let SruCache { mut gates, cell } = cache;
        let x = rows(input);
        let dh = rows(grad_output);
        let mut grad_state = ws.scratch((n_rows, n));
        let mut grad_x = ws.scratch((n_rows, n));
        {
            let [_, _, mut r] = gate_blocks_mut::<E, 3>(&mut gates);
            par_zip!(
                (&mut grad_state, &mut grad_x, &mut r, &dh, &cell, &x),
                |dc, dx, r, &dh, &c, &x| {
                    let rv = *r;
                    *dc = dh * rv;
                    *dx = dh * (E::one() - rv);
                    *r = dh * (c - x) * rv * (E::one() - rv);
                }
            );
        }
        let mut grad_decay = ws.scratch((n_rows, n));
        let mut grad_impulse = ws.scratch((n_rows, n));
        {
            let [xt, f, _] = gate_blocks_mut::<E, 3>(&mut gates);
            scan_backward(
                scan,
                n_steps,
                f.view(),
                cell.view(),
                grad_state.view(),
                grad_decay.view_mut(),
                grad_impulse.view_mut(),
            )?;
            par_zip!((xt, f, &grad_decay, &grad_impulse), |xt, f, &da, &dx| {
                let (xv, fv) = (*xt, *f);
                *f = (da - dx * xv) * fv * (E::one() - fv);
                *xt = dx * (E::one() - fv);
            });
        }
        for buffer in [grad_state, grad_decay, grad_impulse, cell] {
            ws.give_back(buffer);
        }
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

impl<E: Real> SruCache<E> {
    /// Gives the cached buffers back to `ws` (when no backward pass will use them).
    pub(crate) fn give_back(self, ws: &Workspace<E>) {
        ws.give_back(self.gates);
        ws.give_back(self.cell);
    }
}
