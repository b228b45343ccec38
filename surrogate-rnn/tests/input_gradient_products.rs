//! With the product counters (`--features product-stats`): training forms exactly the
//! products of the full backward pass minus the first layer's `∂x = ∂P·Wᵀ`, one per gate
//! block. Its own test binary, since the counters are global to the process.
#![cfg(feature = "product-stats")]

use ndarray::Array3;
use scan_cpu::Parallel;
use surrogate_rnn::backend::product_stats;
use surrogate_rnn::{
    softmax_cross_entropy, Classifier, InitConfig, InputKind, LayerKind, ModelConfig, ModelInput,
};

#[test]
fn training_skips_exactly_the_first_layers_input_products() {
    let (n_steps, n_batch, size, hidden) = (7, 3, 5, 4);
    let config = ModelConfig {
        layer: LayerKind::GilrLstm,
        input: InputKind::Dense { size },
        input_projection: None,
        hidden,
        layers: 2,
        classes: 3,
    };
    let mut model = Classifier::<f32>::new(config, InitConfig::default(), 1).unwrap();
    let x = Array3::from_shape_fn((n_steps, n_batch, size), |(t, b, k)| {
        ((t * 7 + b * 3 + k) % 11) as f32 / 11.0 - 0.5
    });
    let input = ModelInput::Dense(x.view());
    let labels = [0, 2, 1];
    let scan = Parallel::default();

    product_stats::take();
    let pass = model.forward(&scan, input).unwrap();
    let loss = softmax_cross_entropy(pass.logits(), &labels).unwrap();
    model
        .backward(&scan, input, pass, loss.grad_logits.view())
        .unwrap();
    let full = product_stats::take();

    model.loss_and_grad(&scan, input, &labels).unwrap();
    let training = product_stats::take();

    // GILR-LSTM's six gate blocks, each `(T·B, n)·(n, m)`.
    let skipped = 6 * 2 * (n_steps * n_batch * hidden * size) as u64;
    assert_eq!(full.flops - training.flops, skipped);
}
