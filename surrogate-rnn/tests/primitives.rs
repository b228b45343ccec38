//! Each layer primitive's backward against central finite differences, in f64 on the
//! reference backend: gate projections, the gated scan (tanh and identity candidates), the
//! input-gated scan, and the output gate with and without its highway input. The loss is
//! `L = Σ w ⊙ output (+ Σ w_last ⊙ last state)` for random `w`; every operand is checked
//! (relative error ≤ 1e-6, step 1e-5).

use ndarray::{s, Array2};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use surrogate_rnn::backend::{Backend, Candidate, ScanEnds};
use surrogate_rnn::layers::primitives::{
    gated_scan, gated_scan_backward, input_gated_scan, input_gated_scan_backward, output_gate,
    output_gate_backward, project, project_backward, ScanGrad,
};
use surrogate_rnn::ReferenceBackend;

const STEP: f64 = 1e-5;
const TOLERANCE: f64 = 1e-6;
const B: ReferenceBackend = ReferenceBackend;

fn random(rng: &mut ChaCha8Rng, dims: (usize, usize)) -> Array2<f64> {
    Array2::from_shape_simple_fn(dims, || rng.gen_range(-1.0..1.0))
}

fn weighted(y: &Array2<f64>, w: &Array2<f64>) -> f64 {
    (y * w).sum()
}

/// Compares `analytic[k]` with the central difference of `loss` in `inputs[k]`.
fn check(
    names: &[&str],
    inputs: &[Array2<f64>],
    analytic: &[Array2<f64>],
    loss: &dyn Fn(&[Array2<f64>]) -> f64,
) -> Result<(), TestCaseError> {
    for (k, (name, grad)) in names.iter().zip(analytic).enumerate() {
        let mut x = inputs.to_vec();
        let mut numeric = Array2::zeros(grad.dim());
        for index in 0..grad.len() {
            let (r, c) = (index / grad.ncols(), index % grad.ncols());
            let original = x[k][[r, c]];
            x[k][[r, c]] = original + STEP;
            let plus = loss(&x);
            x[k][[r, c]] = original - STEP;
            let minus = loss(&x);
            x[k][[r, c]] = original;
            numeric[[r, c]] = (plus - minus) / (2.0 * STEP);
        }
        let scale = grad.iter().fold(1e-3_f64, |m, v| m.max(v.abs()));
        let err = (grad - &numeric)
            .iter()
            .fold(0.0_f64, |m, v| m.max(v.abs()))
            / scale;
        prop_assert!(
            err <= TOLERANCE,
            "{name}: relative error {err:e}\nanalytic {grad}\nnumeric {numeric}"
        );
    }
    Ok(())
}

