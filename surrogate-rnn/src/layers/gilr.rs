//! The gated impulse linear recurrent layer.

use ndarray::{s, Array1, Ix1, Ix2};

use super::primitives::{
    bias_block, gated_scan, gated_scan_backward, matrices, project, project_backward,
};
use super::{
    cache, check_backward, check_forward, last_step, Layer, LayerCache, LayerGrads, LayerOutput,
    LayerState,
};
use crate::backend::{Backend, Candidate, ScanEnds};
use crate::init::Initializer;
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::{ModelError, Param, Parameters, Real};

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

const NAME: &str = "Gilr";

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
    fn input_size(&self) -> usize {
        self.input_weight.value.nrows()
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
        let state = initial.map(|s| (s, self.state_dims(n_batch)));
        let n_steps = check_forward(b, "Gilr::forward", x, n_batch, self.input_size(), state)?;
        let n = self.n();
        let h_0 = initial.map(|s| s.part(NAME, 0)).transpose()?;
        let [mut g, mut i] = matrices::<E, B, 2>(b, n_steps * n_batch, n, false)?;
        let w = b.host(self.input_weight.value.view());
        project(
            b,
            x,
            w,
            &mut [b.view_mut(&mut g), b.view_mut(&mut i)],
            false,
        )?;
        let bias = self.bias.value.view();
        let (b_g, b_i) = (bias_block(b, bias, 0, n)?, bias_block(b, bias, 1, n)?);
        let h_0 = h_0.map(|h| b.view(h));
        let h = gated_scan(b, n_steps, &mut g, b_g, &mut i, b_i, Candidate::Tanh, h_0)?;
        let state = LayerState::new(vec![last_step(b, &h, n_batch)?]);
        let cache = cache(b, NAME, (n_steps, n_batch), [g, i], initial)?;
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
        const OP: &str = "Gilr::backward";
        let (m, n) = (self.input_size(), self.n());
        let finals = grad_final.map(|s| (s, self.state_dims(cache.dims().1)));
        let (n_steps, n_batch) = check_backward(b, OP, &cache, x, m, h, grad_h, n, finals)?;
        let ([mut g, mut i], initial) = cache.take::<2>(OP, NAME)?;
        let ends = ScanEnds {
            initial: initial
                .as_ref()
                .map(|s| s.part(OP, 0))
                .transpose()?
                .map(|h| b.view(h)),
            grad_last: grad_final
                .map(|s| s.part(OP, 0))
                .transpose()?
                .map(|d| b.view(d)),
        };
        let want_initial = initial.is_some();
        let grad_h0 = gated_scan_backward(
            b,
            n_steps,
            &mut g,
            &mut i,
            Candidate::Tanh,
            h,
            ends,
            grad_h,
            want_initial,
        )?;
        let mut grad_x = b.zeros(n_steps * n_batch, m)?;
        project_backward(
            b,
            x,
            b.host(self.input_weight.value.view()),
            b.host_mut(self.input_weight.grad.view_mut()),
            Some(b.host_mut(self.bias.grad.view_mut().insert_axis(ndarray::Axis(0)))),
            &[b.view(&g), b.view(&i)],
            b.view_mut(&mut grad_x),
        )?;
        super::recycle(b, [g, i]);
        Ok(LayerGrads {
            input: grad_x,
            initial: grad_h0.map(|d| LayerState::new(vec![d])),
        })
    }
}
