//! Hand-derived gradients against central finite differences, in f64.
//!
//! For a layer: `L = Σ w ⊙ output` with random `w`; for the stack: the mean softmax
//! cross-entropy of a 2-layer model with head. Every parameter element and every input
//! element is checked. The error of a tensor is `max |analytic − numeric| / max(max
//! |analytic|, 10⁻³)` and must be ≤ 10⁻⁶: a wrong derivative term gives errors of the order
//! of the gradient itself, while the central difference (step 10⁻⁵) is accurate to ~10⁻⁹.

use ndarray::{Array2, Array3, ArrayView3};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scan_core::Reference;
use surrogate_rnn::{
    softmax_cross_entropy, Classifier, Dense, GateBiasInit, InitConfig, InputKind, Layer,
    LayerKind, LayerState, ModelConfig, ModelInput, OneHotSequence, Parameters, RecurrentLayer,
    ReferenceBackend,
};

const STEP: f64 = 1e-5;
const TOLERANCE: f64 = 1e-6;

#[allow(dead_code)]
fn random_array3(rng: &mut ChaCha8Rng, dim: (usize, usize, usize)) -> Array3<f64> {
    Array3::from_shape_simple_fn(dim, || rng.gen_range(-1.0..1.0))
}

/// Adds uniform noise to every parameter so biases and all gates are exercised.
fn jitter<P: Parameters<f64>>(model: &mut P, rng: &mut ChaCha8Rng) {
    model.visit_params_mut(&mut |_, mut p| p.value.mapv_inplace(|v| v + rng.gen_range(-0.5..0.5)));
}

fn collect_grads<P: Parameters<f64>>(model: &P) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    model.visit_params(&mut |name, _, grad| {
        out.push((name.to_owned(), grad.iter().copied().collect()))
    });
    out
}

/// Adds `delta` to element `element` of parameter number `param`.
fn nudge<P: Parameters<f64>>(model: &mut P, param: usize, element: usize, delta: f64) {
    let mut k = 0;
    model.visit_params_mut(&mut |_, mut p| {
        if k == param {
            *p.value.iter_mut().nth(element).expect("element exists") += delta;
        }
        k += 1;
    });
}

fn relative_error(analytic: &[f64], numeric: &[f64]) -> f64 {
    let scale = analytic.iter().fold(1e-3_f64, |m, v| m.max(v.abs()));
    let diff = analytic
        .iter()
        .zip(numeric)
        .fold(0.0_f64, |m, (a, n)| m.max((a - n).abs()));
    diff / scale
}

/// Checks every parameter of `model` given `loss` (which runs a forward pass) and the
/// analytic gradients already accumulated in `model`.
fn check_params<P: Parameters<f64>>(
    model: &mut P,
    loss: &dyn Fn(&P) -> f64,
) -> Result<(), TestCaseError> {
    let analytic = collect_grads(model);
    for (index, (name, grad)) in analytic.iter().enumerate() {
        let mut numeric = Vec::with_capacity(grad.len());
        for element in 0..grad.len() {
            nudge(model, index, element, STEP);
            let plus = loss(model);
            nudge(model, index, element, -2.0 * STEP);
            let minus = loss(model);
            nudge(model, index, element, STEP);
            numeric.push((plus - minus) / (2.0 * STEP));
        }
        let err = relative_error(grad, &numeric);
        prop_assert!(
            err <= TOLERANCE,
            "parameter {name}: relative error {err:e}\nanalytic {grad:?}\nnumeric {numeric:?}"
        );
    }
    Ok(())
}

fn check_input_grad(
    input: &Array3<f64>,
    analytic: ArrayView3<'_, f64>,
    loss: &dyn Fn(&Array3<f64>) -> f64,
) -> Result<(), TestCaseError> {
    check_array(input, analytic, "input", loss)
}

/// Checks `analytic` against central differences of `loss` at `input`.
fn check_array<D: ndarray::Dimension>(
    input: &ndarray::Array<f64, D>,
    analytic: ndarray::ArrayView<'_, f64, D>,
    what: &str,
    loss: &dyn Fn(&ndarray::Array<f64, D>) -> f64,
) -> Result<(), TestCaseError> {
    let mut x = input.clone();
    let mut numeric = Vec::with_capacity(x.len());
    for element in 0..x.len() {
        let original = x.as_slice().unwrap()[element];
        x.as_slice_mut().unwrap()[element] = original + STEP;
        let plus = loss(&x);
        x.as_slice_mut().unwrap()[element] = original - STEP;
        let minus = loss(&x);
        x.as_slice_mut().unwrap()[element] = original;
        numeric.push((plus - minus) / (2.0 * STEP));
    }
    let analytic: Vec<f64> = analytic.iter().copied().collect();
    let err = relative_error(&analytic, &numeric);
    prop_assert!(
        err <= TOLERANCE,
        "{what}: relative error {err:e}\nanalytic {analytic:?}\nnumeric {numeric:?}"
    );
    Ok(())
}

