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