/// The backward input of a scan whose states are `c`, from `initial`, with `∂L/∂c = w`
/// and `w_last` on the last state.
fn grad<'a>(
    c: &'a Array2<f64>,
    initial: &'a Array2<f64>,
    w_last: &'a Array2<f64>,
    w: &'a Array2<f64>,
) -> ScanGrad<ndarray::ArrayView2<'a, f64>> {
    let ends = ScanEnds {
        initial: Some(initial.view()),
        grad_last: Some(w_last.view()),
    };
    ScanGrad {
        state: c.view(),
        ends,
        grad_state: w.view(),
        want_initial: true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn gated_scan_backward_matches_finite_differences(
        n_steps in 1_usize..=4, n_batch in 1_usize..=2, n in 1_usize..=3,
        tanh in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rows = n_steps * n_batch;
        let activation = if tanh { Candidate::Tanh } else { Candidate::Identity };
        let inputs = [(rows, n), (1, n), (rows, n), (1, n), (n_batch, n)].map(|d| random(&mut rng, d));
        let (w, w_last) = (random(&mut rng, (rows, n)), random(&mut rng, (n_batch, n)));
        let run = |x: &[Array2<f64>]| {
            let (mut f, mut v) = (x[0].clone(), x[2].clone());
            let (c, _) = gated_scan(&B, n_steps, &mut f, x[1].view(), &mut v, x[3].view(), activation, Some(x[4].view())).unwrap();
            (f, v, c)
        };
        let loss = |x: &[Array2<f64>]| {
            let c = run(x).2;
            weighted(&c, &w) + weighted(&c.slice(s![rows - n_batch.., ..]).to_owned(), &w_last)
        };
        let (mut f, mut v, c) = run(&inputs);
        let grad_c0 = gated_scan_backward(&B, n_steps, [&mut f, &mut v], activation, grad(&c, &inputs[4], &w_last, &w)).unwrap().unwrap();
        let bias = |g: &Array2<f64>| g.sum_axis(ndarray::Axis(0)).insert_axis(ndarray::Axis(0));
        let analytic = [f.clone(), bias(&f), v.clone(), bias(&v), grad_c0];
        check(&["P_f", "b_f", "P_v", "b_v", "c_0"], &inputs, &analytic, &loss)?;
    }

    #[test]
    fn input_gated_scan_backward_matches_finite_differences(
        n_steps in 1_usize..=4, n_batch in 1_usize..=2, n in 1_usize..=3, seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rows = n_steps * n_batch;
        let inputs = [(rows, n), (rows, n), (rows, n), (n_batch, n)].map(|d| random(&mut rng, d));
        let biases = [(1, n), (1, n), (1, n)].map(|d| random(&mut rng, d));
        let (w, w_last) = (random(&mut rng, (rows, n)), random(&mut rng, (n_batch, n)));
        let run = |x: &[Array2<f64>]| {
            let (mut f, mut i, mut z) = (x[0].clone(), x[1].clone(), x[2].clone());
            let views = [biases[0].view(), biases[1].view(), biases[2].view()];
            let (c, _) = input_gated_scan(&B, n_steps, [&mut f, &mut i, &mut z], views, Some(x[3].view())).unwrap();
            (f, i, z, c)
        };
        let loss = |x: &[Array2<f64>]| {
            let c = run(x).3;
            weighted(&c, &w) + weighted(&c.slice(s![rows - n_batch.., ..]).to_owned(), &w_last)
        };
        let (mut f, mut i, mut z, c) = run(&inputs);
        let grad_c0 = input_gated_scan_backward(&B, n_steps, [&mut f, &mut i, &mut z], grad(&c, &inputs[3], &w_last, &w)).unwrap().unwrap();
        check(&["P_f", "P_i", "P_z", "c_0"], &inputs, &[f, i, z, grad_c0], &loss)?;
    }

    #[test]
    fn output_gate_backward_matches_finite_differences(
        rows in 1_usize..=5, n in 1_usize..=3, highway in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let inputs = [(rows, n), (1, n), (rows, n), (rows, n)].map(|d| random(&mut rng, d));
        let w = random(&mut rng, (rows, n));
        let run = |x: &[Array2<f64>]| {
            let mut o = x[0].clone();
            let skip = highway.then(|| x[3].view());
            let h = output_gate(&B, &mut o, x[1].view(), x[2].view(), skip).unwrap();
            (o, h)
        };
        let loss = |x: &[Array2<f64>]| weighted(&run(x).1, &w);
        let mut o = run(&inputs).0;
        let skip = highway.then(|| inputs[3].view());
        let (grad_c, grad_x) = output_gate_backward(&B, &mut o, inputs[2].view(), skip, w.view()).unwrap();
        let grad_b = o.sum_axis(ndarray::Axis(0)).insert_axis(ndarray::Axis(0));
        let mut analytic = vec![o, grad_b, grad_c];
        let mut names = vec!["P_o", "b_o", "c"];
        if let Some(grad_x) = grad_x {
            analytic.push(grad_x);
            names.push("x");
        }
        check(&names, &inputs, &analytic, &loss)?;
    }

    #[test]
    fn projection_backward_matches_finite_differences(
        rows in 1_usize..=5, m in 1_usize..=3, n in 1_usize..=3, n_gates in 1_usize..=3, seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let inputs = [(rows, m), (m, n_gates * n)].map(|d| random(&mut rng, d));
        let weights: Vec<_> = (0..n_gates).map(|_| random(&mut rng, (rows, n))).collect();
        let loss = |x: &[Array2<f64>]| {
            let mut gates: Vec<Array2<f64>> = (0..n_gates).map(|_| Array2::zeros((rows, n))).collect();
            let mut views: Vec<_> = gates.iter_mut().map(|g| g.view_mut()).collect();
            project(&B, x[0].view(), x[1].view(), &mut views, false).unwrap();
            gates.iter().zip(&weights).map(|(g, w)| weighted(g, w)).sum()
        };
        let (mut grad_x, mut grad_w) = (Array2::zeros((rows, m)), Array2::zeros((m, n_gates * n)));
        let mut grad_b = Array2::zeros((1, n_gates * n));
        let grads: Vec<_> = weights.iter().map(|w| B.view(w)).collect();
        project_backward(&B, inputs[0].view(), inputs[1].view(), grad_w.view_mut(), Some(grad_b.view_mut()), &grads, Some(grad_x.view_mut())).unwrap();
        let sums: Vec<f64> = weights.iter().flat_map(|w| w.sum_axis(ndarray::Axis(0)).to_vec()).collect();
        for (a, e) in grad_b.iter().zip(&sums) {
            prop_assert!((a - e).abs() <= 1e-12 * e.abs().max(1.0), "bias gradient {a} vs {e}");
        }
        check(&["x", "W"], &inputs, &[grad_x, grad_w], &loss)?;
    }
}
