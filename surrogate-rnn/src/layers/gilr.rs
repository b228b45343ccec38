//! The gated impulse linear recurrent layer.

use ndarray::{s, Array1, Ix1, Ix2};

use super::recurrence::prelude::*;

/// GILR, `m → n` (PAPER.md §2):
///
/// ```text
/// g_t = σ(U x_t + b_g)          decay gate
/// i_t = tanh(V x_t + b_z)       candidate
/// h_t = g_t ⊙ h_{t-1} + (1 − g_t) ⊙ i_t      (gated scan from the incoming h_0)
/// ```
///
/// Parameters: `input_weight = [U | V]` `(m, 2n)`, `bias = [b_g | b_z]`. State: `h`.
/// Backward: the gated scan's backward gives `∂P_g, ∂P_i` (and `∂h_0`), the projection's
/// backward `∂W, ∂b, ∂x`.
#[derive(Clone, Debug)]
pub struct Gilr<E: Real> {
    input_weight: Param<E, Ix2>,
    bias: Param<E, Ix1>,
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
}

layer_from_recurrence!(Gilr: input_weight, bias);

impl<E: Real> Recurrence<E> for Gilr<E> {
    fn sizes(&self) -> (usize, usize) {
        (self.input_weight.value.nrows(), self.bias.value.len() / 2)
    }

    fn parts(&self, n_batch: usize) -> Vec<(usize, usize)> {
        vec![(n_batch, self.sizes().1)]
    }

    fn run<B: Backend<E>>(&self, b: &B, run: Run<'_, E, B>) -> Forward<E, B> {
        let n = self.sizes().1;
        let [mut g, mut i] = project_input(b, run.x, &self.input_weight)?;
        let bias = |k| bias_block(b, self.bias.value.view(), k, n);
        let (b_g, b_i) = (bias(0)?, bias(1)?);
        let (h, h_0) = gated_scan(
            b,
            run.n_steps,
            &mut g,
            b_g,
            &mut i,
            b_i,
            Candidate::Tanh,
            run.initial(0),
        )?;
        let state = vec![last_step(b, &h, run.n_batch)?];
        ran(h, vec![g, i], state).map(|r| r.entered(vec![h_0]))
    }

    fn run_backward<B: Backend<E>>(&mut self, b: &B, mut run: BackRun<'_, E, B>) -> Back<E, B> {
        let [mut g, mut i] = run.take_buffers()?;
        let m = self.sizes().0;
        let grad = run.scan_grad(b, b.shorten(&run.h), b.shorten(&run.grad_h), 0);
        let grad_h0 = gated_scan_backward(b, run.n_steps, [&mut g, &mut i], Candidate::Tanh, grad)?;
        let (w, bias, grad_x) = (
            &mut self.input_weight,
            &mut self.bias,
            run.grad_input(b, m, true)?,
        );
        let gates = [g, i];
        let grad_x = project_input_backward(b, run.x, w, bias, &gates, grad_x)?;
        recycle(b, gates);
        Ok(Grads {
            input: grad_x,
            initial: grad_h0.map(|d| vec![d]),
        })
    }
}
