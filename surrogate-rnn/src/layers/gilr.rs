//! The gated impulse linear recurrent layer.

use ndarray::{s, Array1, Array3, ArrayView3, Ix1, Ix2};
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

/// GILR, `m → n` (PAPER.md §2):
///
/// ```text
/// g_t = σ(U x_t + b_g)          decay gate
/// i_t = tanh(V x_t + b_z)       candidate
/// h_t = g_t ⊙ h_{t-1} + (1 − g_t) ⊙ i_t,   h_0 = 0
/// ```
///
/// `input_weight` is `[U | V]`, `(m, 2n)`; `bias` is `[b_g | b_z]`. Both projections are
/// one matrix product over all `T·B` rows; the recurrence is one scan over `B·n` features.
///
/// Backward, with `G = ∂L/∂impulse` and `∂L/∂decay = h_{t-1} ⊙ G` from the backward scan:
/// `∂g = ∂decay − G ⊙ i`, `∂i = G ⊙ (1 − g)`, then through σ and tanh to the
/// pre-activations `∂P`, and `∂W += xᵀ∂P`, `∂b += Σ∂P`, `∂x = ∂P Wᵀ`.
#[derive(Clone, Debug)]
pub struct Gilr<E: Real> {
    /// `[U | V]`, `(m, 2n)`.
    pub input_weight: Param<E, Ix2>,
    /// `[b_g | b_z]`, `(2n)`.
    pub bias: Param<E, Ix1>,
}

/// What [`Gilr::forward`] keeps for the backward pass: the gates `g` and `i`,
/// `2·T·B·n` elements.
#[derive(Debug)]
pub struct GilrCache<E> {
    gates: Array3<E>,
}

impl<E: Real> Gilr<E> {
    pub(crate) fn init(init: &mut Initializer, m: usize, n: usize) -> Self {
        let mut bias = Array1::zeros(2 * n);
        init.decay_bias(bias.slice_mut(s![..n]));
        Self {
            input_weight: Param::new(init.glorot_gates(m, 2, n)),
            bias: Param::new(bias),
        }
    }

    fn n(&self) -> usize {
        self.bias.value.len() / 2
    }
}

params_from_fields!(Gilr: input_weight, bias);

impl<E: Real> Layer<E> for Gilr<E> {
    type Cache = GilrCache<E>;

    fn input_size(&self) -> usize {
        self.input_weight.value.nrows()
    }

    fn output_size(&self) -> usize {
        self.n()
    }

    unpooled_layer_entry_points!(GilrCache<E>);
}

impl<E: Real> Gilr<E> {
    pub(crate) fn forward_with(
        &self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<(Array3<E>, GilrCache<E>), ModelError> {
        let (n_steps, n_batch) = check_input("Gilr::forward", &input, self.input_size())?;
        let n = self.n();
        let x = rows(input);
        let mut gates = ws.scratch((2, n_steps * n_batch, n));
        project_gates(x.view(), self.input_weight.value.view(), &mut gates);
        let n_rows = n_steps * n_batch;
        let (b_g, b_i) = (
            self.bias.value.slice(s![..n]),
            self.bias.value.slice(s![n..]),
        );
        let [mut g, mut i] = gate_blocks_mut::<E, 2>(&mut gates);
        let mut impulse = ws.scratch((n_rows, n));
        // One pass: g = σ(P_g), i = tanh(P_i) and the impulse (1 − g) ⊙ i.
        par_zip!(
            (
                g.view_mut(),
                i.view_mut(),
                &mut impulse,
                rows_of(&b_g, n_rows),
                rows_of(&b_i, n_rows),
            ),
            |g, i, x, &b_g, &b_i| {
                let (gv, iv) = (sigmoid(*g + b_g), (*i + b_i).tanh());
                *g = gv;
                *i = iv;
                *x = (E::one() - gv) * iv;
            }
        );
        let mut h = ws.scratch((n_rows, n));
        scan_forward(scan, n_steps, g.view(), impulse.view(), h.view_mut())?;
        ws.give_back(impulse);
        Ok((crate::ops::to_3d(h, n_steps, n_batch), GilrCache { gates }))
    }

    pub(crate) fn backward_with(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        output: ArrayView3<'_, E>,
        cache: GilrCache<E>,
        grad_output: ArrayView3<'_, E>,
        ws: &Workspace<E>,
    ) -> Result<Array3<E>, ModelError> {
        let (n_steps, n_batch) = check_backward(
            "Gilr::backward",
            &input,
            self.input_size(),
            &output,
            &grad_output,
            self.n(),
        )?;
        let n = self.n();
        let n_rows = n_steps * n_batch;
        let mut gates = cache.gates;
        let h = rows(output);
        let dh = rows(grad_output);
        let mut grad_decay = ws.scratch((n_rows, n));
        let mut grad_impulse = ws.scratch((n_rows, n));
        {
            let [g, _] = gate_blocks_mut::<E, 2>(&mut gates);
            scan_backward(
                scan,
                n_steps,
                g.view(),
                h.view(),
                dh.view(),
                grad_decay.view_mut(),
                grad_impulse.view_mut(),
            )?;
        }
        // Overwrite the gates with the gradients of their pre-activations.
        {
            let [g, i] = gate_blocks_mut::<E, 2>(&mut gates);
            par_zip!((g, i, &grad_decay, &grad_impulse), |g, i, &da, &dx| {
                let (gv, iv) = (*g, *i);
                let dg = da - dx * iv;
                let di = dx * (E::one() - gv);
                *g = dg * gv * (E::one() - gv);
                *i = di * (E::one() - iv * iv);
            });
        }
        ws.give_back(grad_decay);
        ws.give_back(grad_impulse);
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

impl<E: Real> GilrCache<E> {
    /// Gives the cached buffers back to `ws` (when no backward pass will use them).
    pub(crate) fn give_back(self, ws: &Workspace<E>) {
        ws.give_back(self.gates);
    }
}
