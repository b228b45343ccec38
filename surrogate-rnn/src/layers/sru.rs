//! The simple recurrent unit (Lei & Zhang 2017), highway form.

use ndarray::{s, Array1, Ix1, Ix2};

use super::recurrence::prelude::*;

/// SRU, `n → n` (PAPER.md §2; the highway needs input size = hidden size):
///
/// ```text
/// x̃_t = W x_t + b_x,  f_t = σ(W_f x_t + b_f),  r_t = σ(W_r x_t + b_r)
/// c_t = f_t ⊙ c_{t-1} + (1 − f_t) ⊙ x̃_t      (gated scan, identity candidate)
/// h_t = r_t ⊙ c_t + (1 − r_t) ⊙ x_t          (output gate with highway)
/// ```
///
/// (`b_x` is an addition to the paper's `x̃_t = W x_t`, initialised to zero.)
/// Parameters: `input_weight = [W W_f W_r]` `(n, 3n)`, `bias = [b_x b_f b_r]`. State: `c`.
#[derive(Clone, Debug)]
pub struct Sru<E: Real> {
    input_weight: Param<E, Ix2>,
    bias: Param<E, Ix1>,
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
}

layer_from_recurrence!(Sru: input_weight, bias);

impl<E: Real> Recurrence<E> for Sru<E> {
    fn sizes(&self) -> (usize, usize) {
        (
            self.input_weight.value.nrows(),
            self.input_weight.value.nrows(),
        )
    }

    fn parts(&self, n_batch: usize) -> Vec<(usize, usize)> {
        vec![(n_batch, self.sizes().1)]
    }

    fn run<B: Backend<E>>(&self, b: &B, run: Run<'_, E, B>) -> Forward<E, B> {
        let n = self.sizes().1;
        let mut gates = project_input::<E, B, 3>(b, run.x, &self.input_weight)?;
        let bias = |k| bias_block(b, self.bias.value.view(), k, n);
        let [xt, f, r] = &mut gates;
        let initial = run.initial(0);
        let (c, c_0) = gated_scan(
            b,
            run.n_steps,
            f,
            bias(1)?,
            xt,
            bias(0)?,
            Candidate::Identity,
            initial,
        )?;
        let h = output_gate(b, r, bias(2)?, b.view(&c), Some(run.x))?;
        let state = vec![last_step(b, &c, run.n_batch)?];
        let [xt, f, r] = gates;
        ran(h, vec![xt, f, r, c], state).map(|r| r.entered(vec![c_0]))
    }

    fn run_backward<B: Backend<E>>(&mut self, b: &B, mut run: BackRun<'_, E, B>) -> Back<E, B> {
        let [mut xt, mut f, mut r, c] = run.take_buffers()?;
        let (grad_c, grad_x) =
            output_gate_backward(b, &mut r, b.view(&c), Some(run.x), run.grad_h)?;
        let grad_x = grad_x.ok_or_else(|| ModelError::InvalidInput {
            operation: "Sru::backward",
            reason: "the highway gradient is missing".into(),
        })?;
        // The highway's ∂x is a by-product of ∂r; it is dropped when no ∂x is wanted.
        let grad_x = if run.wants_input() {
            Some(grad_x)
        } else {
            b.recycle(grad_x);
            None
        };
        let grad = run.scan_grad(b, b.view(&c), b.view(&grad_c), 0);
        let grad_c0 =
            gated_scan_backward(b, run.n_steps, [&mut f, &mut xt], Candidate::Identity, grad)?;
        recycle(b, [grad_c, c]);
        let (w, bias, gates) = (&mut self.input_weight, &mut self.bias, [xt, f, r]);
        let grad_x = project_input_backward(b, run.x, w, bias, &gates, grad_x)?;
        recycle(b, gates);
        Ok(Grads {
            input: grad_x,
            initial: grad_c0.map(|d| vec![d]),
        })
    }
}
