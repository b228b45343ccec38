//! The CPU backend's elementwise kernels. Each computes one fused pass on a block of rows
//! (every row a contiguous slice, see `rowwise`) in code compiled for AVX-512 or AVX2 when
//! the CPU has them (checked at run time) and for the baseline instruction set elsewhere.
//! The loops are plain slice loops that the compiler vectorizes; the arithmetic is the same
//! for every instruction set (no multiply-add is fused), so all give the same bits.
//!
//! On the Xeon of issue 12 the decay-gate pass over `(8192, 512)` took 12.1 ms through
//! ndarray's parallel `Zip` (one element per rayon item, SSE2 at best) and 3.4 ms here.

use itertools::izip;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use super::isa::vectorized;
use crate::ops::{sigmoid, tanh};
use crate::Real;

type Rows<'a, E> = ArrayView2<'a, E>;
type RowsMut<'a, E> = ArrayViewMut2<'a, E>;

/// A row as a slice. The passes give the kernels only operands with contiguous rows
/// (`rowwise::unit_rows`), so the empty fallback is never taken.
#[inline(always)]
fn row<'a, E>(row: ArrayView1<'a, E>) -> &'a [E] {
    let slice = row.to_slice();
    debug_assert!(slice.is_some(), "a kernel was given a strided row");
    slice.unwrap_or_default()
}

/// A written row as a slice (see [`row`]).
#[inline(always)]
fn row_mut<'a, E>(row: ArrayViewMut1<'a, E>) -> &'a mut [E] {
    let slice = row.into_slice();
    debug_assert!(slice.is_some(), "a kernel was given a strided row");
    slice.unwrap_or_default()
}

vectorized! {
    /// `f = σ(f + b_f)`, `v = act(v + b_v)` (`tanh` when `squash`, else identity) and
    /// `x = (1 − f) ⊙ v`.
    fn decay_gates(
        f: RowsMut<'_, E>,
        v: RowsMut<'_, E>,
        x: RowsMut<'_, E>,
        b_f: &[E],
        b_v: &[E],
        squash: bool,
    ) {
        let (mut f, mut v, mut x) = (f, v, x);
        for (f, v, x) in izip!(f.rows_mut(), v.rows_mut(), x.rows_mut()) {
            for (f, v, x, &b_f, &b_v) in izip!(row_mut(f), row_mut(v), row_mut(x), b_f, b_v) {
                let fv = sigmoid(*f + b_f);
                let vv = if squash { tanh(*v + b_v) } else { *v + b_v };
                *f = fv;
                *v = vv;
                *x = (E::one() - fv) * vv;
            }
        }
    }
}

vectorized! {
    /// Backward of [`decay_gates`] from the activated `f`, `v`: overwrites them with
    /// `(∂a − ∂x ⊙ v) ⊙ σ'` and `∂x ⊙ (1 − f) ⊙ act'`.
    fn decay_gates_backward(
        f: RowsMut<'_, E>,
        v: RowsMut<'_, E>,
        grad_decay: Rows<'_, E>,
        grad_impulse: Rows<'_, E>,
        squash: bool,
    ) {
        let (mut f, mut v) = (f, v);
        let rows = izip!(f.rows_mut(), v.rows_mut(), grad_decay.rows(), grad_impulse.rows());
        for (f, v, da, dx) in rows {
            for (f, v, &da, &dx) in izip!(row_mut(f), row_mut(v), row(da), row(dx)) {
                let (fv, vv) = (*f, *v);
                *f = (da - dx * vv) * fv * (E::one() - fv);
                *v = if squash {
                    dx * (E::one() - fv) * (E::one() - vv * vv)
                } else {
                    dx * (E::one() - fv)
                };
            }
        }
    }
}

