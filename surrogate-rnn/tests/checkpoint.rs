//! Checkpoints: a round trip reproduces the next training step bit-for-bit; mismatched,
//! corrupt and truncated files are clean errors.

use std::collections::BTreeMap;

use scan_core::Reference;
use surrogate_rnn::{
    load_checkpoint, load_checkpoint_into, read_checkpoint_meta, save_checkpoint, Adam, AdamConfig,
    Classifier, GateBiasInit, InitConfig, InputKind, LayerKind, ModelConfig, ModelError,
    ModelInput, Parameters, SyntheticTask,
};

fn config(hidden: usize) -> ModelConfig {
    ModelConfig {
        layer: LayerKind::GilrLstm,
        input: InputKind::OneHot { vocab: 8 },
        input_projection: Some(4),
        hidden,
        layers: 2,
        classes: 2,
    }
}

fn params(model: &Classifier<f32>) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    model.visit_params(&mut |_, value, _| out.push(value.iter().map(|v| v.to_bits()).collect()));
    out
}

fn trained(seed: u64) -> (Classifier<f32>, Adam<f32>, SyntheticTask) {
    let task = SyntheticTask::new(12, 8).unwrap();
    let init = InitConfig {
        gate_bias: GateBiasInit::Chrono { max_len: 12 },
    };
    let mut model = Classifier::<f32>::new(config(6), init, seed).unwrap();
    let adam_config = AdamConfig {
        learning_rate: 1e-2,
        clip_norm: Some(1.0),
        ..AdamConfig::default()
    };
    let mut adam = Adam::new(adam_config, &model);
    for step in 0..3 {
        let batch = task.batch_for_step::<f32>(seed, step, 4).unwrap();
        model
            .train_step(
                &mut adam,
                &Reference,
                ModelInput::OneHot(&batch.input),
                &batch.labels,
            )
            .unwrap();
    }
    (model, adam, task)
}

#[test]
fn round_trip_reproduces_the_next_step_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.safetensors");
    let seed = 11;
    let (mut model, mut adam, task) = trained(seed);
    let mut extra = BTreeMap::new();
    extra.insert("note".to_owned(), "test".to_owned());
    save_checkpoint(&path, &model, &adam, seed, &extra).unwrap();
    let meta = read_checkpoint_meta(&path).unwrap();
    assert_eq!((meta.seed, meta.step, meta.extra), (seed, 3, extra));
    let (mut restored, mut restored_adam, _) = load_checkpoint::<f32>(&path).unwrap();
    assert_eq!(params(&model), params(&restored));
    assert_eq!(restored_adam.steps(), 3);

    let batch = task.batch_for_step::<f32>(seed, 3, 4).unwrap();
    let input = ModelInput::OneHot(&batch.input);
    let a = model
        .train_step(&mut adam, &Reference, input, &batch.labels)
        .unwrap();
    let b = restored
        .train_step(&mut restored_adam, &Reference, input, &batch.labels)
        .unwrap();
    assert_eq!(a.batch.loss.to_bits(), b.batch.loss.to_bits());
    assert_eq!(params(&model), params(&restored));
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn another_shape_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.safetensors");
    let (model, adam, _) = trained(3);
    save_checkpoint(&path, &model, &adam, 3, &BTreeMap::new()).unwrap();
    let mut other = Classifier::<f32>::new(config(5), InitConfig::default(), 1).unwrap();
    let mut other_adam = Adam::new(AdamConfig::default(), &other);
    let before = params(&other);
    let err = load_checkpoint_into(&path, &mut other, &mut other_adam).unwrap_err();
    assert!(matches!(err, ModelError::Checkpoint { .. }), "{err}");
    assert!(err.to_string().contains("configured as"), "{err}");
    assert_eq!(before, params(&other));
    // The wrong element type is refused too.
    let err = load_checkpoint::<f64>(&path).unwrap_err();
    assert!(err.to_string().contains("f32"), "{err}");
}

#[test]
fn corrupt_and_truncated_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.safetensors");
    let (model, adam, _) = trained(5);
    save_checkpoint(&path, &model, &adam, 5, &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for broken in [
        &bytes[..bytes.len() - 7],
        &bytes[..5],
        b"garbage, not a checkpoint".as_slice(),
    ] {
        std::fs::write(&path, broken).unwrap();
        let err = load_checkpoint::<f32>(&path).unwrap_err();
        assert!(matches!(err, ModelError::Checkpoint { .. }), "{err}");
    }
    let err = load_checkpoint::<f32>(&dir.path().join("missing.safetensors")).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
}

#[test]
fn a_flipped_bit_anywhere_fails_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.safetensors");
    let (model, adam, _) = trained(7);
    save_checkpoint(&path, &model, &adam, 7, &BTreeMap::new()).unwrap();
    let good = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    // One exponent bit of the last value, then one of the first tensor byte.
    for at in [good.len() - 1, 8 + header_len] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = load_checkpoint::<f32>(&path).unwrap_err();
        assert!(matches!(err, ModelError::Checkpoint { .. }), "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
    }
    // An edited metadata value of the same length.
    let at = good
        .windows(10)
        .position(|w| w == b"\"step\":\"3\"")
        .expect("the step in the header");
    let mut bytes = good.clone();
    bytes[at + 8] = b'4';
    std::fs::write(&path, &bytes).unwrap();
    for err in [
        load_checkpoint::<f32>(&path).unwrap_err(),
        read_checkpoint_meta(&path).unwrap_err(),
    ] {
        assert!(err.to_string().contains("checksum"), "{err}");
    }
    std::fs::write(&path, &good).unwrap();
    assert!(load_checkpoint::<f32>(&path).is_ok());
}