fn weighted_sum(y: &Array2<f64>, w: &Array2<f64>) -> f64 {
    (y * w).sum()
}

/// `L = Σ w ⊙ output + Σ_k w_k ⊙ final_state_k` of one layer run from `initial`.
fn layer_loss<L: Layer<f64>>(
    layer: &L,
    input: &Array2<f64>,
    n_batch: usize,
    initial: Option<&LayerState<Array2<f64>>>,
    weights: &(Array2<f64>, Vec<Array2<f64>>),
) -> f64 {
    let out = layer
        .forward(&ReferenceBackend, input.view(), n_batch, initial)
        .unwrap();
    let state: f64 = out
        .state
        .parts()
        .iter()
        .zip(&weights.1)
        .map(|(s, w)| weighted_sum(s, w))
        .sum();
    weighted_sum(&out.output, &weights.0) + state
}

/// Checks a layer's gradients with respect to its parameters, its input and (when
/// `with_state`) its incoming state, for a loss that also reads its final state.
fn check_layer<L: Layer<f64>>(
    layer: &mut L,
    (n_steps, n_batch): (usize, usize),
    seed: u64,
    with_state: bool,
) -> Result<(), TestCaseError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    jitter(layer, &mut rng);
    let random = |rng: &mut ChaCha8Rng, (r, c): (usize, usize)| {
        Array2::from_shape_simple_fn((r, c), || rng.gen_range(-1.0..1.0))
    };
    let input = random(&mut rng, (n_steps * n_batch, layer.input_size()));
    let dims = layer.state_dims(n_batch);
    let initial =
        with_state.then(|| LayerState::new(dims.iter().map(|&d| random(&mut rng, d)).collect()));
    let out = layer
        .forward(&ReferenceBackend, input.view(), n_batch, initial.as_ref())
        .unwrap();
    let weights = (
        random(&mut rng, out.output.dim()),
        dims.iter()
            .map(|&d| random(&mut rng, d))
            .collect::<Vec<_>>(),
    );
    let grad_final = LayerState::new(weights.1.clone());
    layer.zero_grad();
    let grads = layer
        .backward(
            &ReferenceBackend,
            input.view(),
            out.output.view(),
            out.cache,
            weights.0.view(),
            Some(&grad_final),
        )
        .unwrap();
    prop_assert_eq!(grads.initial.is_some(), with_state && !dims.is_empty());
    let loss_of_params = |l: &L| layer_loss(l, &input, n_batch, initial.as_ref(), &weights);
    check_params(layer, &loss_of_params)?;
    let loss_of_input = |x: &Array2<f64>| layer_loss(layer, x, n_batch, initial.as_ref(), &weights);
    check_array(&input, grads.input.view(), "input", &loss_of_input)?;
    if let (Some(initial), Some(grad_initial)) = (&initial, &grads.initial) {
        for (k, (part, grad)) in initial.parts().iter().zip(grad_initial.parts()).enumerate() {
            let loss_of_part = |p: &Array2<f64>| {
                let mut parts = initial.parts().to_vec();
                parts[k] = p.clone();
                layer_loss(
                    layer,
                    &input,
                    n_batch,
                    Some(&LayerState::new(parts)),
                    &weights,
                )
            };
            check_array(part, grad.view(), "state", &loss_of_part)?;
        }
    }
    Ok(())
}

fn layer_kinds() -> impl Strategy<Value = LayerKind> {
    prop_oneof![
        Just(LayerKind::Gilr),
        Just(LayerKind::GilrLstm),
        Just(LayerKind::GilrLstmTanh),
        (1_usize..=3).prop_map(|width| LayerKind::Qrnn { width }),
        Just(LayerKind::Qrnn { width: 10 }),
        Just(LayerKind::Sru),
        Just(LayerKind::Lstm),
    ]
}

