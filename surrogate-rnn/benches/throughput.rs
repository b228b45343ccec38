//! Table 2 of the paper: training throughput (forward + backward + Adam update) of
//! 2 × 256 LS-RNNs with input size 4 and B·T = 65,536, with the serial and the parallel
//! scan, printed beside the paper's speedups; plus the achieved matrix-product rate as a
//! fraction of a plain GEMM measured in the same run.
//!
//! `cargo bench -p surrogate-rnn -- [--quick] [--steps 16,256,4096,65536] [--iterations N]`
//! (`--quick`: one timed iteration after one warm-up, T ∈ {16, 4096, 65536}).

use std::time::Instant;

use ndarray::Array2;
use scan_core::LinearScan;
use scan_cpu::{Parallel, Serial};
use surrogate_rnn::{
    Adam, AdamConfig, Classifier, InitConfig, InputKind, LayerKind, ModelConfig, ModelInput,
};

const EVENTS: usize = 65_536;
const HIDDEN: usize = 256;
const INPUT: usize = 4;

/// The paper's Table 2: (T, [SRU, QRNN k=2, QRNN k=10, GILR-LSTM]).
const PAPER: [(usize, [f64; 4]); 4] = [
    (16, [0.28, 0.38, 0.78, 0.61]),
    (256, [0.84, 0.86, 0.99, 0.91]),
    (4096, [1.38, 1.18, 1.05, 0.98]),
    (65536, [9.21, 6.68, 2.05, 1.41]),
];

const MODELS: [LayerKind; 4] = [
    LayerKind::Sru,
    LayerKind::Qrnn { width: 2 },
    LayerKind::Qrnn { width: 10 },
    LayerKind::GilrLstm,
];

struct Options {
    steps: Vec<usize>,
    iterations: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let steps = value("--steps")
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if quick {
                vec![16, 4096, 65536]
            } else {
                PAPER.iter().map(|(t, _)| *t).collect()
            }
        });
    let iterations = value("--iterations")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    Options { steps, iterations }
}

fn config(kind: LayerKind) -> ModelConfig {
    ModelConfig {
        layer: kind,
        input: InputKind::Dense { size: INPUT },
        // SRU's highway needs input = hidden: a linear input map 4 → 256 in front.
        input_projection: (kind == LayerKind::Sru).then_some(HIDDEN),
        hidden: HIDDEN,
        layers: 2,
        classes: 2,
    }
}

/// FLOPs of the matrix products of one training iteration (forward + backward: each
/// forward product has two backward products of the same size).
fn gemm_flops(kind: LayerKind, n_rows: usize) -> f64 {
    let (r, n) = (n_rows as f64, HIDDEN as f64);
    let layer = |m: f64| match kind {
        LayerKind::GilrLstm | LayerKind::GilrLstmTanh => {
            3.0 * 2.0 * r * (m * 6.0 * n + n * 4.0 * n)
        }
        LayerKind::Qrnn { width } => 3.0 * 2.0 * r * width as f64 * m * 3.0 * n,
        LayerKind::Sru => 3.0 * 2.0 * r * m * 3.0 * n,
        LayerKind::Gilr => 3.0 * 2.0 * r * m * 2.0 * n,
        LayerKind::Lstm => 3.0 * 2.0 * r * (m * 4.0 * n + n * 4.0 * n),
    };
    let first_m = if kind == LayerKind::Sru {
        n
    } else {
        INPUT as f64
    };
    let encoder = if kind == LayerKind::Sru {
        3.0 * 2.0 * r * INPUT as f64 * n
    } else {
        0.0
    };
    layer(first_m) + layer(n) + encoder
}

/// Median seconds per training iteration.
fn time_training(
    kind: LayerKind,
    scan: &dyn LinearScan<f32>,
    n_steps: usize,
    iterations: usize,
) -> f64 {
    let n_batch = EVENTS / n_steps;
    let mut model =
        Classifier::<f32>::new(config(kind), InitConfig::default(), 1).expect("valid config");
    let mut adam = Adam::new(AdamConfig::default(), &model);
    let input = ndarray::Array3::from_shape_fn((n_steps, n_batch, INPUT), |(t, b, k)| {
        (((t * 31 + b * 17 + k * 7) % 13) as f32 - 6.0) / 6.0
    });
    let labels: Vec<usize> = (0..n_batch).map(|b| b % 2).collect();
    let mut step = || {
        model
            .train_step(&mut adam, scan, ModelInput::Dense(input.view()), &labels)
            .expect("training step")
    };
    step(); // Warm-up: page faults, thread pools.
    let mut times: Vec<f64> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            step();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// A plain f32 GEMM of the models' dominant shape: (65,536 × 256)·(256 × 256), in FLOP/s.
fn plain_gemm_rate() -> f64 {
    let a = Array2::from_shape_fn((EVENTS, HIDDEN), |(i, j)| ((i + j) % 7) as f32 * 0.1);
    let b = Array2::from_shape_fn((HIDDEN, HIDDEN), |(i, j)| ((i * j) % 5) as f32 * 0.1);
    let mut c = Array2::<f32>::zeros((EVENTS, HIDDEN));
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let start = Instant::now();
        ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (EVENTS * HIDDEN * HIDDEN) as f64 / best
}

fn main() {
    let options = options();
    let serial = Serial::default();
    let parallel = Parallel::default();
    let gemm_rate = plain_gemm_rate();
    println!(
        "plain GEMM (65536×256)·(256×256) f32: {:.1} GFLOP/s",
        gemm_rate / 1e9
    );
    println!(
        "Table 2 reproduction: 2 × {HIDDEN} hidden, input {INPUT}, B·T = {EVENTS}, f32, {} timed iteration(s) (median) after one warm-up\n",
        options.iterations
    );
    println!("| T | model | serial events/s | parallel events/s | speedup | paper | GEMM share of plain rate (serial) |");
    println!("|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for &n_steps in &options.steps {
        if n_steps == 0 || !EVENTS.is_multiple_of(n_steps) {
            eprintln!("skipping T = {n_steps}: it must divide {EVENTS}");
            continue;
        }
        let mut row = Vec::new();
        for (k, &kind) in MODELS.iter().enumerate() {
            let t_serial = time_training(kind, &serial, n_steps, options.iterations);
            let t_parallel = time_training(kind, &parallel, n_steps, options.iterations);
            let speedup = t_serial / t_parallel;
            let paper = PAPER
                .iter()
                .find(|(t, _)| *t == n_steps)
                .map_or("—".to_owned(), |(_, v)| format!("{:.2}", v[k]));
            let gemm_share = gemm_flops(kind, EVENTS) / t_serial / gemm_rate;
            println!(
                "| {n_steps} | {} | {:.3e} | {:.3e} | {speedup:.2} | {paper} | {:.0} % |",
                kind.label(),
                EVENTS as f64 / t_serial,
                EVENTS as f64 / t_parallel,
                100.0 * gemm_share
            );
            row.push(speedup);
        }
        summary.push((n_steps, row));
    }
    println!("\nSpeedup (parallel / serial scan), ours vs paper (GPU):\n");
    println!("| T | SRU | QRNN k=2 | QRNN k=10 | GILR-LSTM |");
    println!("|---|---|---|---|---|");
    for (n_steps, row) in summary {
        let paper = PAPER.iter().find(|(t, _)| *t == n_steps).map(|(_, v)| *v);
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(k, s)| match paper {
                Some(p) => format!("{s:.2} ({:.2})", p[k]),
                None => format!("{s:.2}"),
            })
            .collect();
        println!("| {n_steps} | {} |", cells.join(" | "));
    }
}