vectorized! {
    /// `f = σ(f + b_f)`, `i = σ(i + b_i)`, `z = tanh(z + b_z)` and `x = i ⊙ z`.
    fn input_gates(
        f: RowsMut<'_, E>,
        i: RowsMut<'_, E>,
        z: RowsMut<'_, E>,
        x: RowsMut<'_, E>,
        b_f: &[E],
        b_i: &[E],
        b_z: &[E],
    ) {
        let (mut f, mut i, mut z, mut x) = (f, i, z, x);
        for (f, i, z, x) in izip!(f.rows_mut(), i.rows_mut(), z.rows_mut(), x.rows_mut()) {
            let (f, i, z, x) = (row_mut(f), row_mut(i), row_mut(z), row_mut(x));
            for (f, i, z, x, &b_f, &b_i, &b_z) in izip!(f, i, z, x, b_f, b_i, b_z) {
                let (iv, zv) = (sigmoid(*i + b_i), tanh(*z + b_z));
                *f = sigmoid(*f + b_f);
                *i = iv;
                *z = zv;
                *x = iv * zv;
            }
        }
    }
}

vectorized! {
    /// Backward of [`input_gates`] from the activated gates: overwrites `f, i, z` with
    /// `∂a ⊙ σ'(f)`, `∂x ⊙ z ⊙ σ'(i)`, `∂x ⊙ i ⊙ tanh'(z)`.
    fn input_gates_backward(
        f: RowsMut<'_, E>,
        i: RowsMut<'_, E>,
        z: RowsMut<'_, E>,
        grad_decay: Rows<'_, E>,
        grad_impulse: Rows<'_, E>,
    ) {
        let (mut f, mut i, mut z) = (f, i, z);
        let rows = izip!(
            f.rows_mut(),
            i.rows_mut(),
            z.rows_mut(),
            grad_decay.rows(),
            grad_impulse.rows()
        );
        for (f, i, z, da, dx) in rows {
            let (f, i, z) = (row_mut(f), row_mut(i), row_mut(z));
            for (f, i, z, &da, &dx) in izip!(f, i, z, row(da), row(dx)) {
                let (fv, iv, zv) = (*f, *i, *z);
                *f = da * fv * (E::one() - fv);
                *i = dx * zv * iv * (E::one() - iv);
                *z = dx * iv * (E::one() - zv * zv);
            }
        }
    }
}

vectorized! {
    /// `o = σ(o + b_o)` and `h = o ⊙ c`.
    fn output_gate(h: RowsMut<'_, E>, o: RowsMut<'_, E>, b_o: &[E], c: Rows<'_, E>) {
        let (mut h, mut o) = (h, o);
        for (h, o, c) in izip!(h.rows_mut(), o.rows_mut(), c.rows()) {
            for (h, o, &c, &b_o) in izip!(row_mut(h), row_mut(o), row(c), b_o) {
                let ov = sigmoid(*o + b_o);
                *o = ov;
                *h = ov * c;
            }
        }
    }
}

vectorized! {
    /// The highway: `r = σ(r + b_r)` and `h = r ⊙ c + (1 − r) ⊙ x`.
    fn highway_gate(
        h: RowsMut<'_, E>,
        r: RowsMut<'_, E>,
        b_r: &[E],
        c: Rows<'_, E>,
        x: Rows<'_, E>,
    ) {
        let (mut h, mut r) = (h, r);
        for (h, r, c, x) in izip!(h.rows_mut(), r.rows_mut(), c.rows(), x.rows()) {
            for (h, r, &c, &x, &b_r) in izip!(row_mut(h), row_mut(r), row(c), row(x), b_r) {
                let rv = sigmoid(*r + b_r);
                *r = rv;
                *h = rv * c + (E::one() - rv) * x;
            }
        }
    }
}

