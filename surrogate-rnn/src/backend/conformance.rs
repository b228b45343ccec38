//! The conformance suite, written once, that every [`Backend`] runs against
//! [`ReferenceBackend`]: each operation, forward and backward, on
//! random operands of a [`Case`]'s shape, results compared relative to their magnitude.
//!
//! A backend's own tests call [`check_backend`] with proptest-drawn cases (this crate's
//! `tests/conformance.rs` does so for [`CpuBackend`](super::CpuBackend) in `f32` and `f64`);
//! operands reach the backend through [`Backend::upload`] and come back through
//! [`Backend::download`], so a device backend runs the same suite.

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Backend, Candidate, ReferenceBackend, ScanEnds, Transpose};
use crate::{ModelError, Real};

/// The shapes of one conformance case.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Steps of the sequence (`T ≥ 1`).
    pub n_steps: usize,
    /// Batch size (`B ≥ 1`).
    pub n_batch: usize,
    /// Features of the gate operands (`n ≥ 1`).
    pub n_features: usize,
    /// The inner size of matrix products (`k ≥ 0`).
    pub n_inner: usize,
    /// Seeds the operands.
    pub seed: u64,
}

/// Why a backend failed a case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// An operation returned an error on valid operands.
    #[error("{operation}: {source}")]
    Failed {
        /// The operation.
        operation: &'static str,
        /// Its error.
        #[source]
        source: ModelError,
    },
    /// Results differ by more than the tolerance.
    #[error(
        "{operation}, output {output}: difference {difference:e} > {tolerance:e} (scale {scale:e})"
    )]
    Differs {
        /// The operation.
        operation: &'static str,
        /// Which of its outputs.
        output: usize,
        /// The largest absolute difference.
        difference: f64,
        /// The allowed difference.
        tolerance: f64,
        /// The magnitude the tolerance is relative to.
        scale: f64,
    },
    /// An operation ran on an operand of the wrong shape instead of refusing it.
    #[error("{operation}: {argument} of shape {shape:?} was accepted")]
    Accepted {
        /// The operation.
        operation: &'static str,
        /// The misshapen operand.
        argument: &'static str,
        /// Its shape.
        shape: Vec<usize>,
    },
}

/// Random operands, uniform in `[−1, 1]` (`[0.05, 0.95]` for gates used as decays).
struct Operands {
    rng: ChaCha8Rng,
}

impl Operands {
    fn matrix<E: Real>(&mut self, rows: usize, cols: usize) -> Array2<E> {
        Array2::from_shape_simple_fn((rows, cols), || E::from_f64(self.rng.gen_range(-1.0..1.0)))
    }

    fn gate<E: Real>(&mut self, rows: usize, cols: usize) -> Array2<E> {
        Array2::from_shape_simple_fn((rows, cols), || E::from_f64(self.rng.gen_range(0.05..0.95)))
    }
}

/// An operation's name, operands, and its runs on the backend under test and the reference.
type Entry<E, B> = (
    &'static str,
    Vec<Array2<E>>,
    Op<E, B>,
    Op<E, ReferenceBackend>,
);

/// One operation run on a backend: host operands in, host results out.
type Op<E, B> = fn(&B, &[Array2<E>], &Case) -> Result<Vec<Array2<E>>, ModelError>;

