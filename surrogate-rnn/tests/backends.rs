//! The serial and the parallel scan give the same loss and gradients (f32) for every
//! model kind: switching the backend is one argument and changes only rounding.
//!
//! Tolerance: each gradient tensor agrees to `1e-4 · max(max |g|, 1e-3)` and the loss to a
//! relative `1e-5` — a few hundred f32 roundings, far below any real discrepancy.

use ndarray::Array3;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scan_core::LinearScan;
use scan_cpu::{Parallel, Serial};
use surrogate_rnn::{
    Classifier, GateBiasInit, InitConfig, InputKind, LayerKind, ModelConfig, ModelInput, Parameters,
};

fn loss_and_grads(
    kind: LayerKind,
    scan: &dyn LinearScan<f32>,
    input: &Array3<f32>,
    labels: &[usize],
) -> (f64, Vec<Vec<f32>>) {
    let config = ModelConfig {
        layer: kind,
        input: InputKind::Dense { size: 3 },
        input_projection: Some(16),
        hidden: 16,
        layers: 2,
        classes: 3,
    };
    let init = InitConfig {
        gate_bias: GateBiasInit::Chrono { max_len: 300 },
    };
    let mut model = Classifier::<f32>::new(config, init, 42).unwrap();
    let stats = model
        .loss_and_grad(scan, ModelInput::Dense(input.view()), labels)
        .unwrap();
    let mut grads = Vec::new();
    model.visit_params(&mut |_, _, g| grads.push(g.iter().copied().collect()));
    (stats.loss, grads)
}

#[test]
fn serial_and_parallel_scans_agree_for_every_model() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (n_steps, n_batch) = (300, 4);
    let input =
        Array3::from_shape_simple_fn((n_steps, n_batch, 3), || rng.gen_range(-1.0..1.0_f32));
    let labels: Vec<usize> = (0..n_batch).map(|_| rng.gen_range(0..3)).collect();
    for kind in [
        LayerKind::Gilr,
        LayerKind::GilrLstm,
        LayerKind::Qrnn { width: 2 },
        LayerKind::Qrnn { width: 10 },
        LayerKind::Sru,
        LayerKind::Lstm,
    ] {
        let (serial_loss, serial) = loss_and_grads(kind, &Serial::default(), &input, &labels);
        let (parallel_loss, parallel) = loss_and_grads(kind, &Parallel::default(), &input, &labels);
        assert!(
            (serial_loss - parallel_loss).abs() <= 1e-5 * serial_loss.abs(),
            "{kind:?}: loss {serial_loss} vs {parallel_loss}"
        );
        for (k, (s, p)) in serial.iter().zip(&parallel).enumerate() {
            let scale = s.iter().fold(1e-3_f32, |m, v| m.max(v.abs()));
            let diff = s
                .iter()
                .zip(p)
                .fold(0.0_f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-4 * scale,
                "{kind:?}: parameter {k}: difference {diff} vs scale {scale}"
            );
        }
    }
}
