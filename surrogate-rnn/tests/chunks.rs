//! Carried state: running a sequence in chunks is the same computation as one run.
//!
//! For every layer kind and for 2-layer classifiers (f64, tolerance 1e-10 of each
//! result's magnitude): a chunked forward pass with the state carried across equals the
//! full run; a chunked backward pass, from the last chunk to the first with the state
//! gradients carried back, equals full backpropagation; streaming inference gives the
//! full run's logits; and truncated BPTT changes the gradients but not the loss.

use ndarray::{concatenate, s, Array2, Array3, Axis};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scan_core::Reference;
use surrogate_rnn::{
    Backprop, Classifier, CpuBackend, GateBiasInit, InitConfig, InputKind, Layer, LayerKind,
    LayerState, ModelConfig, ModelInput, OneHotSequence, Parameters, RecurrentLayer,
};

mod common;
use common::{grads, layer_kinds};

const TOLERANCE: f64 = 1e-10;

fn close(what: &str, expected: &[f64], actual: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(expected.len(), actual.len(), "{}: lengths", what);
    let scale = expected.iter().fold(1e-3_f64, |m, v| m.max(v.abs()));
    let diff = expected
        .iter()
        .zip(actual)
        .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
    prop_assert!(
        diff <= TOLERANCE * scale,
        "{what}: difference {diff:e}, scale {scale:e}"
    );
    Ok(())
}