vectorized! {
    /// Backward of [`output_gate`]: `∂c = ∂h ⊙ o`; `o` becomes `∂h ⊙ c ⊙ σ'(o)`.
    fn output_gate_backward(
        grad_cell: RowsMut<'_, E>,
        o: RowsMut<'_, E>,
        grad_out: Rows<'_, E>,
        c: Rows<'_, E>,
    ) {
        let (mut grad_cell, mut o) = (grad_cell, o);
        let rows = izip!(grad_cell.rows_mut(), o.rows_mut(), grad_out.rows(), c.rows());
        for (dc, o, dh, c) in rows {
            for (dc, o, &dh, &c) in izip!(row_mut(dc), row_mut(o), row(dh), row(c)) {
                let ov = *o;
                *dc = dh * ov;
                *o = dh * c * ov * (E::one() - ov);
            }
        }
    }
}

vectorized! {
    /// Backward of [`highway_gate`]: `∂c = ∂h ⊙ r`, `∂x = ∂h ⊙ (1 − r)`; `r` becomes
    /// `∂h ⊙ (c − x) ⊙ σ'(r)`.
    fn highway_gate_backward(
        grad_cell: RowsMut<'_, E>,
        grad_skip: RowsMut<'_, E>,
        r: RowsMut<'_, E>,
        grad_out: Rows<'_, E>,
        c: Rows<'_, E>,
        x: Rows<'_, E>,
    ) {
        let (mut grad_cell, mut grad_skip, mut r) = (grad_cell, grad_skip, r);
        let rows = izip!(
            grad_cell.rows_mut(),
            grad_skip.rows_mut(),
            r.rows_mut(),
            grad_out.rows(),
            c.rows(),
            x.rows()
        );
        for (dc, dx, r, dh, c, x) in rows {
            let (dc, dx, r) = (row_mut(dc), row_mut(dx), row_mut(r));
            for (dc, dx, r, &dh, &c, &x) in izip!(dc, dx, r, row(dh), row(c), row(x)) {
                let rv = *r;
                *dc = dh * rv;
                *dx = dh * (E::one() - rv);
                *r = dh * (c - x) * rv * (E::one() - rv);
            }
        }
    }
}

vectorized! {
    /// `y = tanh(x)`.
    fn tanh_rows(y: RowsMut<'_, E>, x: Rows<'_, E>) {
        let mut y = y;
        for (y, x) in izip!(y.rows_mut(), x.rows()) {
            for (y, &x) in izip!(row_mut(y), row(x)) {
                *y = tanh(x);
            }
        }
    }
}

vectorized! {
    /// `g = g ⊙ (1 − y²)`: the backward of `y = tanh(x)` from `y`.
    fn tanh_backward_rows(grad: RowsMut<'_, E>, y: Rows<'_, E>) {
        let mut grad = grad;
        for (g, y) in izip!(grad.rows_mut(), y.rows()) {
            for (g, &y) in izip!(row_mut(g), row(y)) {
                *g = *g * (E::one() - y * y);
            }
        }
    }
}

vectorized! {
    /// `dst += Σ_rows src` into the `(1, n)` row `dst`, every column summed from the
    /// first row down (a serial loop's order).
    fn add_column_sums(src: Rows<'_, E>, dst: RowsMut<'_, E>) {
        let mut dst = dst;
        let mut sums = vec![E::zero(); src.ncols()];
        // One slice for the whole block where it is one (no view per row: at 4 columns the
        // row views cost more than the sums).
        match src.as_slice().filter(|_| !sums.is_empty()) {
            Some(all) => {
                for r in all.chunks_exact(sums.len()) {
                    for (s, &x) in izip!(&mut sums, r) {
                        *s = *s + x;
                    }
                }
            }
            None => {
                for r in src.rows() {
                    for (s, &x) in izip!(&mut sums, row(r)) {
                        *s = *s + x;
                    }
                }
            }
        }
        for (d, s) in izip!(dst.iter_mut(), sums) {
            *d = *d + s;
        }
    }
}

/// One row of gates `[f i o z]` (each `n` wide) as four slices.
#[inline(always)]
fn gate_blocks<E>(gates: &mut [E], n: usize) -> [&mut [E]; 4] {
    let (f, rest) = gates.split_at_mut(n.min(gates.len()));
    let (i, rest) = rest.split_at_mut(n.min(rest.len()));
    let (o, z) = rest.split_at_mut(n.min(rest.len()));
    [f, i, o, z]
}