/// Runs every operation of the suite on `backend` and on the reference, for `case`.
/// `tolerance` is relative to the largest magnitude of each result (e.g. `1e-4` for
/// `f32`, `1e-10` for `f64`).
pub fn check_backend<E: Real, B: Backend<E>>(
    backend: &B,
    case: &Case,
    tolerance: f64,
) -> Result<(), Mismatch> {
    let Case {
        n_steps,
        n_batch,
        n_features: n,
        n_inner: k,
        ..
    } = *case;
    let rows = n_steps * n_batch;
    let mut r = Operands {
        rng: ChaCha8Rng::seed_from_u64(case.seed),
    };
    let cases: Vec<Entry<E, B>> = vec![
        (
            "matmul",
            vec![r.matrix(rows, k), r.matrix(k, n), r.matrix(rows, n)],
            matmul,
            matmul,
        ),
        (
            "matmul_transposed",
            vec![r.matrix(k, rows), r.matrix(n, k), r.matrix(rows, n)],
            matmul_transposed,
            matmul_transposed,
        ),
        (
            "matmul_packed",
            vec![
                r.matrix(rows, k),
                r.matrix(k, n),
                r.matrix(n, k),
                r.matrix(rows, n),
            ],
            matmul_packed,
            matmul_packed,
        ),
        (
            "add_column_sums",
            vec![r.matrix(rows, n), r.matrix(1, n)],
            column_sums,
            column_sums,
        ),
        (
            "decay_gates",
            vec![
                r.matrix(rows, n),
                r.matrix(1, n),
                r.matrix(rows, n),
                r.matrix(1, n),
                r.matrix(rows, n),
                r.matrix(rows, n),
            ],
            decay_gates,
            decay_gates,
        ),
        (
            "input_gates",
            vec![
                r.matrix(rows, n),
                r.matrix(1, n),
                r.matrix(rows, n),
                r.matrix(1, n),
                r.matrix(rows, n),
                r.matrix(1, n),
                r.matrix(rows, n),
                r.matrix(rows, n),
            ],
            input_gates,
            input_gates,
        ),
        (
            "output_gate",
            vec![
                r.matrix(rows, n),
                r.matrix(1, n),
                r.matrix(rows, n),
                r.matrix(rows, n),
                r.matrix(rows, n),
            ],
            output_gate,
            output_gate,
        ),
        (
            "lstm_cell",
            vec![
                r.matrix(n_batch, 4 * n),
                r.matrix(n_batch, n),
                r.matrix(n_batch, n),
                r.matrix(n_batch, n),
            ],
            lstm_cell,
            lstm_cell,
        ),
        (
            "scan",
            vec![
                r.gate(rows, n),
                r.matrix(rows, n),
                r.matrix(n_batch, n),
                r.matrix(rows, n),
                r.matrix(n_batch, n),
            ],
            scan,
            scan,
        ),
        (
            "embed",
            vec![
                r.matrix(n + 1, k.max(1)),
                r.matrix(rows, 1),
                r.matrix(rows, k.max(1)),
            ],
            embed,
            embed,
        ),
        (
            "copies",
            vec![r.matrix(rows, n), r.matrix(rows, n), r.matrix(1, n)],
            copies,
            copies,
        ),
        (
            "tanh",
            vec![
                r.matrix::<E>(rows, n).mapv(|v| v * E::from_f64(4.0)),
                r.matrix(rows, n),
            ],
            tanh,
            tanh,
        ),
    ];
    for (operation, operands, on_backend, on_reference) in cases {
        let failed = |source| Mismatch::Failed { operation, source };
        let expected = on_reference(&ReferenceBackend, &operands, case).map_err(failed)?;
        let actual = on_backend(backend, &operands, case).map_err(failed)?;
        compare(operation, &expected, &actual, tolerance)?;
    }
    scan_refuses_misshapen_operands(backend, case)
}

/// The operands of a scan and its backward, in the order of [`scan_on_zeros`].
const SCAN_OPERANDS: [&str; 9] = [
    "decay",
    "impulse",
    "state",
    "initial",
    "grad_last",
    "grad_state",
    "grad_decay",
    "grad_impulse",
    "grad_initial",
];

/// A scan whose operands all have their shapes must run; one whose operand (after the
/// decay) has another shape of the same size must be refused, not reshaped and run.
fn scan_refuses_misshapen_operands<E: Real, B: Backend<E>>(
    b: &B,
    case: &Case,
) -> Result<(), Mismatch> {
    let (block, state) = (
        (case.n_steps * case.n_batch, case.n_features),
        (case.n_batch, case.n_features),
    );
    let dims = [
        block, block, block, state, state, block, block, block, state,
    ];
    let operation = "scan with misshapen operands";
    scan_on_zeros(b, case.n_steps, dims)
        .map_err(|source| Mismatch::Failed { operation, source })?;
    for (i, argument) in SCAN_OPERANDS.into_iter().enumerate().skip(1) {
        let (rows, cols) = dims[i];
        let other = [(cols, rows), (rows * cols, 1), (1, rows * cols)]
            .into_iter()
            .find(|&d| d != dims[i]);
        let Some(other) = other else { continue };
        let mut wrong = dims;
        wrong[i] = other;
        if scan_on_zeros(b, case.n_steps, wrong).is_ok() {
            return Err(Mismatch::Accepted {
                operation,
                argument,
                shape: vec![other.0, other.1],
            });
        }
    }
    Ok(())
}

