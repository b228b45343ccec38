//! The oracle backend: plain serial loops, every value computed in `f64`.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::host::{self, host_storage};
use super::{Backend, Candidate, Transpose};
use crate::{ModelError, Real};

/// The reference backend: obviously correct serial loops that compute every value in
/// `f64` (rounded to `E` once per stored result), the recurrence on
/// [`scan_core::Reference`], fresh buffers for every request. Slow; the oracle that
/// [`super::conformance`] compares other backends against, and the backend of the
/// gradient tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

impl ReferenceBackend {
    /// The scan the recurrences run on: the plain-loop oracle.
    fn linear_scan<E: Real>(&self) -> &dyn scan_core::LinearScan<E> {
        &scan_core::Reference
    }

    /// Runs `work` as is (the shared host code asks every host backend to run its
    /// arithmetic this way; the oracle keeps IEEE arithmetic on the calling thread).
    fn serial<R>(&self, work: impl FnOnce() -> R) -> R {
        work()
    }

    /// Runs `work` as is, like [`ReferenceBackend::serial`].
    fn on_pool<R>(&self, work: impl FnOnce() -> R) -> R {
        work()
    }
}

fn f<E: Real>(x: E) -> f64 {
    x.as_f64()
}

fn e<E: Real>(x: f64) -> E {
    E::from_f64(x)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Applies `body(row, col)` to every index of a `(rows, cols)` shape, row by row.
fn each(dims: (usize, usize), mut body: impl FnMut(usize, usize)) {
    for r in 0..dims.0 {
        for c in 0..dims.1 {
            body(r, c);
        }
    }
}

fn check_all(
    operation: &'static str,
    dims: (usize, usize),
    operands: &[(&'static str, (usize, usize))],
) -> Result<(), ModelError> {
    operands
        .iter()
        .try_for_each(|&(argument, actual)| host::same(operation, argument, dims, actual))
}

impl<E: Real> Backend<E> for ReferenceBackend {
    host_storage!();
    type Packed = Array2<E>;

    fn zeros(&self, rows: usize, cols: usize) -> Result<Array2<E>, ModelError> {
        host::try_zeros(rows, cols)
    }

    fn scratch(&self, rows: usize, cols: usize) -> Result<Array2<E>, ModelError> {
        host::try_zeros(rows, cols)
    }

    fn recycle(&self, matrix: Array2<E>) {
        drop(matrix);
    }

    fn matmul(
        &self,
        a: ArrayView2<'_, E>,
        transpose_a: Transpose,
        b: ArrayView2<'_, E>,
        transpose_b: Transpose,
        mut c: ArrayViewMut2<'_, E>,
        accumulate: bool,
    ) -> Result<(), ModelError> {
        let (m, k, n) = host::matmul_dims(
            "Backend::matmul",
            a.dim(),
            transpose_a,
            b.dim(),
            transpose_b,
            c.dim(),
        )?;
        let (a, b) = (
            host::oriented(a, transpose_a),
            host::oriented(b, transpose_b),
        );
        each((m, n), |i, j| {
            let mut sum = if accumulate { f(c[[i, j]]) } else { 0.0 };
            for l in 0..k {
                sum += f(a[[i, l]]) * f(b[[l, j]]);
            }
            c[[i, j]] = e(sum);
        });
        Ok(())
    }

    fn pack(&self, b: ArrayView2<'_, E>, transpose: Transpose) -> Result<Array2<E>, ModelError> {
        Ok(host::oriented(b, transpose).to_owned())
    }

    fn matmul_packed(
        &self,
        a: ArrayView2<'_, E>,
        b: &Array2<E>,
        c: ArrayViewMut2<'_, E>,
        accumulate: bool,
    ) -> Result<(), ModelError> {
        host::matmul_dims(
            "Backend::matmul_packed",
            a.dim(),
            Transpose::No,
            b.dim(),
            Transpose::No,
            c.dim(),
        )?;
        self.matmul(a, Transpose::No, b.view(), Transpose::No, c, accumulate)
    }

    fn recycle_packed(&self, _: Array2<E>) {}

    fn add_column_sums(
        &self,
        src: ArrayView2<'_, E>,
        mut dst: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        host::bias_row("Backend::add_column_sums", &dst.view(), src.ncols())?;
        for c in 0..src.ncols() {
            let mut sum = f(dst[[0, c]]);
            for r in 0..src.nrows() {
                sum += f(src[[r, c]]);
            }
            dst[[0, c]] = e(sum);
        }
        Ok(())
    }

    fn embed(
        &self,
        table: ArrayView2<'_, E>,
        index: &[u32],
        scale: ArrayView2<'_, E>,
        mut out: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        host::embed_dims(table.dim(), index, &scale, out.dim())?;
        each(out.dim(), |r, c| {
            out[[r, c]] = e(f(scale[[r, 0]]) * f(table[[index[r] as usize, c]]));
        });
        Ok(())
    }

    fn embed_backward(
        &self,
        grad_out: ArrayView2<'_, E>,
        index: &[u32],
        scale: ArrayView2<'_, E>,
        mut grad_table: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        host::embed_dims(grad_table.dim(), index, &scale, grad_out.dim())?;
        each(grad_out.dim(), |r, c| {
            let target = &mut grad_table[[index[r] as usize, c]];
            *target = e(f(*target) + f(scale[[r, 0]]) * f(grad_out[[r, c]]));
        });
        Ok(())
    }

    fn decay_gates(
        &self,
        mut decay: ArrayViewMut2<'_, E>,
        decay_bias: ArrayView2<'_, E>,
        mut candidate: ArrayViewMut2<'_, E>,
        candidate_bias: ArrayView2<'_, E>,
        activation: Candidate,
        mut impulse: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        const OP: &str = "Backend::decay_gates";
        let dims = decay.dim();
        check_all(
            OP,
            dims,
            &[("candidate", candidate.dim()), ("impulse", impulse.dim())],
        )?;
        host::bias_row(OP, &decay_bias, dims.1)?;
        host::bias_row(OP, &candidate_bias, dims.1)?;
        each(dims, |r, c| {
            let fv = sigmoid(f(decay[[r, c]]) + f(decay_bias[[0, c]]));
            let pre = f(candidate[[r, c]]) + f(candidate_bias[[0, c]]);
            let vv = match activation {
                Candidate::Tanh => pre.tanh(),
                Candidate::Identity => pre,
            };
            decay[[r, c]] = e(fv);
            candidate[[r, c]] = e(vv);
            impulse[[r, c]] = e((1.0 - fv) * vv);
        });
        Ok(())
    }

    fn decay_gates_backward(
        &self,
        mut decay: ArrayViewMut2<'_, E>,
        mut candidate: ArrayViewMut2<'_, E>,
        activation: Candidate,
        grad_decay: ArrayView2<'_, E>,
        grad_impulse: ArrayView2<'_, E>,
    ) -> Result<(), ModelError> {
        let dims = decay.dim();
        check_all(
            "Backend::decay_gates_backward",
            dims,
            &[
                ("candidate", candidate.dim()),
                ("grad_decay", grad_decay.dim()),
                ("grad_impulse", grad_impulse.dim()),
            ],
        )?;
        each(dims, |r, c| {
            let (fv, vv) = (f(decay[[r, c]]), f(candidate[[r, c]]));
            let (da, dx) = (f(grad_decay[[r, c]]), f(grad_impulse[[r, c]]));
            let slope = match activation {
                Candidate::Tanh => 1.0 - vv * vv,
                Candidate::Identity => 1.0,
            };
            decay[[r, c]] = e((da - dx * vv) * fv * (1.0 - fv));
            candidate[[r, c]] = e(dx * (1.0 - fv) * slope);
        });
        Ok(())
    }

    fn input_gates(
        &self,
        mut forget: ArrayViewMut2<'_, E>,
        forget_bias: ArrayView2<'_, E>,
        mut input: ArrayViewMut2<'_, E>,
        input_bias: ArrayView2<'_, E>,
        mut candidate: ArrayViewMut2<'_, E>,
        candidate_bias: ArrayView2<'_, E>,
        mut impulse: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        const OP: &str = "Backend::input_gates";
        let dims = forget.dim();
        check_all(
            OP,
            dims,
            &[
                ("input", input.dim()),
                ("candidate", candidate.dim()),
                ("impulse", impulse.dim()),
            ],
        )?;
        host::bias_row(OP, &forget_bias, dims.1)?;
        host::bias_row(OP, &input_bias, dims.1)?;
        host::bias_row(OP, &candidate_bias, dims.1)?;
        each(dims, |r, c| {
            let fv = sigmoid(f(forget[[r, c]]) + f(forget_bias[[0, c]]));
            let iv = sigmoid(f(input[[r, c]]) + f(input_bias[[0, c]]));
            let zv = (f(candidate[[r, c]]) + f(candidate_bias[[0, c]])).tanh();
            forget[[r, c]] = e(fv);
            input[[r, c]] = e(iv);
            candidate[[r, c]] = e(zv);
            impulse[[r, c]] = e(iv * zv);
        });
        Ok(())
    }

    fn input_gates_backward(
        &self,
        mut forget: ArrayViewMut2<'_, E>,
        mut input: ArrayViewMut2<'_, E>,
        mut candidate: ArrayViewMut2<'_, E>,
        grad_decay: ArrayView2<'_, E>,
        grad_impulse: ArrayView2<'_, E>,
    ) -> Result<(), ModelError> {
        let dims = forget.dim();
        check_all(
            "Backend::input_gates_backward",
            dims,
            &[
                ("input", input.dim()),
                ("candidate", candidate.dim()),
                ("grad_decay", grad_decay.dim()),
                ("grad_impulse", grad_impulse.dim()),
            ],
        )?;
        each(dims, |r, c| {
            let (fv, iv, zv) = (f(forget[[r, c]]), f(input[[r, c]]), f(candidate[[r, c]]));
            let (da, dx) = (f(grad_decay[[r, c]]), f(grad_impulse[[r, c]]));
            forget[[r, c]] = e(da * fv * (1.0 - fv));
            input[[r, c]] = e(dx * zv * iv * (1.0 - iv));
            candidate[[r, c]] = e(dx * iv * (1.0 - zv * zv));
        });
        Ok(())
    }

    fn output_gate(
        &self,
        mut gate: ArrayViewMut2<'_, E>,
        bias: ArrayView2<'_, E>,
        cell: ArrayView2<'_, E>,
        skip: Option<ArrayView2<'_, E>>,
        mut out: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        const OP: &str = "Backend::output_gate";
        let dims = gate.dim();
        check_all(OP, dims, &[("cell", cell.dim()), ("out", out.dim())])?;
        host::bias_row(OP, &bias, dims.1)?;
        if let Some(x) = skip {
            host::same(OP, "skip", dims, x.dim())?;
        }
        each(dims, |r, c| {
            let ov = sigmoid(f(gate[[r, c]]) + f(bias[[0, c]]));
            let carried = skip.map_or(0.0, |x| (1.0 - ov) * f(x[[r, c]]));
            gate[[r, c]] = e(ov);
            out[[r, c]] = e(ov * f(cell[[r, c]]) + carried);
        });
        Ok(())
    }

    fn output_gate_backward(
        &self,
        mut gate: ArrayViewMut2<'_, E>,
        cell: ArrayView2<'_, E>,
        skip: Option<ArrayView2<'_, E>>,
        grad_out: ArrayView2<'_, E>,
        mut grad_cell: ArrayViewMut2<'_, E>,
        mut grad_skip: Option<ArrayViewMut2<'_, E>>,
    ) -> Result<(), ModelError> {
        const OP: &str = "Backend::output_gate_backward";
        let dims = gate.dim();
        check_all(
            OP,
            dims,
            &[
                ("cell", cell.dim()),
                ("grad_out", grad_out.dim()),
                ("grad_cell", grad_cell.dim()),
            ],
        )?;
        match (&skip, &grad_skip) {
            (Some(x), Some(dx)) => {
                check_all(OP, dims, &[("skip", x.dim()), ("grad_skip", dx.dim())])?
            }
            (None, None) => {}
            _ => return Err(super::cpu::skip_mismatch(OP)),
        }
        each(dims, |r, c| {
            let (ov, dh) = (f(gate[[r, c]]), f(grad_out[[r, c]]));
            let x = skip.map_or(0.0, |x| f(x[[r, c]]));
            grad_cell[[r, c]] = e(dh * ov);
            if let Some(dx) = grad_skip.as_mut() {
                dx[[r, c]] = e(dh * (1.0 - ov));
            }
            gate[[r, c]] = e(dh * (f(cell[[r, c]]) - x) * ov * (1.0 - ov));
        });
        Ok(())
    }

    fn lstm_cell(
        &self,
        mut gates: ArrayViewMut2<'_, E>,
        cell_prev: Option<ArrayView2<'_, E>>,
        mut cell: ArrayViewMut2<'_, E>,
        mut out: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        let dims = super::cpu::lstm_dims(
            "Backend::lstm_cell",
            gates.dim(),
            cell_prev.map(|c| c.dim()),
            &[cell.dim(), out.dim()],
        )?;
        let n = dims.1;
        each(dims, |b, j| {
            let fv = sigmoid(f(gates[[b, j]]));
            let iv = sigmoid(f(gates[[b, n + j]]));
            let ov = sigmoid(f(gates[[b, 2 * n + j]]));
            let zv = f(gates[[b, 3 * n + j]]).tanh();
            let c = fv * cell_prev.map_or(0.0, |p| f(p[[b, j]])) + iv * zv;
            for (k, v) in [fv, iv, ov, zv].into_iter().enumerate() {
                gates[[b, k * n + j]] = e(v);
            }
            cell[[b, j]] = e(c);
            out[[b, j]] = e(ov * c.tanh());
        });
        Ok(())
    }

    fn lstm_cell_backward(
        &self,
        mut gates: ArrayViewMut2<'_, E>,
        cell: ArrayView2<'_, E>,
        cell_prev: Option<ArrayView2<'_, E>>,
        grad_out: ArrayView2<'_, E>,
        grad_recurrent: ArrayView2<'_, E>,
        mut grad_cell: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        let dims = super::cpu::lstm_dims(
            "Backend::lstm_cell_backward",
            gates.dim(),
            cell_prev.map(|c| c.dim()),
            &[
                cell.dim(),
                grad_out.dim(),
                grad_recurrent.dim(),
                grad_cell.dim(),
            ],
        )?;
        let n = dims.1;
        each(dims, |b, j| {
            let g = |k: usize| f(gates[[b, k * n + j]]);
            let (fv, iv, ov, zv) = (g(0), g(1), g(2), g(3));
            let dh = f(grad_out[[b, j]]) + f(grad_recurrent[[b, j]]);
            let tc = f(cell[[b, j]]).tanh();
            let c_prev = cell_prev.map_or(0.0, |p| f(p[[b, j]]));
            let dc = dh * ov * (1.0 - tc * tc) + f(grad_cell[[b, j]]);
            grad_cell[[b, j]] = e(dc * fv);
            let grads = [
                dc * c_prev * fv * (1.0 - fv),
                dc * zv * iv * (1.0 - iv),
                dh * tc * ov * (1.0 - ov),
                dc * iv * (1.0 - zv * zv),
            ];
            for (k, v) in grads.into_iter().enumerate() {
                gates[[b, k * n + j]] = e(v);
            }
        });
        Ok(())
    }

    fn tanh(&self, x: ArrayView2<'_, E>, mut out: ArrayViewMut2<'_, E>) -> Result<(), ModelError> {
        host::same("Backend::tanh", "out", x.dim(), out.dim())?;
        each(x.dim(), |r, c| out[[r, c]] = e(f(x[[r, c]]).tanh()));
        Ok(())
    }

    fn tanh_backward(
        &self,
        y: ArrayView2<'_, E>,
        mut grad: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        host::same("Backend::tanh_backward", "grad", y.dim(), grad.dim())?;
        each(y.dim(), |r, c| {
            let yv = f(y[[r, c]]);
            grad[[r, c]] = e(f(grad[[r, c]]) * (1.0 - yv * yv));
        });
        Ok(())
    }
}