/// One LSTM element: activates the gates in place, `c = f·prev + i·z`, `h = o·tanh(c)`.
#[inline(always)]
fn lstm_element<E: Real>(gates: [&mut E; 4], prev: E, c: &mut E, h: &mut E) {
    let [f, i, o, z] = gates;
    let (fv, iv) = (sigmoid(*f), sigmoid(*i));
    let (ov, zv) = (sigmoid(*o), tanh(*z));
    (*f, *i, *o, *z) = (fv, iv, ov, zv);
    let cv = fv * prev + iv * zv;
    *c = cv;
    *h = ov * tanh(cv);
}

vectorized! {
    /// One LSTM step on rows of pre-activations `[f i o z]` `(B, 4n)`: see
    /// [`lstm_element`]; `prev` is the previous cell, zeros when `None`.
    fn lstm_cell(
        gates: RowsMut<'_, E>,
        cell: RowsMut<'_, E>,
        out: RowsMut<'_, E>,
        prev: Option<Rows<'_, E>>,
    ) {
        let (mut gates, mut cell, mut out) = (gates, cell, out);
        let n = cell.ncols();
        let rows = izip!(gates.rows_mut(), cell.rows_mut(), out.rows_mut());
        match prev {
            Some(prev) => {
                for ((g, c, h), p) in rows.zip(prev.rows()) {
                    let [f, i, o, z] = gate_blocks(row_mut(g), n);
                    for (f, i, o, z, c, h, &p) in izip!(f, i, o, z, row_mut(c), row_mut(h), row(p)) {
                        lstm_element([f, i, o, z], p, c, h);
                    }
                }
            }
            None => {
                for (g, c, h) in rows {
                    let [f, i, o, z] = gate_blocks(row_mut(g), n);
                    for (f, i, o, z, c, h) in izip!(f, i, o, z, row_mut(c), row_mut(h)) {
                        lstm_element([f, i, o, z], E::zero(), c, h);
                    }
                }
            }
        }
    }
}

/// Backward of one LSTM element from the activated gates, the cell `c`, the previous cell
/// `prev` and `∂h`: see [`lstm_cell_backward`].
#[inline(always)]
fn lstm_element_backward<E: Real>(gates: [&mut E; 4], carry: &mut E, c: E, prev: E, dh: E) {
    let [f, i, o, z] = gates;
    let (fv, iv, ov, zv) = (*f, *i, *o, *z);
    let tc = tanh(c);
    let dc = dh * ov * (E::one() - tc * tc) + *carry;
    *carry = dc * fv;
    *f = dc * prev * fv * (E::one() - fv);
    *i = dc * zv * iv * (E::one() - iv);
    *o = dh * tc * ov * (E::one() - ov);
    *z = dc * iv * (E::one() - zv * zv);
}

