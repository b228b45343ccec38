//! Training smoke test: a GILR-LSTM learns the synthetic long-dependency task of
//! PAPER.md §3 (n = 256 steps, p = 128) to 100 % accuracy on fresh sequences.

use std::time::Instant;

use scan_cpu::Parallel;
use surrogate_rnn::{
    Adam, AdamConfig, Classifier, GateBiasInit, InitConfig, InputKind, LayerKind, ModelConfig,
    ModelInput, SyntheticTask,
};

const SEQ_LEN: usize = 256;
const DIM: usize = 128;
const BATCH: usize = 32;
const MAX_ITERATIONS: u64 = 400;

#[test]
fn gilr_lstm_learns_the_synthetic_task() {
    let task = SyntheticTask::new(SEQ_LEN, DIM).unwrap();
    let config = ModelConfig {
        layer: LayerKind::GilrLstm,
        input: InputKind::OneHot { vocab: DIM },
        input_projection: Some(16),
        hidden: 32,
        layers: 2,
        classes: SyntheticTask::N_CLASSES,
    };
    let init = InitConfig {
        gate_bias: GateBiasInit::Chrono { max_len: SEQ_LEN },
    };
    let seed = 2024;
    let mut model = Classifier::<f32>::new(config, init, seed).unwrap();
    let adam_config = AdamConfig {
        learning_rate: 3e-3,
        clip_norm: Some(1.0),
        ..AdamConfig::default()
    };
    let mut adam = Adam::new(adam_config, &model);
    let scan = Parallel::default();
    let start = Instant::now();
    let mut perfect_in_a_row = 0;
    let mut iterations = 0;
    for step in 0..MAX_ITERATIONS {
        let batch = task.batch_for_step::<f32>(seed, step, BATCH).unwrap();
        let stats = model
            .train_step(
                &mut adam,
                &scan,
                ModelInput::OneHot(&batch.input),
                &batch.labels,
            )
            .unwrap();
        iterations = step + 1;
        if step % 20 == 0 {
            eprintln!(
                "step {step}: loss {:.4}, accuracy {:.3}",
                stats.batch.loss, stats.batch.accuracy
            );
        }
        perfect_in_a_row = if stats.batch.accuracy == 1.0 {
            perfect_in_a_row + 1
        } else {
            0
        };
        if perfect_in_a_row == 5 {
            break;
        }
    }
    // Fresh sequences the model has never seen (another seed).
    let eval = task.batch_for_step::<f32>(seed + 1, 0, 256).unwrap();
    let stats = model
        .evaluate(&scan, ModelInput::OneHot(&eval.input), &eval.labels)
        .unwrap();
    eprintln!(
        "trained {iterations} iterations in {:.2?}; eval accuracy {} (loss {:.4})",
        start.elapsed(),
        stats.accuracy,
        stats.loss
    );
    assert_eq!(
        perfect_in_a_row, 5,
        "no convergence within {MAX_ITERATIONS} iterations"
    );
    assert_eq!(stats.accuracy, 1.0, "accuracy on 256 fresh sequences");
}
