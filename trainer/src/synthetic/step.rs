//! How much of a sequence one pass holds in memory: a training step runs whole while its
//! activations fit in [`TRAIN_STEP_BYTES`], and otherwise in chunks with exact gradients
//! (boundary states kept, each chunk's activations recomputed just before its backward
//! pass); an evaluation in one process streams in chunks of [`EVAL_CHUNK_BYTES`]
//! ([`LSTM_EVAL_CHUNK_BYTES`] for the LSTM).

use anyhow::Result;
use scan_core::LinearScan;
use surrogate_rnn::{
    Adam, Backprop, Classifier, LayerKind, ModelConfig, ModelError, ModelInput, TrainStats,
};

use crate::limits;

/// Memory one training step's activations may use before the step runs in chunks. Below
/// it (every default run up to n = 8,192 at 2 × 32, batch 16), steps run whole, as before
/// chunking existed.
pub const TRAIN_STEP_BYTES: u128 = 1 << 30;

/// Activation memory one chunk of a streaming evaluation may use (layers on the scan).
/// Each chunk costs a fixed number of passes, and a chunk of few rows runs them on one
/// thread: at 256 sequences, 4 MiB meant 5–58 steps per chunk and an evaluation 1.4–2×
/// slower than 128 MiB (the fastest of 4–512 MiB for 1 × 4, 2 × 16 and 2 × 32
/// GILR-LSTMs, idle Xeon; see the trainer README). Earlier code, before the passes were
/// vectorized and pooled, had been fastest at 4 MiB. An eighth of [`TRAIN_STEP_BYTES`],
/// the most that one training step holds at once.
pub const EVAL_CHUNK_BYTES: u128 = 128 << 20;

/// [`EVAL_CHUNK_BYTES`] for the LSTM baseline, whose serial loop reads each step's gates
/// from the chunk's input projection: in a 4 MiB chunk they stay in the L2 cache. Its
/// evaluation at n = 8,192 (2 × 32) took 1.6–2.2 s with 4 MiB chunks against 2.2–2.8 s
/// with 128 MiB (`trainer synthetic -n 8192 --model lstm`, seeds 1 and 2, five pairs of
/// alternating builds).
pub const LSTM_EVAL_CHUNK_BYTES: u128 = 4 << 20;

/// Bytes of activations per step of a sequence, at `batch` sequences (the marginal cost
/// of one more step in [`limits::training_bytes`]).
fn bytes_per_step(config: &ModelConfig, batch: usize) -> Result<u128> {
    Ok(limits::training_bytes(config, 2, batch)?
        .saturating_sub(limits::training_bytes(config, 1, batch)?)
        .max(1))
}

/// Steps per chunk when the activations of one chunk may use `budget` bytes.
fn steps_within(config: &ModelConfig, seq_len: usize, batch: usize, budget: u128) -> Result<usize> {
    let fitting = usize::try_from(budget / bytes_per_step(config, batch)?).unwrap_or(usize::MAX);
    Ok(fitting.clamp(1, seq_len.max(1)))
}

/// Steps per chunk of a streaming evaluation of `batch` sequences of `seq_len` steps.
pub fn eval_chunk_len(config: &ModelConfig, seq_len: usize, batch: usize) -> Result<usize> {
    let budget = match config.layer {
        LayerKind::Lstm => LSTM_EVAL_CHUNK_BYTES,
        _ => EVAL_CHUNK_BYTES,
    };
    steps_within(config, seq_len, batch, budget)
}

/// Sequences of `seq_len` steps that one pass of a split evaluation holds at once: as
/// many as a training step's activations would fit in [`TRAIN_STEP_BYTES`] (at least 1,
/// at most `batch`), so an evaluation needs no more memory than training.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub fn eval_batch_within(config: &ModelConfig, seq_len: usize, batch: usize) -> Result<usize> {
    let per_sequence = limits::training_bytes(config, seq_len, 2)?
        .saturating_sub(limits::training_bytes(config, seq_len, 1)?)
        .max(1);
    let fitting = usize::try_from(TRAIN_STEP_BYTES / per_sequence).unwrap_or(usize::MAX);
    Ok(fitting.clamp(1, batch.max(1)))
}

/// `None` when a training step at `seq_len × batch` fits in [`TRAIN_STEP_BYTES`] and runs
/// whole; otherwise the chunk length it runs in.
pub fn train_chunk_len(
    config: &ModelConfig,
    seq_len: usize,
    batch: usize,
) -> Result<Option<usize>> {
    if limits::training_bytes(config, seq_len, batch)? <= TRAIN_STEP_BYTES {
        return Ok(None);
    }
    steps_within(config, seq_len, batch, TRAIN_STEP_BYTES).map(Some)
}

/// Bytes a training step at `seq_len × batch` needs as it will run: the whole-step
/// estimate, or for a chunked step one chunk's estimate plus the input of the whole
/// sequence (one-hot index and value, 8 bytes a step and sequence) and one carried state
/// per chunk boundary.
pub fn training_bytes(config: &ModelConfig, seq_len: usize, batch: usize) -> Result<u128> {
    let Some(chunk_len) = train_chunk_len(config, seq_len, batch)? else {
        return limits::training_bytes(config, seq_len, batch);
    };
    let chunk = limits::training_bytes(config, chunk_len, batch)?;
    let input = limits::array_bytes("the input", 2, &[seq_len, batch])?;
    let boundaries = seq_len.div_ceil(chunk_len);
    let states = limits::array_bytes(
        "the chunk-boundary states",
        2 * config.layers,
        &[boundaries, batch, config.hidden],
    )?;
    Ok(chunk + input + states)
}