/// A scan and its backward on zero operands of the given shapes ([`SCAN_OPERANDS`]).
fn scan_on_zeros<E: Real, B: Backend<E>>(
    b: &B,
    n_steps: usize,
    dims: [(usize, usize); 9],
) -> Result<(), ModelError> {
    let matrices = dims
        .iter()
        .map(|&(rows, cols)| b.zeros(rows, cols))
        .collect::<Result<Vec<_>, _>>()?;
    let Ok(
        [decay, impulse, mut state, initial, grad_last, grad_state, mut grad_decay, mut grad_impulse, mut grad_initial],
    ) = <[B::Matrix; 9]>::try_from(matrices)
    else {
        return Ok(());
    };
    let ends = ScanEnds {
        initial: Some(b.view(&initial)),
        grad_last: Some(b.view(&grad_last)),
    };
    b.scan(
        n_steps,
        b.view(&decay),
        b.view(&impulse),
        ends,
        b.view_mut(&mut state),
    )?;
    b.scan_backward(
        n_steps,
        b.view(&decay),
        b.view(&state),
        ends,
        b.view(&grad_state),
        b.view_mut(&mut grad_decay),
        b.view_mut(&mut grad_impulse),
        Some(b.view_mut(&mut grad_initial)),
    )
}

fn compare<E: Real>(
    operation: &'static str,
    expected: &[Array2<E>],
    actual: &[Array2<E>],
    tolerance: f64,
) -> Result<(), Mismatch> {
    for (output, (e, a)) in expected.iter().zip(actual).enumerate() {
        let scale = e.iter().fold(1e-3_f64, |m, v| m.max(v.as_f64().abs()));
        let shape_differs = e.dim() != a.dim();
        let difference = if shape_differs {
            f64::INFINITY
        } else {
            e.iter()
                .zip(a)
                .fold(0.0_f64, |m, (x, y)| m.max((x.as_f64() - y.as_f64()).abs()))
        };
        if difference.is_nan() || difference > tolerance * scale {
            return Err(Mismatch::Differs {
                operation,
                output,
                difference,
                tolerance: tolerance * scale,
                scale,
            });
        }
    }
    if expected.len() != actual.len() {
        return Err(Mismatch::Differs {
            operation,
            output: actual.len(),
            difference: f64::INFINITY,
            tolerance,
            scale: 0.0,
        });
    }
    Ok(())
}

fn up<E: Real, B: Backend<E>>(b: &B, operands: &[Array2<E>]) -> Vec<B::Matrix> {
    operands.iter().map(|a| b.upload(a.clone())).collect()
}

fn down<E: Real, B: Backend<E>>(b: &B, matrices: &[B::Matrix]) -> Vec<Array2<E>> {
    matrices.iter().map(|m| b.download(b.view(m))).collect()
}

/// `c = a·b`, then `c += a·b` again on the upper half of the rows.
fn matmul<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let mut m = up(b, x);
    let [a, w, c] = &mut m[..] else {
        return Ok(Vec::new());
    };
    b.matmul(
        b.view(a),
        Transpose::No,
        b.view(w),
        Transpose::No,
        b.view_mut(c),
        false,
    )?;
    let half = b.matrix_dims(a).0 / 2;
    let (top, out) = (
        b.rows(b.view(a), 0, half)?,
        b.rows_mut(b.view_mut(c), 0, half)?,
    );
    b.matmul(top, Transpose::No, b.view(w), Transpose::No, out, true)?;
    Ok(down(b, &m))
}

/// `c += aᵀ·bᵀ` on a column block of `c`.
fn matmul_transposed<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let mut m = up(b, x);
    let [a, w, c] = &mut m[..] else {
        return Ok(Vec::new());
    };
    b.matmul(
        b.view(a),
        Transpose::Yes,
        b.view(w),
        Transpose::Yes,
        b.view_mut(c),
        true,
    )?;
    Ok(down(b, &m))
}

