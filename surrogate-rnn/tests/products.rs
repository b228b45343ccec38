//! Products through `CpuBackend` on the routes the conformance suite's small shapes do not
//! reach, against the reference backend: a weight gradient long enough to be split over
//! its inner dimension (`Xᵀ·∂P` with `k = 65536`, 2²⁴ multiply-adds: the smallest product
//! that runs on both threads) and the thin products of a layer of a few units (`k` and `n`
//! of 4–8 over 40,000 rows), in f32 and f64; and the shape errors of the packed products.

use ndarray::Array2;
use scan_cpu::Serial;
use surrogate_rnn::backend::Transpose;
use surrogate_rnn::{Backend, CpuBackend, ModelError, Real, ReferenceBackend};

fn filled<E: Real>(rows: usize, cols: usize, seed: usize) -> Array2<E> {
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        E::from_f64(((r * 13 + c * 7 + seed * 5) % 17) as f64 / 8.5 - 1.0)
    })
}

/// `CpuBackend::matmul` against the reference on `op(a)·op(b)`, with and without
/// accumulation, to `tolerance` relative.
fn agrees_with_reference<E: Real>(
    a: &Array2<E>,
    transpose_a: Transpose,
    b: &Array2<E>,
    transpose_b: Transpose,
    tolerance: f64,
) {
    let m = if transpose_a == Transpose::Yes {
        a.ncols()
    } else {
        a.nrows()
    };
    let n = if transpose_b == Transpose::Yes {
        b.nrows()
    } else {
        b.ncols()
    };
    let scan = Serial::default();
    let cpu = CpuBackend::new(&scan);
    for accumulate in [false, true] {
        let mut want = filled::<E>(m, n, 3);
        let mut got = want.clone();
        let (a, b) = (a.view(), b.view());
        ReferenceBackend
            .matmul(a, transpose_a, b, transpose_b, want.view_mut(), accumulate)
            .unwrap();
        cpu.matmul(a, transpose_a, b, transpose_b, got.view_mut(), accumulate)
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            let (g, w) = (g.as_f64(), w.as_f64());
            assert!(
                (g - w).abs() <= tolerance * w.abs().max(1.0),
                "{} {m}×{n}: {g} vs {w}",
                E::NAME
            );
        }
    }
}

fn split_weight_gradient<E: Real>(tolerance: f64) {
    let (k, m, n) = (65536, 16, 16);
    let (x, grad) = (filled::<E>(k, m, 1), filled::<E>(k, n, 2));
    agrees_with_reference(&x, Transpose::Yes, &grad, Transpose::No, tolerance);
}

#[test]
fn a_weight_gradient_split_over_its_inner_dimension_is_the_product() {
    split_weight_gradient::<f64>(1e-10);
    split_weight_gradient::<f32>(1e-3);
}

/// The thin products of a layer of 4 units with 8 inputs (Table 3 at n = 2²⁰), long enough
/// to be split over both threads: `X·V`, `∂P·Uᵀ` and `Xᵀ·∂P`.
fn thin_products<E: Real>(tolerance: f64) {
    let rows = 40_000;
    let (x, v, grad, u) = (
        filled::<E>(rows, 8, 1),
        filled::<E>(8, 4, 2),
        filled::<E>(rows, 4, 4),
        filled::<E>(4, 4, 5),
    );
    agrees_with_reference(&x, Transpose::No, &v, Transpose::No, tolerance);
    agrees_with_reference(&grad, Transpose::No, &u, Transpose::Yes, tolerance);
    agrees_with_reference(&x, Transpose::Yes, &grad, Transpose::No, tolerance);
}

#[test]
fn thin_products_are_the_product() {
    thin_products::<f64>(1e-10);
    thin_products::<f32>(1e-3);
}

#[test]
fn packed_products_reject_operands_that_do_not_fit() {
    let u = filled::<f64>(5, 12, 1);
    let scan = Serial::default();
    let cpu = CpuBackend::new(&scan);
    // (shape of a, shape of c, the argument the error names)
    let cases = [
        ((3, 4), (3, 12), "b"), // a has 4 columns, the packed operand 5 rows
        ((3, 5), (3, 11), "b"), // c has 11 columns: b checked against a and c
        ((3, 5), (2, 12), "c"), // c has 2 rows, not 3
    ];
    for (a_dims, c_dims, argument) in cases {
        let a = filled::<f64>(a_dims.0, a_dims.1, 2);
        let mut c = Array2::<f64>::zeros(c_dims);
        let packed = cpu.pack(u.view(), Transpose::No).unwrap();
        let on_cpu = cpu.matmul_packed(a.view(), &packed, c.view_mut(), false);
        cpu.recycle_packed(packed);
        let packed = ReferenceBackend.pack(u.view(), Transpose::No).unwrap();
        let on_reference = ReferenceBackend.matmul_packed(a.view(), &packed, c.view_mut(), true);
        for result in [on_cpu, on_reference] {
            match result {
                Err(ModelError::ShapeMismatch {
                    operation,
                    argument: got,
                    ..
                }) => {
                    assert_eq!(operation, "Backend::matmul_packed");
                    assert_eq!(got, argument);
                }
                other => panic!("{a_dims:?}, {c_dims:?}: {other:?}"),
            }
        }
        assert!(
            c.iter().all(|&x| x == 0.0),
            "nothing is written on an error"
        );
    }
}