fn init_configs() -> impl Strategy<Value = InitConfig> {
    prop_oneof![
        Just(InitConfig {
            gate_bias: GateBiasInit::Zero
        }),
        Just(InitConfig {
            gate_bias: GateBiasInit::Chrono { max_len: 20 }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn recurrent_layers_match_finite_differences(
        kind in layer_kinds(),
        init in init_configs(),
        n_steps in 1_usize..=5,
        n_batch in 1_usize..=3,
        m in 1_usize..=3,
        n in 1_usize..=3,
        seed in any::<u64>(),
        with_state in any::<bool>(),
    ) {
        let m = if kind == LayerKind::Sru { n } else { m };
        let mut layer = RecurrentLayer::<f64>::new(kind, m, n, init, seed).unwrap();
        check_layer(&mut layer, (n_steps, n_batch), seed, with_state)?;
    }

    #[test]
    fn dense_matches_finite_differences(
        n_steps in 1_usize..=3,
        n_batch in 1_usize..=3,
        m in 1_usize..=4,
        n in 1_usize..=4,
        seed in any::<u64>(),
    ) {
        let mut layer = Dense::from_arrays(Array2::zeros((m, n)), ndarray::Array1::zeros(n)).unwrap();
        check_layer(&mut layer, (n_steps, n_batch), seed, false)?;
    }

    #[test]
    fn two_layer_stack_with_head_and_loss_matches_finite_differences(
        kind in layer_kinds(),
        init in init_configs(),
        n_steps in 1_usize..=4,
        n_batch in 1_usize..=3,
        size in 1_usize..=3,
        hidden in 1_usize..=3,
        projection in proptest::option::of(1_usize..=3),
        classes in 2_usize..=3,
        seed in any::<u64>(),
    ) {
        let projection = if kind == LayerKind::Sru { Some(hidden) } else { projection };
        let config = ModelConfig {
            layer: kind,
            input: InputKind::Dense { size },
            input_projection: projection,
            hidden,
            layers: 2,
            classes,
        };
        let mut model = Classifier::<f64>::new(config, init, seed).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 1);
        jitter(&mut model, &mut rng);
        let input = random_array3(&mut rng, (n_steps, n_batch, size));
        let labels: Vec<usize> = (0..n_batch).map(|_| rng.gen_range(0..classes)).collect();
        model.zero_grad();
        let pass = model.forward(&Reference, ModelInput::Dense(input.view())).unwrap();
        let loss = softmax_cross_entropy(pass.logits(), &labels).unwrap();
        let grad_input = model
            .backward(&Reference, ModelInput::Dense(input.view()), pass, loss.grad_logits.view())
            .unwrap()
            .expect("dense inputs have a gradient");
        let loss_of = |model: &Classifier<f64>, x: &Array3<f64>| {
            let logits = model.logits(&Reference, ModelInput::Dense(x.view())).unwrap();
            softmax_cross_entropy(logits.view(), &labels).unwrap().loss
        };
        check_params(&mut model, &|m: &Classifier<f64>| loss_of(m, &input))?;
        check_input_grad(&input, grad_input.view(), &|x: &Array3<f64>| loss_of(&model, x))?;
    }

    #[test]
    fn embedding_stack_matches_finite_differences(
        kind in layer_kinds(),
        n_steps in 1_usize..=4,
        n_batch in 1_usize..=3,
        vocab in 1_usize..=5,
        hidden in 1_usize..=3,
        seed in any::<u64>(),
    ) {
        let config = ModelConfig {
            layer: kind,
            input: InputKind::OneHot { vocab },
            input_projection: Some(hidden),
            hidden,
            layers: 2,
            classes: 2,
        };
        let mut model = Classifier::<f64>::new(config, InitConfig::default(), seed).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 2);
        jitter(&mut model, &mut rng);
        let index = Array2::from_shape_simple_fn((n_steps, n_batch), || rng.gen_range(0..vocab as u32));
        let value = Array2::from_shape_simple_fn((n_steps, n_batch), || rng.gen_range(-1.5..1.5));
        let input = OneHotSequence::new(index, value, vocab).unwrap();
        let labels: Vec<usize> = (0..n_batch).map(|_| rng.gen_range(0..2)).collect();
        model.zero_grad();
        model.loss_and_grad(&Reference, ModelInput::OneHot(&input), &labels).unwrap();
        check_params(&mut model, &|m: &Classifier<f64>| {
            m.evaluate(&Reference, ModelInput::OneHot(&input), &labels).unwrap().loss
        })?;
    }
}

/// The bounded GILR-LSTM output (`h = o ⊙ tanh c`) on fixed cases, whatever the proptest
/// above happens to draw: with and without an incoming state.
#[test]
fn the_bounded_gilr_lstm_output_matches_finite_differences() {
    let init = InitConfig {
        gate_bias: GateBiasInit::Chrono { max_len: 20 },
    };
    for (seed, with_state) in [(1, false), (2, true), (3, true)] {
        let mut layer =
            RecurrentLayer::<f64>::new(LayerKind::GilrLstmTanh, 3, 4, init, seed).unwrap();
        check_layer(&mut layer, (5, 2), seed, with_state).unwrap();
    }
}
