//! Wall time of GILR-LSTM training steps on the synthetic task (the trainer's long-run
//! configuration: 2 × 64 hidden, one-hot p = 128 through a 32-wide embedding), plus a
//! fingerprint of every parameter bit after the timed steps, so that an optimisation can
//! be checked to change no numbers.
//!
//! `cargo run --release -p surrogate-rnn --example step_timing -- [log2 T = 16] [B = 1] [steps = 5]`
//! Prints each step's time, their median, and the fingerprint (FNV-1a over the f32 bits).

use std::time::Instant;

use scan_cpu::Parallel;
use surrogate_rnn::{
    Adam, AdamConfig, Classifier, GateBiasInit, InitConfig, InputKind, LayerKind, ModelConfig,
    ModelInput, Parameters, SyntheticTask,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let log2_steps = args.first().copied().unwrap_or(16);
    let n_batch = args.get(1).copied().unwrap_or(1);
    let n_iterations = args.get(2).copied().unwrap_or(5).max(1);
    let n_steps = 1_usize << log2_steps;
    let task = SyntheticTask::new(n_steps, 128)?;
    let config = ModelConfig {
        layer: LayerKind::GilrLstm,
        input: InputKind::OneHot { vocab: 128 },
        input_projection: Some(32),
        hidden: 64,
        layers: 2,
        classes: 2,
    };
    let init = InitConfig {
        gate_bias: GateBiasInit::Chrono { max_len: n_steps },
    };
    let mut model = Classifier::<f32>::new(config, init, 7)?;
    let mut adam = Adam::new(
        AdamConfig {
            learning_rate: 3e-3,
            clip_norm: Some(1.0),
            ..Default::default()
        },
        &model,
    );
    let scan = Parallel::default();
    let mut times = Vec::with_capacity(n_iterations);
    let mut last_loss = 0.0;
    for step in 0..n_iterations {
        let batch = task.batch_for_step::<f32>(7, step as u64, n_batch)?;
        let start = Instant::now();
        let stats = model.train_step(
            &mut adam,
            &scan,
            ModelInput::OneHot(&batch.input),
            &batch.labels,
        )?;
        let elapsed = start.elapsed().as_secs_f64();
        last_loss = stats.batch.loss;
        println!(
            "step {step}: {:.3} s, loss {:.6}",
            elapsed, stats.batch.loss
        );
        times.push(elapsed);
    }
    let mut fingerprint: u64 = 0xcbf2_9ce4_8422_2325;
    model.visit_params(&mut |_, value, _| {
        for v in value.iter() {
            for byte in v.to_bits().to_le_bytes() {
                fingerprint = (fingerprint ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    });
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "T = 2^{log2_steps}, B = {n_batch}: median step {:.3} s over {n_iterations} (min {:.3}, max {:.3}); last loss {last_loss:.6}; parameter fingerprint {fingerprint:016x}",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1]
    );
    Ok(())
}
