//! The compute-backend conformance suite (`surrogate_rnn::backend::conformance`) on the CPU
//! backend, in `f64` (tolerance 1e-10 of each result's magnitude) and `f32` (1e-4; the
//! reference computes in f64), over random shapes: T = 1 and odd sizes, B ≥ 1, n ≥ 1 (past
//! two AVX-512 panels of f32 for the packed products), inner sizes including 0.

use proptest::prelude::*;
use scan_cpu::{Parallel, Serial};
use surrogate_rnn::backend::conformance::{check_backend, Case};
use surrogate_rnn::{CpuBackend, Subnormals};

fn cases() -> impl Strategy<Value = Case> {
    (
        1_usize..=13,
        1_usize..=4,
        1_usize..=37,
        0_usize..=7,
        any::<u64>(),
    )
        .prop_map(|(n_steps, n_batch, n_features, n_inner, seed)| Case {
            n_steps,
            n_batch,
            n_features,
            n_inner,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn cpu_backend_conforms_in_f64(case in cases()) {
        let scan = Serial::default();
        let result = check_backend::<f64, _>(&CpuBackend::new(&scan), &case, 1e-10);
        prop_assert!(result.is_ok(), "{case:?}: {result:?}");
    }

    #[test]
    fn cpu_backend_conforms_in_f32(case in cases()) {
        let scan = Parallel::default();
        let result = check_backend::<f32, _>(&CpuBackend::new(&scan), &case, 1e-4);
        prop_assert!(result.is_ok(), "{case:?}: {result:?}");
    }
}

/// A whole model runs on the reference backend too: its logits and gradients match the
/// CPU backend's (f64, 1e-10 of their magnitude).
#[test]
fn a_classifier_runs_on_the_reference_backend() {
    use ndarray::Array3;
    use surrogate_rnn::{
        softmax_cross_entropy, Classifier, InitConfig, InputKind, LayerKind, ModelConfig,
        ModelInput, Parameters, ReferenceBackend,
    };
    let grads = |model: &Classifier<f64>| {
        let mut out = Vec::new();
        model.visit_params(&mut |_, _, g| out.extend(g.iter().copied()));
        out
    };
    for layer in [
        LayerKind::GilrLstm,
        LayerKind::GilrLstmTanh,
        LayerKind::Qrnn { width: 2 },
        LayerKind::Lstm,
    ] {
        let config = ModelConfig {
            layer,
            input: InputKind::Dense { size: 3 },
            input_projection: Some(4),
            hidden: 4,
            layers: 2,
            classes: 3,
        };
        let mut model = Classifier::<f64>::new(config, InitConfig::default(), 3).unwrap();
        let x = Array3::from_shape_fn((7, 2, 3), |(t, b, k)| {
            ((t * 5 + b * 3 + k) % 7) as f64 / 7.0 - 0.4
        });
        let input = ModelInput::Dense(x.view());
        let labels = [2, 0];
        model.zero_grad();
        model
            .loss_and_grad(&Serial::default(), input, &labels)
            .unwrap();
        let expected = grads(&model);
        let logits = model.logits(&Serial::default(), input).unwrap();
        model.zero_grad();
        let (pass, _) = model.forward_on(&ReferenceBackend, input, None).unwrap();
        let on_reference = pass.logits().to_owned();
        let loss = softmax_cross_entropy(pass.logits(), &labels).unwrap();
        model
            .backward_on(
                &ReferenceBackend,
                input,
                pass,
                Some(loss.grad_logits.view()),
                None,
            )
            .unwrap();
        let actual = grads(&model);
        for (e, a) in logits
            .iter()
            .zip(&on_reference)
            .chain(expected.iter().zip(&actual))
        {
            assert!(
                (e - a).abs() <= 1e-10 * e.abs().max(1.0),
                "{layer:?}: {e} vs {a}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// IEEE gradual underflow, the non-default mode, conforms too.
    #[test]
    fn cpu_backend_with_gradual_underflow_conforms_in_f32(case in cases()) {
        let scan = Parallel::default();
        let backend = CpuBackend::new(&scan).with_subnormals(Subnormals::Preserve);
        let result = check_backend::<f32, _>(&backend, &case, 1e-4);
        prop_assert!(result.is_ok(), "{case:?}: {result:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every layer on the CPU backend (f64) against the reference backend: output, final
    /// state and every gradient to 1e-10 of their magnitude. T from 1 covers the LSTM's
    /// passes with one step product (read unpacked) beside packed ones; B past 16 its
    /// products through `gemm`.
    #[test]
    fn every_layer_on_the_cpu_backend_matches_the_reference_backend(
        kind in prop_oneof![
            Just(surrogate_rnn::LayerKind::Gilr),
            Just(surrogate_rnn::LayerKind::GilrLstm),
            Just(surrogate_rnn::LayerKind::GilrLstmTanh),
            (1_usize..=3).prop_map(|width| surrogate_rnn::LayerKind::Qrnn { width }),
            Just(surrogate_rnn::LayerKind::Sru),
            Just(surrogate_rnn::LayerKind::Lstm),
        ],
        n_steps in 1_usize..=4,
        n_batch in prop_oneof![1_usize..=3, 17_usize..=19],
        m in 1_usize..=5,
        n in 1_usize..=37,
        with_state in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let m = if kind == surrogate_rnn::LayerKind::Sru { n } else { m };
        let scan = Parallel::default();
        let on_cpu = layer_run(&CpuBackend::new(&scan), kind, (n_steps, n_batch, m, n), with_state, seed);
        let on_reference = layer_run(&surrogate_rnn::ReferenceBackend, kind, (n_steps, n_batch, m, n), with_state, seed);
        prop_assert_eq!(on_cpu.len(), on_reference.len());
        for (k, (a, e)) in on_cpu.iter().zip(&on_reference).enumerate() {
            prop_assert_eq!(a.len(), e.len());
            let scale = e.iter().fold(1.0_f64, |s, v| s.max(v.abs()));
            let diff = a.iter().zip(e).fold(0.0_f64, |d, (a, e)| d.max((a - e).abs()));
            prop_assert!(diff <= 1e-10 * scale, "result {}: difference {:e}", k, diff);
        }
    }
}

/// A layer's forward and backward on `backend` from seeded random operands: its output,
/// final state, parameter gradients, input gradient and state gradients, flattened.
fn layer_run<B: surrogate_rnn::Backend<f64>>(
    backend: &B,
    kind: surrogate_rnn::LayerKind,
    (n_steps, n_batch, m, n): (usize, usize, usize, usize),
    with_state: bool,
    seed: u64,
) -> Vec<Vec<f64>> {
    use ndarray::Array2;
    use surrogate_rnn::{InitConfig, Layer, LayerState, Parameters, RecurrentLayer};
    let mut layer = RecurrentLayer::<f64>::new(kind, m, n, InitConfig::default(), seed).unwrap();
    let mut state = seed;
    let mut random = |(rows, cols): (usize, usize)| {
        Array2::from_shape_simple_fn((rows, cols), || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1_u64 << 52) as f64 - 1.0
        })
    };
    let x = random((n_steps * n_batch, m));
    let grad_h = random((n_steps * n_batch, n));
    let dims = layer.state_dims(n_batch);
    let initial = with_state.then(|| LayerState::new(dims.iter().map(|&d| random(d)).collect()));
    let grad_final = LayerState::new(dims.iter().map(|&d| random(d)).collect());
    let up = |a: &Array2<f64>| backend.upload(a.clone());
    let state_on =
        |s: &LayerState<Array2<f64>>| LayerState::new(s.parts().iter().map(up).collect());
    let (x_on, grad_h_on) = (up(&x), up(&grad_h));
    let initial_on = initial.as_ref().map(state_on);
    let grad_final_on = state_on(&grad_final);
    let down = |m: &B::Matrix| {
        backend
            .download(backend.view(m))
            .iter()
            .copied()
            .collect::<Vec<_>>()
    };

    let out = layer
        .forward(backend, backend.view(&x_on), n_batch, initial_on.as_ref())
        .unwrap();
    let mut results = vec![down(&out.output)];
    results.extend(out.state.parts().iter().map(down));
    layer.zero_grad();
    let grads = layer
        .backward(
            backend,
            backend.view(&x_on),
            backend.view(&out.output),
            out.cache,
            backend.view(&grad_h_on),
            Some(&grad_final_on),
        )
        .unwrap();
    let mut params = Vec::new();
    layer.visit_params(&mut |_, _, g| params.extend(g.iter().copied()));
    results.push(params);
    results.push(down(&grads.input));
    if let Some(initial) = &grads.initial {
        results.extend(initial.parts().iter().map(down));
    }
    results
}
