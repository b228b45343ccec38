//! The quasi-recurrent layer (Bradbury et al. 2017).

use ndarray::{s, Array1, Axis, Ix1, Ix3};

use super::recurrence::prelude::*;

/// QRNN with filter width k, `m → n`, fo-pooling (PAPER.md §2):
///
/// ```text
/// P_t = Σ_{s=0}^{k-1} x_{t-s} W_s + b      (causal convolution over [window; x])
/// z_t = tanh(P_z),  f_t = σ(P_f),  o_t = σ(P_o)
/// c_t = f_t ⊙ c_{t-1} + (1 − f_t) ⊙ z_t     (gated scan)
/// h_t = o_t ⊙ c_t                          (output gate)
/// ```
///
/// The convolution is one gate projection per tap over row-shifted views of the input
/// (tap s maps rows `0..(T−s)B` to rows `sB..TB`), with no im2col copy; the first `s`
/// steps of tap s read the incoming window of the `k − 1` previous inputs (zeros at the
/// start of a sequence). State: `c` and that window, `((k−1)·B, m)`, oldest step first.
#[derive(Clone, Debug)]
pub struct Qrnn<E: Real> {
    filter: Param<E, Ix3>,
    bias: Param<E, Ix1>,
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

    /// The rows of tap `s`: `(source rows of x, rows of P)` for the part read from the
    /// input, and `(window rows, rows of P)` for the part read from the window.
    fn tap_rows(&self, s: usize, n_steps: usize, n_batch: usize) -> TapRows {
        let from_input = n_steps.saturating_sub(s) * n_batch;
        let from_window = s.min(n_steps) * n_batch;
        TapRows {
            from_input,
            from_window,
            window_start: (self.width() - 1 - s) * n_batch,
            output_start: s.min(n_steps) * n_batch,
        }
    }
}

/// Where one tap of the convolution reads and writes.
struct TapRows {
    /// Rows `0..from_input` of x feed rows `output_start..` of P.
    from_input: usize,
    output_start: usize,
    /// Window rows `window_start..window_start + from_window` feed rows `0..from_window`.
    from_window: usize,
    window_start: usize,
}

layer_from_recurrence!(Qrnn: filter, bias);

impl<E: Real> Recurrence<E> for Qrnn<E> {
    fn sizes(&self) -> (usize, usize) {
        (self.filter.value.dim().1, self.bias.value.len() / 3)
    }

    fn parts(&self, n_batch: usize) -> Vec<(usize, usize)> {
        let (m, n) = self.sizes();
        vec![(n_batch, n), ((self.width() - 1) * n_batch, m)]
    }

    fn run<B: Backend<E>>(&self, b: &B, run: Run<'_, E, B>) -> Forward<E, B> {
        let ((m, n), n_steps, n_batch) = (self.sizes(), run.n_steps, run.n_batch);
        // The window enters from the previous part of a split sequence, or is the given one.
        let window_dims = ((self.width() - 1) * n_batch, m);
        let (entered_window, next_window) = b.carry(run.initial(1), window_dims, |window| {
            self.last_inputs(b, run.x, window, n_steps, n_batch)
        })?;
        let window = run.entering(b, &entered_window, 1);
        let mut gates = matrices::<E, B, 3>(b, run.rows(), n, true)?;
        for tap in 0..self.width() {
            let w = b.host(self.filter.value.index_axis(Axis(0), tap));
            let rows = self.tap_rows(tap, n_steps, n_batch);
            if rows.from_input > 0 {
                let source = b.rows(run.x, 0, rows.from_input)?;
                let out = rows_of_each(b, gates.each_mut(), rows.output_start, rows.from_input)?;
                project(b, source, w, &mut { out }, true)?;
            }
            if let (Some(window), true) = (window, rows.from_window > 0) {
                let source = b.rows(window, rows.window_start, rows.from_window)?;
                let out = rows_of_each(b, gates.each_mut(), 0, rows.from_window)?;
                project(b, source, w, &mut { out }, true)?;
            }
        }
        let bias = |k| bias_block(b, self.bias.value.view(), k, n);
        let [z, f, o] = &mut gates;
        let (c, c_0) = gated_scan(
            b,
            n_steps,
            f,
            bias(1)?,
            z,
            bias(0)?,
            Candidate::Tanh,
            run.initial(0),
        )?;
        let h = output_gate(b, o, bias(2)?, b.view(&c), None)?;
        let state = vec![last_step(b, &c, n_batch)?, next_window];
        let [z, f, o] = gates;
        ran(h, vec![z, f, o, c], state).map(|r| r.entered(vec![c_0, entered_window]))
    }