/// `c = a·B` for `B` packed as it is, then `c += a_top·B'` on the upper rows for `B'`
/// packed from a transposed matrix.
fn matmul_packed<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let mut m = up(b, x);
    let [a, w, w_t, c] = &mut m[..] else {
        return Ok(Vec::new());
    };
    let plain = b.pack(b.view(w), Transpose::No)?;
    b.matmul_packed(b.view(a), &plain, b.view_mut(c), false)?;
    b.recycle_packed(plain);
    let transposed = b.pack(b.view(w_t), Transpose::Yes)?;
    let half = b.matrix_dims(a).0 / 2;
    let (top, out) = (
        b.rows(b.view(a), 0, half)?,
        b.rows_mut(b.view_mut(c), 0, half)?,
    );
    b.matmul_packed(top, &transposed, out, true)?;
    b.recycle_packed(transposed);
    Ok(down(b, &m))
}

fn column_sums<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let mut m = up(b, x);
    let [src, dst] = &mut m[..] else {
        return Ok(Vec::new());
    };
    b.add_column_sums(b.view(src), b.view_mut(dst))?;
    Ok(down(b, &m))
}

/// Forward (tanh candidate), then backward (identity candidate) on the results.
fn decay_gates<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let mut m = up(b, x);
    let [f, b_f, v, b_v, impulse, grad] = &mut m[..] else {
        return Ok(Vec::new());
    };
    b.decay_gates(
        b.view_mut(f),
        b.view(b_f),
        b.view_mut(v),
        b.view(b_v),
        Candidate::Tanh,
        b.view_mut(impulse),
    )?;
    let mut out = down(b, &[dup(b, f)?, dup(b, v)?, dup(b, impulse)?]);
    b.decay_gates_backward(
        b.view_mut(f),
        b.view_mut(v),
        Candidate::Identity,
        b.view(impulse),
        b.view(grad),
    )?;
    out.extend(down(b, &[dup(b, f)?, dup(b, v)?]));
    Ok(out)
}

fn input_gates<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let mut m = up(b, x);
    let [f, b_f, i, b_i, z, b_z, impulse, grad] = &mut m[..] else {
        return Ok(Vec::new());
    };
    b.input_gates(
        b.view_mut(f),
        b.view(b_f),
        b.view_mut(i),
        b.view(b_i),
        b.view_mut(z),
        b.view(b_z),
        b.view_mut(impulse),
    )?;
    let mut out = down(b, &[dup(b, f)?, dup(b, i)?, dup(b, z)?, dup(b, impulse)?]);
    b.input_gates_backward(
        b.view_mut(f),
        b.view_mut(i),
        b.view_mut(z),
        b.view(impulse),
        b.view(grad),
    )?;
    out.extend(down(b, &[dup(b, f)?, dup(b, i)?, dup(b, z)?]));
    Ok(out)
}

/// Forward and backward, with and without the highway input.
fn output_gate<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let mut m = up(b, x);
    let [o, b_o, c, skip, grad] = &mut m[..] else {
        return Ok(Vec::new());
    };
    let (rows, n) = b.matrix_dims(o);
    let mut gate = dup(b, o)?;
    let [mut h, mut dc, mut dx] = [b.zeros(rows, n)?, b.zeros(rows, n)?, b.zeros(rows, n)?];
    b.output_gate(
        b.view_mut(&mut gate),
        b.view(b_o),
        b.view(c),
        None,
        b.view_mut(&mut h),
    )?;
    b.output_gate_backward(
        b.view_mut(&mut gate),
        b.view(c),
        None,
        b.view(grad),
        b.view_mut(&mut dc),
        None,
    )?;
    let mut out = down(b, &[dup(b, &h)?, dup(b, &dc)?, gate]);
    b.output_gate(
        b.view_mut(o),
        b.view(b_o),
        b.view(c),
        Some(b.view(skip)),
        b.view_mut(&mut h),
    )?;
    b.output_gate_backward(
        b.view_mut(o),
        b.view(c),
        Some(b.view(skip)),
        b.view(grad),
        b.view_mut(&mut dc),
        Some(b.view_mut(&mut dx)),
    )?;
    out.extend(down(b, &[h, dc, dx, dup(b, o)?]));
    Ok(out)
}