fn flat(a: &Array2<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

/// Splits `n_steps` into chunks of the given lengths (cycled), the last one shorter.
fn chunk_bounds(n_steps: usize, lengths: &[usize]) -> Vec<(usize, usize)> {
    let mut bounds = Vec::new();
    let mut start = 0;
    for &len in lengths.iter().cycle() {
        if start >= n_steps {
            break;
        }
        let len = len.min(n_steps - start);
        bounds.push((start, len));
        start += len;
    }
    bounds
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn every_layer_in_chunks_equals_one_run(
        kind in layer_kinds(),
        n_steps in 1_usize..=9,
        n_batch in 1_usize..=3,
        m in 1_usize..=3,
        n in 1_usize..=3,
        lengths in proptest::collection::vec(1_usize..=4, 1..=3),
        seed in any::<u64>(),
    ) {
        let m = if kind == LayerKind::Sru { n } else { m };
        let init = InitConfig { gate_bias: GateBiasInit::Chrono { max_len: 8 } };
        let mut layer = RecurrentLayer::<f64>::new(kind, m, n, init, seed).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = Array2::from_shape_simple_fn((n_steps * n_batch, m), || rng.gen_range(-1.0..1.0));
        let w = Array2::from_shape_simple_fn((n_steps * n_batch, n), || rng.gen_range(-1.0..1.0));
        let b = CpuBackend::new(&Reference);

        // One run.
        let full = layer.forward(&b, x.view(), n_batch, None).unwrap();
        layer.zero_grad();
        let full_grads = layer
            .backward(&b, x.view(), full.output.view(), full.cache, w.view(), None)
            .unwrap();
        let full_params = grads(&layer);

        // In chunks: forward with the state carried, then backward from the last chunk.
        let bounds = chunk_bounds(n_steps, &lengths);
        let rows = |(start, len): (usize, usize)| s![start * n_batch..(start + len) * n_batch, ..];
        let mut state: Option<LayerState<Array2<f64>>> = None;
        let mut passes = Vec::new();
        for &bound in &bounds {
            let out = layer.forward(&b, x.slice(rows(bound)), n_batch, state.as_ref()).unwrap();
            passes.push((bound, out.output, out.cache, state.take()));
            state = Some(out.state);
        }
        let outputs: Vec<_> = passes.iter().map(|p| p.1.view()).collect();
        close("output", &flat(&full.output), &flat(&concatenate(Axis(0), &outputs).unwrap()))?;
        let final_state = state.unwrap();
        prop_assert_eq!(final_state.parts().len(), full.state.parts().len());
        for (a, e) in final_state.parts().iter().zip(full.state.parts()) {
            close("final state", &flat(e), &flat(a))?;
        }
        layer.zero_grad();
        let mut carried: Option<LayerState<Array2<f64>>> = None;
        let mut grad_chunks = Vec::new();
        for (bound, output, cache, initial) in passes.into_iter().rev() {
            let grads = layer
                .backward(&b, x.slice(rows(bound)), output.view(), cache, w.slice(rows(bound)), carried.as_ref())
                .unwrap();
            prop_assert_eq!(grads.initial.is_some(), initial.is_some());
            carried = grads.initial;
            grad_chunks.push(grads.input);
        }
        grad_chunks.reverse();
        let views: Vec<_> = grad_chunks.iter().map(|g| g.view()).collect();
        close("input gradient", &flat(&full_grads.input), &flat(&concatenate(Axis(0), &views).unwrap()))?;
        close("parameter gradients", &full_params, &grads(&layer))?;
    }

    #[test]
    fn two_layer_classifier_in_chunks_equals_one_run(
        kind in layer_kinds(),
        one_hot in any::<bool>(),
        n_steps in 2_usize..=10,
        n_batch in 1_usize..=3,
        chunk_len in 1_usize..=4,
        seed in any::<u64>(),
    ) {
        let (size, hidden) = (3, 3);
        let input_kind = if one_hot { InputKind::OneHot { vocab: size } } else { InputKind::Dense { size } };
        let projection = if one_hot || kind == LayerKind::Sru { Some(hidden) } else { None };
        let config = ModelConfig { layer: kind, input: input_kind, input_projection: projection, hidden, layers: 2, classes: 2 };
        let init = InitConfig { gate_bias: GateBiasInit::Chrono { max_len: 8 } };
        let mut model = Classifier::<f64>::new(config, init, seed).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 5);
        let dense = Array3::from_shape_simple_fn((n_steps, n_batch, size), || rng.gen_range(-1.0..1.0));
        let index = Array2::from_shape_simple_fn((n_steps, n_batch), || rng.gen_range(0..size as u32));
        let value = Array2::from_shape_simple_fn((n_steps, n_batch), || rng.gen_range(-1.0..1.0));
        let one_hot_input = OneHotSequence::new(index, value, size).unwrap();
        let input = if one_hot { ModelInput::OneHot(&one_hot_input) } else { ModelInput::Dense(dense.view()) };
        let labels: Vec<usize> = (0..n_batch).map(|_| rng.gen_range(0..2)).collect();
        let scan = Reference;

        let logits = model.logits(&scan, input).unwrap();
        let streamed = model.predict_streaming(&scan, input, chunk_len).unwrap();
        close("streamed logits", &flat(&logits), &flat(&streamed))?;

        model.zero_grad();
        let full = model.loss_and_grad(&scan, input, &labels).unwrap();
        let full_grads = grads(&model);
        model.zero_grad();
        let chunked = model.loss_and_grad_chunked(&scan, input, &labels, chunk_len, Backprop::Full).unwrap();
        close("loss", &[full.loss], &[chunked.loss])?;
        close("parameter gradients", &full_grads, &grads(&model))?;

        model.zero_grad();
        let truncated = model.loss_and_grad_chunked(&scan, input, &labels, chunk_len, Backprop::Truncated).unwrap();
        close("truncated loss", &[full.loss], &[truncated.loss])?;
        let truncated_grads = grads(&model);
        if chunk_len < n_steps {
            // Whatever reaches the first chunk only through the carried state is cut:
            // with a one-step look-back this includes the first chunk's input path.
            let differs = truncated_grads.iter().zip(&full_grads).any(|(a, b)| (a - b).abs() > 1e-9 * b.abs().max(1e-3));
            prop_assert!(differs, "truncation changed no gradient");
        } else {
            close("one-chunk truncated gradients", &full_grads, &truncated_grads)?;
        }
    }
}