vectorized! {
    /// Backward of one LSTM step: `∂h = ∂out + ∂rec`; `carry` holds `∂c_{t+1}⊙f_{t+1}`
    /// on entry and `∂c_t⊙f_t` on return; the gates become their pre-activation
    /// gradients. `prev` is the previous cell, zeros when `None`.
    fn lstm_cell_backward(
        gates: RowsMut<'_, E>,
        carry: RowsMut<'_, E>,
        cell: Rows<'_, E>,
        prev: Option<Rows<'_, E>>,
        grad_out: Rows<'_, E>,
        grad_recurrent: Rows<'_, E>,
    ) {
        let (mut gates, mut carry) = (gates, carry);
        let n = carry.ncols();
        let rows = izip!(
            gates.rows_mut(),
            carry.rows_mut(),
            cell.rows(),
            grad_out.rows(),
            grad_recurrent.rows()
        );
        match prev {
            Some(prev) => {
                for ((g, carry, c, a, b), p) in rows.zip(prev.rows()) {
                    let [f, i, o, z] = gate_blocks(row_mut(g), n);
                    let (carry, c, p, a, b) = (row_mut(carry), row(c), row(p), row(a), row(b));
                    for (f, i, o, z, carry, &c, &p, &a, &b) in izip!(f, i, o, z, carry, c, p, a, b) {
                        lstm_element_backward([f, i, o, z], carry, c, p, a + b);
                    }
                }
            }
            None => {
                for (g, carry, c, a, b) in rows {
                    let [f, i, o, z] = gate_blocks(row_mut(g), n);
                    let (carry, c, a, b) = (row_mut(carry), row(c), row(a), row(b));
                    for (f, i, o, z, carry, &c, &a, &b) in izip!(f, i, o, z, carry, c, a, b) {
                        lstm_element_backward([f, i, o, z], carry, c, E::zero(), a + b);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::isa::Isa;
    use ndarray::Array2;

    /// Values of every sign up to ±125 (past `e^x`'s clamp), with ±∞ and NaN among them.
    fn values(rows: usize, cols: usize, seed: u32) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(r, c)| {
            let k = (r * 131 + c * 71 + seed as usize * 17) % 997;
            match k {
                0 => f32::INFINITY,
                1 => f32::NEG_INFINITY,
                2 => f32::NAN,
                _ => (k as f32 - 498.0) / 4.0,
            }
        })
    }

    /// Every instruction set this CPU has gives the baseline's bits, for each kernel.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let (rows, n) = (5, 37);
        let bias: Vec<f32> = values(1, 4 * n, 9).iter().copied().collect();
        let run = |isa: Isa| {
            let mut m: Vec<Array2<f32>> = (0..6).map(|k| values(rows, n, k)).collect();
            let mut gates = values(rows, 4 * n, 7);
            let [a, b, c, d, e, f] = &mut m[..] else {
                unreachable!()
            };
            decay_gates(
                isa,
                a.view_mut(),
                b.view_mut(),
                c.view_mut(),
                &bias[..n],
                &bias[n..2 * n],
                true,
            );
            decay_gates_backward(isa, a.view_mut(), b.view_mut(), d.view(), e.view(), false);
            input_gates(
                isa,
                a.view_mut(),
                b.view_mut(),
                c.view_mut(),
                d.view_mut(),
                &bias[..n],
                &bias[n..2 * n],
                &bias[2 * n..3 * n],
            );
            input_gates_backward(
                isa,
                a.view_mut(),
                b.view_mut(),
                c.view_mut(),
                e.view(),
                f.view(),
            );
            output_gate(isa, a.view_mut(), b.view_mut(), &bias[..n], c.view());
            highway_gate(
                isa,
                d.view_mut(),
                b.view_mut(),
                &bias[..n],
                c.view(),
                e.view(),
            );
            output_gate_backward(isa, a.view_mut(), b.view_mut(), c.view(), d.view());
            highway_gate_backward(
                isa,
                a.view_mut(),
                b.view_mut(),
                c.view_mut(),
                d.view(),
                e.view(),
                f.view(),
            );
            tanh_rows(isa, a.view_mut(), f.view());
            tanh_backward_rows(isa, b.view_mut(), a.view());
            add_column_sums(isa, a.view(), f.slice_mut(ndarray::s![0..1, ..]));
            lstm_cell(
                isa,
                gates.view_mut(),
                c.view_mut(),
                d.view_mut(),
                Some(e.view()),
            );
            lstm_cell_backward(
                isa,
                gates.view_mut(),
                e.view_mut(),
                c.view(),
                None,
                d.view(),
                f.view(),
            );
            m.push(gates);
            m
        };
        let baseline = run(Isa::None);
        for isa in Isa::supported() {
            let got = run(isa);
            for (g, b) in got.iter().zip(&baseline) {
                let same = g
                    .iter()
                    .zip(b)
                    .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()));
                assert!(same, "{isa:?} differs from the baseline");
            }
        }
    }
}
