//! Evaluation of the Table 3 model (2 × 16 GILR-LSTM, embedding 16, p = 128) on fresh
//! sequences of the synthetic task: the full-sequence path (`Classifier::evaluate`, in
//! batches of `BATCH` sequences) against streaming (`Classifier::evaluate_streaming`, all
//! sequences in one batch, `CHUNK` steps at a time). Prints wall time, loss, correct count
//! and the peak resident set size (Linux `VmHWM`) — run each mode in its own process.
//!
//! `cargo run --release -p surrogate-rnn --example streaming_eval -- LOG2_T N_SEQUENCES full|streaming [CHUNK = 4096] [BATCH = 4]`

use std::time::Instant;

use scan_cpu::Parallel;
use surrogate_rnn::{
    BatchStats, Classifier, GateBiasInit, InitConfig, InputKind, LayerKind, ModelConfig,
    ModelInput, OneHotSequence, SyntheticBatch, SyntheticTask,
};

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number =
        |k: usize, default: usize| args.get(k).and_then(|a| a.parse().ok()).unwrap_or(default);
    let n_steps = 1_usize << number(0, 20);
    let n_sequences = number(1, 16);
    let streaming = args.get(2).is_some_and(|m| m == "streaming");
    let chunk_len = number(3, 4096);
    let batch = number(4, 4).max(1);
    let task = SyntheticTask::new(n_steps, 128)?;
    let config = ModelConfig {
        layer: LayerKind::GilrLstm,
        input: InputKind::OneHot { vocab: 128 },
        input_projection: Some(16),
        hidden: 16,
        layers: 2,
        classes: 2,
    };
    let init = InitConfig {
        gate_bias: GateBiasInit::Chrono { max_len: n_steps },
    };
    let model = Classifier::<f32>::new(config, init, 7)?;
    let scan = Parallel::default();
    // The same sequences for both modes: groups of `batch`, joined for streaming.
    let groups: Vec<_> = (0..n_sequences.div_ceil(batch))
        .map(|k| task.batch_for_step::<f32>(11, k as u64, batch.min(n_sequences - k * batch)))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let (mut loss, mut correct, mut seen) = (0.0, 0, 0);
    let mut add = |stats: BatchStats| {
        loss += stats.loss * stats.n_sequences as f64;
        correct += stats.n_correct;
        seen += stats.n_sequences;
    };
    if streaming {
        let join = |f: &dyn Fn(&SyntheticBatch<f32>) -> ndarray::ArrayView2<'_, u32>| {
            let views: Vec<_> = groups.iter().map(f).collect();
            ndarray::concatenate(ndarray::Axis(1), &views)
        };
        let index = join(&|g| g.input.index())?;
        let values: Vec<_> = groups.iter().map(|g| g.input.value()).collect();
        let value = ndarray::concatenate(ndarray::Axis(1), &values)?;
        let input = OneHotSequence::new(index, value, 128)?;
        let labels: Vec<usize> = groups
            .iter()
            .flat_map(|g| g.labels.iter().copied())
            .collect();
        drop(groups);
        add(model.evaluate_streaming(&scan, ModelInput::OneHot(&input), &labels, chunk_len)?);
    } else {
        for group in &groups {
            add(model.evaluate(&scan, ModelInput::OneHot(&group.input), &group.labels)?);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let peak = peak_rss_bytes().map_or("unknown".into(), |b| {
        format!("{:.2} GiB", b as f64 / f64::from(1 << 30))
    });
    println!(
        "{} T = {n_steps}, {n_sequences} sequences ({}): {seconds:.1} s ({:.2} s/sequence), mean loss {:.6}, {correct} correct, peak RSS {peak}",
        if streaming { "streaming" } else { "full" },
        if streaming { format!("one batch, chunks of {chunk_len}") } else { format!("batches of {batch}") },
        seconds / n_sequences as f64,
        loss / seen as f64,
    );
    Ok(())
}