fn lstm_cell<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let mut m = up(b, x);
    let [gates, c_prev, grad_out, grad_rec] = &mut m[..] else {
        return Ok(Vec::new());
    };
    let (n_batch, n) = b.matrix_dims(c_prev);
    let [mut c, mut h] = [b.zeros(n_batch, n)?, b.zeros(n_batch, n)?];
    b.lstm_cell(
        b.view_mut(gates),
        Some(b.view(c_prev)),
        b.view_mut(&mut c),
        b.view_mut(&mut h),
    )?;
    let mut out = down(b, &[dup(b, gates)?, dup(b, &c)?, h]);
    let mut grad_cell = dup(b, grad_rec)?;
    b.lstm_cell_backward(
        b.view_mut(gates),
        b.view(&c),
        Some(b.view(c_prev)),
        b.view(grad_out),
        b.view(grad_rec),
        b.view_mut(&mut grad_cell),
    )?;
    out.extend(down(b, &[dup(b, gates)?, grad_cell]));
    Ok(out)
}

/// Forward and backward, from an initial state and with a gradient on the last state.
fn scan<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    case: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let m = up(b, x);
    let [decay, impulse, initial, grad, grad_last] = &m[..] else {
        return Ok(Vec::new());
    };
    let (rows, n) = b.matrix_dims(decay);
    let [mut state, mut grad_decay, mut grad_impulse] =
        [b.zeros(rows, n)?, b.zeros(rows, n)?, b.zeros(rows, n)?];
    let mut grad_initial = b.zeros(case.n_batch, n)?;
    let ends = ScanEnds {
        initial: Some(b.view(initial)),
        grad_last: Some(b.view(grad_last)),
    };
    b.scan(
        case.n_steps,
        b.view(decay),
        b.view(impulse),
        ends,
        b.view_mut(&mut state),
    )?;
    b.scan_backward(
        case.n_steps,
        b.view(decay),
        b.view(&state),
        ends,
        b.view(grad),
        b.view_mut(&mut grad_decay),
        b.view_mut(&mut grad_impulse),
        Some(b.view_mut(&mut grad_initial)),
    )?;
    Ok(down(b, &[state, grad_decay, grad_impulse, grad_initial]))
}

fn embed<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let m = up(b, x);
    let [table, scale, grad] = &m[..] else {
        return Ok(Vec::new());
    };
    let (vocab, d) = b.matrix_dims(table);
    let rows = b.matrix_dims(scale).0;
    let index: Vec<u32> = (0..rows).map(|r| ((r * 7 + 3) % vocab) as u32).collect();
    let mut out = b.zeros(rows, d)?;
    b.embed(b.view(table), &index, b.view(scale), b.view_mut(&mut out))?;
    let mut grad_table = b.zeros(vocab, d)?;
    b.embed_backward(
        b.view(grad),
        &index,
        b.view(scale),
        b.view_mut(&mut grad_table),
    )?;
    Ok(down(b, &[out, grad_table]))
}

/// `copy`, `add_assign` and `fill_rows` on row and column blocks.
fn copies<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let mut m = up(b, x);
    let [a, c, row] = &mut m[..] else {
        return Ok(Vec::new());
    };
    let (rows, n) = b.matrix_dims(a);
    let half = rows / 2;
    b.add_assign(b.view(a), b.view_mut(c))?;
    b.copy(
        b.rows(b.view(a), 0, half)?,
        b.rows_mut(b.view_mut(c), rows - half, half)?,
    )?;
    b.fill_rows(b.view(row), b.columns_mut(b.view_mut(a), 0, n)?)?;
    Ok(down(b, &m))
}

/// A copy of a matrix on its backend.
fn dup<E: Real, B: Backend<E>>(backend: &B, matrix: &B::Matrix) -> Result<B::Matrix, ModelError> {
    crate::layers::copy_matrix(backend, backend.view(matrix))
}

/// `tanh` of operands in `[−4, 4]` and its backward for a random upstream gradient.
fn tanh<E: Real, B: Backend<E>>(
    b: &B,
    x: &[Array2<E>],
    _: &Case,
) -> Result<Vec<Array2<E>>, ModelError> {
    let mut m = up(b, x);
    let [x, grad] = &mut m[..] else {
        return Ok(Vec::new());
    };
    let (rows, n) = b.matrix_dims(x);
    let mut y = b.zeros(rows, n)?;
    b.tanh(b.view(x), b.view_mut(&mut y))?;
    b.tanh_backward(b.view(&y), b.view_mut(grad))?;
    Ok(down(b, &[y, dup(b, grad)?]))
}