/// One optimizer step on `input`, whole (`chunk_len` `None`) or in chunks of `chunk_len`
/// steps with exact gradients: the same update to rounding (tested below).
pub fn train_step(
    model: &mut Classifier<f32>,
    adam: &mut Adam<f32>,
    scan: &dyn LinearScan<f32>,
    input: ModelInput<'_, f32>,
    labels: &[usize],
    chunk_len: Option<usize>,
) -> Result<TrainStats, ModelError> {
    match chunk_len {
        None => model.train_step(adam, scan, input, labels),
        Some(len) => model.train_step_chunked(adam, scan, input, labels, len, Backprop::Full),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scan_cpu::Serial;
    use surrogate_rnn::{
        AdamConfig, GateBiasInit, InitConfig, InputKind, LayerKind, Parameters, SyntheticTask,
    };

    fn config(layer: LayerKind) -> ModelConfig {
        ModelConfig {
            layer,
            input: InputKind::OneHot { vocab: 8 },
            input_projection: Some(4),
            hidden: 6,
            layers: 2,
            classes: SyntheticTask::N_CLASSES,
        }
    }

    fn flat_parameters(model: &Classifier<f32>) -> Vec<f32> {
        let mut all = Vec::new();
        model.visit_params(&mut |_, value, _| all.extend(value.iter().copied()));
        all
    }

    /// Four steps whole and four in chunks of 7 steps (sequences of 50: seven full chunks
    /// and a short one) from the same initialisation and batches end with the same
    /// parameters: within 1e-4 relative to the largest parameter (f32; the chunked pass
    /// adds in a different order).
    #[test]
    fn chunked_steps_update_the_parameters_as_whole_steps() {
        let scan = Serial::default();
        let task = SyntheticTask::new(50, 8).unwrap();
        for layer in [
            LayerKind::GilrLstm,
            LayerKind::Lstm,
            LayerKind::Qrnn { width: 2 },
        ] {
            let init = InitConfig {
                gate_bias: GateBiasInit::Chrono { max_len: 50 },
            };
            let adam_config = AdamConfig {
                learning_rate: 1e-2,
                clip_norm: Some(1.0),
                ..AdamConfig::default()
            };
            let mut runs = Vec::new();
            for chunk_len in [None, Some(7)] {
                let mut model = Classifier::<f32>::new(config(layer), init, 3).unwrap();
                let mut adam = Adam::new(adam_config, &model);
                let mut losses = Vec::new();
                for step in 0..4 {
                    let batch = task.batch_for_step::<f32>(5, step, 4).unwrap();
                    let stats = train_step(
                        &mut model,
                        &mut adam,
                        &scan,
                        ModelInput::OneHot(&batch.input),
                        &batch.labels,
                        chunk_len,
                    )
                    .unwrap();
                    losses.push(stats.batch.loss);
                }
                runs.push((flat_parameters(&model), losses));
            }
            let (whole, chunked) = (&runs[0], &runs[1]);
            let scale = whole.0.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = whole
                .0
                .iter()
                .zip(&chunked.0)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                worst <= 1e-4 * scale,
                "{layer:?}: parameters differ by {worst} (scale {scale})"
            );
            for (a, b) in whole.1.iter().zip(&chunked.1) {
                assert!(
                    (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                    "{layer:?}: losses {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn split_evaluations_take_as_many_sequences_as_fit_the_budget() {
        let config = config(LayerKind::GilrLstm);
        assert_eq!(eval_batch_within(&config, 4096, 256).unwrap(), 256);
        let long = 1 << 16;
        let fitting = eval_batch_within(&config, long, 256).unwrap();
        assert!((1..256).contains(&fitting));
        // The activations of `fitting` sequences fit the budget, one more would not.
        let per_sequence = limits::training_bytes(&config, long, 2).unwrap()
            - limits::training_bytes(&config, long, 1).unwrap();
        assert!(fitting as u128 * per_sequence <= TRAIN_STEP_BYTES);
        assert!((fitting as u128 + 1) * per_sequence > TRAIN_STEP_BYTES);
        assert_eq!(eval_batch_within(&config, 1 << 30, 256).unwrap(), 1);
    }

    #[test]
    fn steps_run_whole_below_the_budget_and_in_chunks_above() {
        let config = config(LayerKind::GilrLstm);
        assert_eq!(train_chunk_len(&config, 4096, 16).unwrap(), None);
        let long = 1 << 26;
        let chunk = train_chunk_len(&config, long, 8).unwrap().unwrap();
        assert!(chunk < long);
        assert!(limits::training_bytes(&config, chunk, 8).unwrap() <= TRAIN_STEP_BYTES + (1 << 20));
        let planned = training_bytes(&config, long, 8).unwrap();
        assert!(planned < limits::training_bytes(&config, long, 8).unwrap() / 4);
    }
}
