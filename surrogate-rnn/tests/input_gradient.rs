//! Training skips ∂L/∂input where the input is data: `Layer::backward_params` and the
//! classifier's training entry points give exactly the parameter and state gradients of
//! the full backward pass, for every layer kind, with and without carried state.

use ndarray::{Array2, Array3};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scan_core::Reference;
use scan_cpu::Parallel;
use surrogate_rnn::{
    softmax_cross_entropy, Backprop, Classifier, CpuBackend, Dense, GateBiasInit, InitConfig,
    InputKind, Layer, LayerKind, LayerState, ModelConfig, ModelInput, Parameters, RecurrentLayer,
};

mod common;
use common::{grads, layer_kinds};

fn random(rng: &mut ChaCha8Rng, dims: (usize, usize)) -> Array2<f64> {
    Array2::from_shape_simple_fn(dims, || rng.gen_range(-1.0..1.0))
}

/// A random state of the shapes `dims`.
fn random_state(rng: &mut ChaCha8Rng, dims: &[(usize, usize)]) -> LayerState<Array2<f64>> {
    LayerState::new(dims.iter().map(|&d| random(rng, d)).collect())
}

/// Parameter gradients and ∂L/∂(incoming state) of `backward` and of `backward_params`
/// from the same forward call, which must be equal bit for bit.
fn check_layer<L: Layer<f64>>(
    layer: &mut L,
    (n_steps, n_batch): (usize, usize),
    with_state: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let (m, n) = (layer.input_size(), layer.output_size());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = random(&mut rng, (n_steps * n_batch, m));
    let grad_h = random(&mut rng, (n_steps * n_batch, n));
    let dims = layer.state_dims(n_batch);
    let initial = with_state.then(|| random_state(&mut rng, &dims));
    let grad_final = with_state.then(|| random_state(&mut rng, &dims));
    let b = CpuBackend::new(&Reference);

    let out = layer
        .forward(&b, x.view(), n_batch, initial.as_ref())
        .unwrap();
    layer.zero_grad();
    let (y, cache) = (out.output.view(), out.cache);
    let full = layer
        .backward(&b, x.view(), y, cache, grad_h.view(), grad_final.as_ref())
        .unwrap();
    prop_assert_eq!(full.input.dim(), (n_steps * n_batch, m));
    let expected = grads(layer);

    let out = layer
        .forward(&b, x.view(), n_batch, initial.as_ref())
        .unwrap();
    layer.zero_grad();
    let (y, cache) = (out.output.view(), out.cache);
    let state = layer
        .backward_params(&b, x.view(), y, cache, grad_h.view(), grad_final.as_ref())
        .unwrap();
    prop_assert_eq!(grads(layer), expected, "parameter gradients");
    prop_assert_eq!(state, full.initial, "state gradients");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_layer_gives_the_same_parameter_gradients_without_the_input_gradient(
        kind in layer_kinds(),
        n_steps in 1_usize..=7,
        n_batch in 1_usize..=3,
        m in 1_usize..=4,
        n in 1_usize..=4,
        with_state in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let m = if kind == LayerKind::Sru { n } else { m };
        let init = InitConfig { gate_bias: GateBiasInit::Chrono { max_len: 8 } };
        let mut layer = RecurrentLayer::<f64>::new(kind, m, n, init, seed).unwrap();
        check_layer(&mut layer, (n_steps, n_batch), with_state, seed)?;
    }

    #[test]
    fn dense_gives_the_same_parameter_gradients_without_the_input_gradient(
        n_steps in 1_usize..=5,
        n_batch in 1_usize..=3,
        m in 1_usize..=4,
        n in 1_usize..=4,
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 7);
        let weight = random(&mut rng, (m, n));
        let bias = random(&mut rng, (1, n)).into_shape_with_order(n).unwrap();
        let mut layer = Dense::from_arrays(weight, bias).unwrap();
        check_layer(&mut layer, (n_steps, n_batch), false, seed)?;
    }

    /// `loss_and_grad` and `loss_and_grad_chunked` (which skip ∂L/∂input) against
    /// `forward` + `backward` (which returns it), on dense inputs with and without a
    /// linear encoder and on one-hot inputs with an embedding.
    #[test]
    fn training_entry_points_give_the_gradients_of_the_full_backward_pass(
        kind in layer_kinds(),
        encoder in 0_usize..3,
        n_steps in 1_usize..=6,
        n_batch in 1_usize..=3,
        chunk_len in 1_usize..=4,
        seed in any::<u64>(),
    ) {
        let (size, hidden) = (3, 2);
        let (input, input_projection) = match encoder {
            0 if kind != LayerKind::Sru => (InputKind::Dense { size }, None),
            0 | 1 => (InputKind::Dense { size }, Some(hidden)),
            _ => (InputKind::OneHot { vocab: size }, Some(hidden)),
        };
        let config = ModelConfig { layer: kind, input, input_projection, hidden, layers: 2, classes: 3 };
        let init = InitConfig { gate_bias: GateBiasInit::Chrono { max_len: 8 } };
        let mut model = Classifier::<f64>::new(config, init, seed).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 3);
        let dense = Array3::from_shape_simple_fn((n_steps, n_batch, size), || rng.gen_range(-1.0..1.0));
        let tokens = Array2::from_shape_simple_fn((n_steps, n_batch), || rng.gen_range(0..size as u32));
        let values = Array2::from_elem((n_steps, n_batch), 1.0);
        let one_hot = surrogate_rnn::OneHotSequence::new(tokens, values, size).unwrap();
        let input = match encoder {
            2 => ModelInput::OneHot(&one_hot),
            _ => ModelInput::Dense(dense.view()),
        };
        let labels: Vec<usize> = (0..n_batch).map(|_| rng.gen_range(0..3)).collect();
        let scan = Parallel::default();

        model.zero_grad();
        let pass = model.forward(&scan, input).unwrap();
        let loss = softmax_cross_entropy(pass.logits(), &labels).unwrap();
        let grad_input = model.backward(&scan, input, pass, loss.grad_logits.view()).unwrap();
        prop_assert_eq!(grad_input.is_some(), encoder != 2);
        let expected = grads(&model);

        model.zero_grad();
        let stats = model.loss_and_grad(&scan, input, &labels).unwrap();
        prop_assert_eq!(stats.loss, loss.loss);
        prop_assert_eq!(grads(&model), expected.clone(), "loss_and_grad");

        // In chunks (every chunk's input is data, and the state's gradient flows through
        // `backward_params`) the products split differently: only rounding may differ.
        model.zero_grad();
        model.loss_and_grad_chunked(&scan, input, &labels, chunk_len, Backprop::Full).unwrap();
        let chunked = grads(&model);
        let scale = expected.iter().fold(1e-3_f64, |m, g| m.max(g.abs()));
        for (a, e) in chunked.iter().zip(&expected) {
            prop_assert!((a - e).abs() <= 1e-10 * scale, "chunked: {} against {}", a, e);
        }
    }
}
