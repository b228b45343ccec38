//! The simple recurrent unit (Lei & Zhang 2017), highway form.

use ndarray::{s, Array1, Axis, Ix1, Ix2};

use super::primitives::{
    bias_block, gated_scan, gated_scan_backward, matrices, output_gate, output_gate_backward,
    project, project_backward,
};
use super::{
    cache, check_backward, check_forward, last_step, recycle, state_part, Layer, LayerCache,
    LayerGrads, LayerOutput, LayerState,
};
use crate::backend::{Backend, Candidate, ScanEnds};
use crate::init::Initializer;
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::{ModelError, Param, Parameters, Real};

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

const NAME: &str = "Sru";

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
    fn input_size(&self) -> usize {
        self.n()
    }

    fn output_size(&self) -> usize {
        self.n()
    }

    fn state_dims(&self, n_batch: usize) -> Vec<(usize, usize)> {
        vec![(n_batch, self.n())]
    }

    fn forward<B: Backend<E>>(
        &self,
        b: &B,
        x: B::View<'_>,
        n_batch: usize,
        initial: Option<&LayerState<B::Matrix>>,
    ) -> Result<LayerOutput<B::Matrix>, ModelError> {
        const OP: &str = "Sru::forward";
        let state = initial.map(|s| (s, self.state_dims(n_batch)));
        let n_steps = check_forward(b, OP, x, n_batch, self.n(), state)?;
        let n = self.n();
        let cell_0 = initial
            .map(|s| s.part(OP, 0).map(|p| b.view(p)))
            .transpose()?;
        let mut gates = matrices::<E, B, 3>(b, n_steps * n_batch, n, false)?;
        let w = b.host(self.input_weight.value.view());
        project(b, x, w, &mut gates.each_mut().map(|g| b.view_mut(g)), false)?;
        let bias = self.bias.value.view();
        let bias = |k| bias_block(b, bias, k, n);
        let [xt, f, r] = &mut gates;
        let cell = gated_scan(
            b,
            n_steps,
            f,
            bias(1)?,
            xt,
            bias(0)?,
            Candidate::Identity,
            cell_0,
        )?;
        let h = output_gate(b, r, bias(2)?, b.view(&cell), Some(x))?;
        let state = LayerState::new(vec![last_step(b, &cell, n_batch)?]);
        let [xt, f, r] = gates;
        let cache = cache(b, NAME, (n_steps, n_batch), [xt, f, r, cell], initial)?;
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
        const OP: &str = "Sru::backward";
        let n = self.n();
        let finals = grad_final.map(|s| (s, self.state_dims(cache.dims().1)));
        let (n_steps, _) = check_backward(b, OP, &cache, x, n, h, grad_h, n, finals)?;
        let ([mut xt, mut f, mut r, cell], initial) = cache.take::<4>(OP, NAME)?;
        let ends = ScanEnds {
            initial: state_part(b, initial.as_ref(), OP, 0)?,
            grad_last: state_part(b, grad_final, OP, 0)?,
        };
        let (grad_cell, grad_x) = output_gate_backward(b, &mut r, b.view(&cell), Some(x), grad_h)?;
        let mut grad_x = grad_x.ok_or_else(|| ModelError::InvalidInput {
            operation: OP,
            reason: "the highway gradient is missing".into(),
        })?;
        let grad_cell_0 = gated_scan_backward(
            b,
            n_steps,
            &mut f,
            &mut xt,
            Candidate::Identity,
            b.view(&cell),
            ends,
            b.view(&grad_cell),
            initial.is_some(),
        )?;
        recycle(b, [grad_cell, cell]);
        let gates = [xt, f, r];
        project_backward(
            b,
            x,
            b.host(self.input_weight.value.view()),
            b.host_mut(self.input_weight.grad.view_mut()),
            Some(b.host_mut(self.bias.grad.view_mut().insert_axis(Axis(0)))),
            &gates.each_ref().map(|p| b.view(p)),
            b.view_mut(&mut grad_x),
        )?;
        recycle(b, gates);
        Ok(LayerGrads {
            input: grad_x,
            initial: grad_cell_0.map(|d| LayerState::new(vec![d])),
        })
    }
}
