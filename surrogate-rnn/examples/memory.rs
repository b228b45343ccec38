//! Peak memory of one GILR-LSTM training step on the synthetic task, against the formula
//! in the crate documentation.
//!
//! `cargo run --release -p surrogate-rnn --example memory -- [log2 T = 20] [B = 2] [n = 64]`
//! Prints the peak resident set size (Linux `VmHWM`) and the formula's prediction.

use std::time::Instant;

use scan_cpu::Parallel;
use surrogate_rnn::{
    Adam, AdamConfig, Classifier, GateBiasInit, InitConfig, InputKind, LayerKind, ModelConfig,
    ModelInput, SyntheticTask,
};

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let log2_steps = args.first().copied().unwrap_or(20);
    let n_batch = args.get(1).copied().unwrap_or(2);
    let hidden = args.get(2).copied().unwrap_or(64);
    let embedding = 16;
    let n_steps = 1_usize << log2_steps;
    let task = SyntheticTask::new(n_steps, 128)?;
    let config = ModelConfig {
        layer: LayerKind::GilrLstm,
        input: InputKind::OneHot { vocab: 128 },
        input_projection: Some(embedding),
        hidden,
        layers: 2,
        classes: 2,
    };
    let init = InitConfig {
        gate_bias: GateBiasInit::Chrono { max_len: n_steps },
    };
    let mut model = Classifier::<f32>::new(config, init, 1)?;
    let mut adam = Adam::new(AdamConfig::default(), &model);
    let batch = task.batch_for_step::<f32>(1, 0, n_batch)?;
    let before = peak_rss_bytes().unwrap_or(0);
    let start = Instant::now();
    let stats = model.train_step(
        &mut adam,
        &Parallel::default(),
        ModelInput::OneHot(&batch.input),
        &batch.labels,
    )?;
    let elapsed = start.elapsed();
    let peak = peak_rss_bytes().unwrap_or(0);
    let elements = (n_steps * n_batch) as f64;
    let predicted =
        ((9 * 2 + 4) as f64 * elements * hidden as f64 + 2.0 * elements * embedding as f64) * 4.0;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    println!(
        "T = 2^{log2_steps}, B = {n_batch}, n = {hidden}, d = {embedding}: one step {elapsed:.2?}, loss {:.4}",
        stats.batch.loss
    );
    println!(
        "peak RSS {:.2} GiB (before the step {:.2} GiB); formula (9L+4)·TBn + 2·TBd elements = {:.2} GiB",
        gib(peak as f64),
        gib(before as f64),
        gib(predicted)
    );
    Ok(())
}