/// `train_step_chunked(Full)` makes the update `train_step` makes (f64, to rounding).
#[test]
fn chunked_training_step_equals_the_full_step() {
    use surrogate_rnn::{Adam, AdamConfig};
    let config = ModelConfig {
        layer: LayerKind::GilrLstm,
        input: InputKind::Dense { size: 2 },
        input_projection: Some(3),
        hidden: 3,
        layers: 2,
        classes: 2,
    };
    let x = Array3::from_shape_fn((11, 3, 2), |(t, b, k)| {
        ((t * 3 + b * 5 + k) % 7) as f64 / 7.0 - 0.5
    });
    let labels = [1, 0, 1];
    let params = |model: &Classifier<f64>| {
        let mut out = Vec::new();
        model.visit_params(&mut |_, v, _| out.extend(v.iter().copied()));
        out
    };
    let mut full = Classifier::<f64>::new(config, InitConfig::default(), 9).unwrap();
    let mut chunked = full.clone();
    let (mut adam_full, mut adam_chunked) = (
        Adam::new(AdamConfig::default(), &full),
        Adam::new(AdamConfig::default(), &chunked),
    );
    for _ in 0..3 {
        let a = full
            .train_step(
                &mut adam_full,
                &Reference,
                ModelInput::Dense(x.view()),
                &labels,
            )
            .unwrap();
        let b = chunked
            .train_step_chunked(
                &mut adam_chunked,
                &Reference,
                ModelInput::Dense(x.view()),
                &labels,
                4,
                Backprop::Full,
            )
            .unwrap();
        assert!(
            (a.batch.loss - b.batch.loss).abs() <= 1e-12,
            "{a:?} vs {b:?}"
        );
    }
    for (a, b) in params(&full).iter().zip(params(&chunked)) {
        assert!((a - b).abs() <= 1e-10 * a.abs().max(1.0), "{a} vs {b}");
    }
}

/// `SyntheticTask::chunks_for_step` yields exactly `batch_for_step`'s sequences, and
/// streaming them chunk by chunk gives the full run's logits.
#[test]
fn synthetic_chunks_are_the_batch_in_pieces() {
    use surrogate_rnn::SyntheticTask;
    let task = SyntheticTask::new(23, 5).unwrap();
    let batch = task.batch_for_step::<f64>(3, 7, 4).unwrap();
    let (labels, chunks) = task.chunks_for_step::<f64>(3, 7, 4, 6).unwrap();
    assert_eq!(labels, batch.labels);
    let chunks: Vec<_> = chunks.collect::<Result<_, _>>().unwrap();
    assert_eq!(
        chunks.iter().map(|c| c.dim().0).collect::<Vec<_>>(),
        [6, 6, 6, 5]
    );
    let index: Vec<_> = chunks.iter().map(|c| c.index()).collect();
    let value: Vec<_> = chunks.iter().map(|c| c.value()).collect();
    assert_eq!(concatenate(Axis(0), &index).unwrap(), batch.input.index());
    assert_eq!(concatenate(Axis(0), &value).unwrap(), batch.input.value());
    let config = ModelConfig {
        layer: LayerKind::Qrnn { width: 3 },
        input: InputKind::OneHot { vocab: 5 },
        input_projection: Some(3),
        hidden: 3,
        layers: 2,
        classes: 2,
    };
    let model = Classifier::<f64>::new(config, InitConfig::default(), 1).unwrap();
    let logits = model
        .logits(&Reference, ModelInput::OneHot(&batch.input))
        .unwrap();
    let mut stream = model.stream();
    for chunk in &chunks {
        stream.feed(&Reference, ModelInput::OneHot(chunk)).unwrap();
    }
    assert_eq!(stream.n_steps(), 23);
    let streamed = stream.logits().unwrap().to_owned();
    for (a, b) in logits.iter().zip(&streamed) {
        assert!((a - b).abs() <= 1e-10 * a.abs().max(1.0), "{a} vs {b}");
    }
}