    fn run_backward<B: Backend<E>>(&mut self, b: &B, mut run: BackRun<'_, E, B>) -> Back<E, B> {
        let ((m, n), n_steps, n_batch) = (self.sizes(), run.n_steps, run.n_batch);
        let [mut z, mut f, mut o, c] = run.take_buffers()?;
        let (grad_c, _) = output_gate_backward(b, &mut o, b.view(&c), None, run.grad_h)?;
        let grad = run.scan_grad(b, b.view(&c), b.view(&grad_c), 0);
        let grad_c0 = gated_scan_backward(b, n_steps, [&mut f, &mut z], Candidate::Tanh, grad)?;
        recycle(b, [grad_c, c]);
        let window = run.initial(1);
        let mut grad_x = run.grad_input(b, m, true)?;
        let mut grad_window = window.map(|w| b.zeros(b.dims(w).0, m)).transpose()?;
        let grads = [&z, &f, &o];
        for tap in 0..self.width() {
            let w = b.host(self.filter.value.index_axis(Axis(0), tap));
            let rows = self.tap_rows(tap, n_steps, n_batch);
            let mut grad_w = self.filter.grad.index_axis_mut(Axis(0), tap);
            if rows.from_input > 0 {
                let dp = rows_of_each_ref(b, grads, rows.output_start, rows.from_input)?;
                let gx = grad_x
                    .as_mut()
                    .map(|g| b.rows_mut(b.view_mut(g), 0, rows.from_input))
                    .transpose()?;
                let source = b.rows(run.x, 0, rows.from_input)?;
                project_backward(b, source, w, b.host_mut(grad_w.view_mut()), None, &dp, gx)?;
            }
            if let (Some(window), Some(gw), true) =
                (window, grad_window.as_mut(), rows.from_window > 0)
            {
                let dp = rows_of_each_ref(b, grads, 0, rows.from_window)?;
                let gw = b.rows_mut(b.view_mut(gw), rows.window_start, rows.from_window)?;
                let source = b.rows(window, rows.window_start, rows.from_window)?;
                let gw = Some(gw);
                project_backward(b, source, w, b.host_mut(grad_w.view_mut()), None, &dp, gw)?;
            }
        }
        let mut grad_bias = self.bias.grad.view_mut().insert_axis(Axis(0));
        for (k, g) in grads.into_iter().enumerate() {
            let gb = b.columns_mut(b.host_mut(grad_bias.view_mut()), k * n, n)?;
            b.add_column_sums(b.view(g), gb)?;
        }
        recycle(b, [z, f, o]);
        // ∂(next window) comes from the next chunk or part; ∂window goes to the one before.
        let window_dims = ((self.width() - 1) * n_batch, m);
        let grad_window = b.carry_backward(run.grad_final(1), window_dims, |grad_next| {
            if let Some(grad_next) = grad_next {
                self.last_inputs_backward(
                    b,
                    grad_next,
                    grad_x.as_mut(),
                    grad_window.as_mut(),
                    n_steps,
                    n_batch,
                )?;
            }
            Ok(grad_window)
        })?;
        let initial = grad_c0.zip(grad_window).map(|(dc, dw)| vec![dc, dw]);
        Ok(Grads {
            input: grad_x,
            initial,
        })
    }
}

impl<E: Real> Qrnn<E> {
    /// Where the last `k − 1` steps of `[window; x]` come from: `(rows of the window from
    /// window_start, rows of x from x_start)`.
    fn last_input_rows(&self, n_steps: usize, n_batch: usize) -> (usize, usize, usize) {
        let keep = self.width() - 1;
        let from_x = keep.min(n_steps);
        let from_window = keep - from_x;
        (
            (keep - from_window) * n_batch,
            from_window * n_batch,
            (n_steps - from_x) * n_batch,
        )
    }

    /// The window for the next chunk: the last `k − 1` steps of `[window; x]`.
    fn last_inputs<B: Backend<E>>(
        &self,
        b: &B,
        x: B::View<'_>,
        window: Option<B::View<'_>>,
        n_steps: usize,
        n_batch: usize,
    ) -> Result<B::Matrix, ModelError> {
        let (window_start, from_window, x_start) = self.last_input_rows(n_steps, n_batch);
        let rows = (self.width() - 1) * n_batch;
        let mut next = b.zeros(rows, self.sizes().0)?;
        if let Some(window) = window {
            let source = b.rows(window, window_start, from_window)?;
            b.copy(source, b.rows_mut(b.view_mut(&mut next), 0, from_window)?)?;
        }
        let source = b.rows(x, x_start, rows - from_window)?;
        b.copy(
            source,
            b.rows_mut(b.view_mut(&mut next), from_window, rows - from_window)?,
        )?;
        Ok(next)
    }

    /// Backward of [`Qrnn::last_inputs`]: adds the next window's gradient to `∂x` (when
    /// wanted) and to the incoming window's gradient.
    fn last_inputs_backward<B: Backend<E>>(
        &self,
        b: &B,
        grad_next: B::View<'_>,
        grad_x: Option<&mut B::Matrix>,
        grad_window: Option<&mut B::Matrix>,
        n_steps: usize,
        n_batch: usize,
    ) -> Result<(), ModelError> {
        let (window_start, from_window, x_start) = self.last_input_rows(n_steps, n_batch);
        let rows = (self.width() - 1) * n_batch;
        if let Some(grad_window) = grad_window {
            let source = b.rows(grad_next, 0, from_window)?;
            b.add_assign(
                source,
                b.rows_mut(b.view_mut(grad_window), window_start, from_window)?,
            )?;
        }
        match grad_x {
            Some(grad_x) => {
                let source = b.rows(grad_next, from_window, rows - from_window)?;
                let target = b.rows_mut(b.view_mut(grad_x), x_start, rows - from_window)?;
                b.add_assign(source, target)
            }
            None => Ok(()),
        }
    }
}
