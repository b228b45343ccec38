//! `kernel-bench` (Table 1) and `rnn-bench` (Table 2): speedups of the parallel scan over
//! the serial scan, printed beside the paper's GPU figures and saved as CSV, JSON and a
//! plot.
//!
//! Speedups are ratios measured in one process with the two backends alternating, so slow
//! drift of a shared machine affects both alike; times are medians.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use ndarray::{Array1, Array2, Array3};
use scan_core::{BackwardInputs, BackwardOutputs, Direction, ForwardInputs, LinearScan};
use serde::{Deserialize, Serialize};
use surrogate_rnn::{
    Adam, AdamConfig, Classifier, InitConfig, InputKind, LayerKind, ModelConfig, ModelInput,
};

use crate::console::{clear_note, note_in_place};
use crate::limits;
use crate::plot::{Chart, Scale};
pub use crate::report::BenchReport;
use crate::report::{table_files, TableOutput};

type BoxedScan = Box<dyn LinearScan<f32>>;

/// Where the two scans being compared run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// scan-cpu: `Serial` vs `Parallel`.
    Cpu,
    /// scan-cuda: the serial kernel vs the parallel kernel (needs `--features cuda`);
    /// host arrays are staged to the GPU on every call, and that time is included.
    Cuda,
}

impl Device {
    fn label(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }

    /// (serial, parallel) backends; `cuda` without the feature fails with a rebuild hint.
    fn backends(self) -> Result<(BoxedScan, BoxedScan)> {
        Ok(match self {
            Self::Cpu => (
                Box::new(scan_cpu::Serial::default()),
                Box::new(scan_cpu::Parallel::default()),
            ),
            Self::Cuda => {
                crate::backend::require_cuda()?;
                let gpu = scan_cuda::Cuda::new(0);
                (
                    Box::new(gpu.with_kernel(scan_cuda::Kernel::Serial)),
                    Box::new(gpu.with_kernel(scan_cuda::Kernel::Parallel)),
                )
            }
        })
    }
}

/// Output-folder flags shared by the benchmarks.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// The output folder [default: a new folder <runs-dir>/<command>-<k>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where new output folders are created when `--out` is not given.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Overwrite the files of an existing `--out` folder.
    #[arg(long)]
    pub force: bool,
}

/// Table 1: time of the serial and the parallel scan at batch 1 (F features, T steps).
#[derive(Args, Debug, Clone)]
pub struct KernelBenchArgs {
    /// Which backends to compare.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub backend: Device,
    /// Sequence lengths T.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 256, 4096, 65536])]
    pub steps: Vec<usize>,
    /// Feature counts F (the paper's m).
    #[arg(long, value_delimiter = ',', default_values_t = [4, 32, 128])]
    pub features: Vec<usize>,
    /// Time budget per shape, pass and backend, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub budget_ms: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Table 2: training throughput (forward + backward + update) with each scan.
#[derive(Args, Debug, Clone)]
pub struct RnnBenchArgs {
    /// Which backends to compare.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub backend: Device,
    /// Sequence lengths T (each must divide --events).
    #[arg(long, value_delimiter = ',', default_values_t = [16, 256, 4096, 65536])]
    pub steps: Vec<usize>,
    /// Events per minibatch B·T (the paper: 65,536).
    #[arg(long, default_value_t = 65536)]
    pub events: usize,
    /// Hidden units per layer (two layers; the paper: 256).
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Timed iterations per configuration (median), after one warm-up.
    #[arg(long, default_value_t = 2)]
    pub iterations: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The paper's Table 1: (T, speedup at m = 4, 32, 128).
const PAPER_TABLE1: [(usize, [f64; 3]); 4] = [
    (16, [0.06, 0.06, 0.05]),
    (256, [0.22, 0.22, 0.86]),
    (4096, [1.02, 2.94, 3.36]),
    (65536, [38.5, 41.8, 17.5]),
];

/// The paper's Table 2: (T, speedup of SRU, QRNN k=2, QRNN k=10, GILR-LSTM).
const PAPER_TABLE2: [(usize, [f64; 4]); 4] = [
    (16, [0.28, 0.38, 0.78, 0.61]),
    (256, [0.84, 0.86, 0.99, 0.91]),
    (4096, [1.38, 1.18, 1.05, 0.98]),
    (65536, [9.21, 6.68, 2.05, 1.41]),
];

const TABLE2_MODELS: [LayerKind; 4] = [
    LayerKind::Sru,
    LayerKind::Qrnn { width: 2 },
    LayerKind::Qrnn { width: 10 },
    LayerKind::GilrLstm,
];

fn paper_table1(t: usize, f: usize) -> Option<f64> {
    let column = [4, 32, 128].iter().position(|&m| m == f)?;
    PAPER_TABLE1
        .iter()
        .find(|(steps, _)| *steps == t)
        .map(|(_, row)| row[column])
}

fn paper_table2(t: usize, model: usize) -> Option<f64> {
    PAPER_TABLE2
        .iter()
        .find(|(steps, _)| *steps == t)
        .map(|(_, row)| row[model])
}

fn cell(ours: f64, paper: Option<f64>) -> String {
    match paper {
        Some(p) => format!("{ours:.2} ({p:.2})"),
        None => format!("{ours:.2} (—)"),
    }
}

/// One measured shape of Table 1.
#[derive(Clone, Debug, Serialize)]
pub struct KernelRow {
    pub t: usize,
    pub f: usize,
    pub pass: &'static str,
    pub serial_ns_per_elem: f64,
    pub parallel_ns_per_elem: f64,
    pub speedup: f64,
    pub paper_speedup: Option<f64>,
}

/// One measured configuration of Table 2.
#[derive(Clone, Debug, Serialize)]
pub struct RnnRow {
    pub t: usize,
    pub batch: usize,
    pub model: String,
    pub serial_events_per_second: f64,
    pub parallel_events_per_second: f64,
    pub speedup: f64,
    pub paper_speedup: Option<f64>,
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Alternates `a` and `b` (after one warm-up each) until `budget` is spent and both have
/// at least five samples; returns their median times.
fn time_pair(
    budget: Duration,
    mut a: impl FnMut() -> Result<()>,
    mut b: impl FnMut() -> Result<()>,
) -> Result<(Duration, Duration)> {
    a()?;
    b()?;
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while (start.elapsed() < budget || ta.len() < 5) && ta.len() < 100_000 {
        let t = Instant::now();
        a()?;
        ta.push(t.elapsed());
        let t = Instant::now();
        b()?;
        tb.push(t.elapsed());
    }
    Ok((median(&mut ta), median(&mut tb)))
}

fn machine_line(device: Device) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!(
        "machine: {cpu}, {} threads; backend: {}",
        rayon::current_num_threads(),
        device.label()
    )
}

impl KernelBenchArgs {
    /// Every check that can fail, before any work: values, sizes and memory.
    pub fn validate(&self) -> Result<()> {
        if self.steps.is_empty() || self.features.is_empty() {
            bail!("--steps and --features need at least one value each");
        }
        if self.steps.contains(&0) || self.features.contains(&0) {
            bail!("--steps and --features must be at least 1 (T = 0 or F = 0 is an empty scan)");
        }
        for &t in &self.steps {
            for &f in &self.features {
                let what = format!("kernel-bench at T = {t}, F = {f}");
                // Decays, inputs, two outputs and two pairs of gradients.
                let bytes = limits::array_bytes(&what, 8, &[t, f])?;
                limits::check_memory(&what, bytes, "reduce --steps or --features")?;
            }
        }
        Ok(())
    }
}

/// Runs `trainer kernel-bench`.
pub fn kernel_bench(args: &KernelBenchArgs) -> Result<BenchReport> {
    args.validate()?;
    in_output_folder(
        &args.output,
        args.backend,
        "kernel-bench",
        KERNEL_STEM,
        |dir, s, p| measure_kernels(args, dir, s, p),
    )
}

/// Builds the two backends of `device`, prepares the output folder (`<command>-<k>` or
/// `--out`, owning the files of `stem`) and runs `measure` in it; if `measure` fails with
/// the folder still empty, the folder is removed.
fn in_output_folder(
    output: &OutputArgs,
    device: Device,
    command: &str,
    stem: &str,
    measure: impl FnOnce(&Path, &dyn LinearScan<f32>, &dyn LinearScan<f32>) -> Result<BenchReport>,
) -> Result<BenchReport> {
    let (serial, parallel) = device.backends()?;
    let files = table_files(stem);
    let owned: Vec<&str> = files.iter().map(String::as_str).collect();
    let dir = crate::run_dir::prepare(
        output.out.as_deref(),
        &output.runs_dir,
        command,
        output.force,
        &owned,
    )?;
    crate::run_dir::remove_if_empty_on_error(&dir, || {
        measure(&dir, serial.as_ref(), parallel.as_ref())
    })
}

fn measure_kernels(
    args: &KernelBenchArgs,
    dir: &Path,
    serial: &dyn LinearScan<f32>,
    parallel: &dyn LinearScan<f32>,
) -> Result<BenchReport> {
    let budget = Duration::from_millis(args.budget_ms);
    let mut rows = Vec::new();
    for &t in &args.steps {
        for &f in &args.features {
            crate::interrupt::check()?;
            note_in_place(&format!("  T = {t}, F = {f}"));
            let a = Array2::from_shape_fn((t, f), |(i, j)| {
                0.9 + 0.0999 * (((i * 7919 + j * 31) % 1000) as f32 / 1000.0)
            });
            let x = Array2::from_shape_fn((t, f), |(i, j)| {
                ((i * 104_729 + j * 17) % 2001) as f32 / 1000.0 - 1.0
            });
            let (mut h1, mut h2) = (Array2::zeros((t, f)), Array2::zeros((t, f)));
            let forward = |backend: &dyn LinearScan<f32>, h: &mut Array2<f32>| -> Result<()> {
                let inputs = ForwardInputs {
                    decay: a.view(),
                    impulse: x.view(),
                    initial: None,
                    direction: Direction::Forward,
                };
                backend.forward_into(inputs, h.view_mut())?;
                Ok(())
            };
            let (ts, tp) = time_pair(
                budget,
                || forward(serial, &mut h1),
                || forward(parallel, &mut h2),
            )?;
            rows.push(kernel_row(t, f, "forward", ts, tp));
            let mut grads = [
                (
                    Array2::zeros((t, f)),
                    Array2::zeros((t, f)),
                    Array1::zeros(f),
                ),
                (
                    Array2::zeros((t, f)),
                    Array2::zeros((t, f)),
                    Array1::zeros(f),
                ),
            ];
            let [g1, g2] = &mut grads;
            let backward = |backend: &dyn LinearScan<f32>,
                            g: &mut (Array2<f32>, Array2<f32>, Array1<f32>)|
             -> Result<()> {
                let inputs = BackwardInputs {
                    decay: a.view(),
                    state: h1.view(),
                    initial: None,
                    grad_state: x.view(),
                    grad_last: None,
                    direction: Direction::Forward,
                };
                let outputs = BackwardOutputs {
                    grad_decay: g.0.view_mut(),
                    grad_impulse: g.1.view_mut(),
                    grad_initial: Some(g.2.view_mut()),
                };
                backend.backward_into(inputs, outputs)?;
                Ok(())
            };
            let (ts, tp) = time_pair(budget, || backward(serial, g1), || backward(parallel, g2))?;
            rows.push(kernel_row(t, f, "backward", ts, tp));
        }
    }
    clear_note();

    let mut md = String::new();
    writeln!(
        md,
        "Table 1 — parallel / serial scan speedup at batch 1, forward pass; ours (paper's K80 GPU kernels)\n\n{}\n",
        machine_line(args.backend)
    )?;
    let header: Vec<String> = args.features.iter().map(|f| format!("m = {f}")).collect();
    writeln!(md, "| T | {} |", header.join(" | "))?;
    writeln!(md, "|---:|{}", "---:|".repeat(args.features.len()))?;
    for &t in &args.steps {
        let cells: Vec<String> = args
            .features
            .iter()
            .map(|&f| {
                let row = rows
                    .iter()
                    .find(|r| r.t == t && r.f == f && r.pass == "forward")
                    .expect("every shape was measured");
                cell(row.speedup, row.paper_speedup)
            })
            .collect();
        writeln!(md, "| {t} | {} |", cells.join(" | "))?;
    }
    writeln!(
        md,
        "\nEvery shape and pass (ns per element, median):\n\n| T | F | pass | serial ns/elem | parallel ns/elem | speedup |\n|---:|---:|---|---:|---:|---:|"
    )?;
    let mut csv =
        String::from("t,f,pass,serial_ns_per_elem,parallel_ns_per_elem,speedup,paper_speedup\n");
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {} | {:.3} | {:.3} | {:.2} |",
            r.t, r.f, r.pass, r.serial_ns_per_elem, r.parallel_ns_per_elem, r.speedup
        )?;
        writeln!(
            csv,
            "{},{},{},{},{},{},{}",
            r.t,
            r.f,
            r.pass,
            r.serial_ns_per_elem,
            r.parallel_ns_per_elem,
            r.speedup,
            r.paper_speedup.map(|p| p.to_string()).unwrap_or_default()
        )?;
    }
    let mut series = Vec::new();
    for &f in &args.features {
        let ours = rows
            .iter()
            .filter(|r| r.f == f && r.pass == "forward")
            .map(|r| (r.t as f64, r.speedup))
            .collect();
        series.push((format!("F = {f}, ours"), ours));
        let paper: Vec<(f64, f64)> = args
            .steps
            .iter()
            .filter_map(|&t| Some((t as f64, paper_table1(t, f)?)))
            .collect();
        if !paper.is_empty() {
            series.push((format!("F = {f}, paper (GPU)"), paper));
        }
    }
    TableOutput {
        stem: KERNEL_STEM,
        rows: &rows,
        csv,
        markdown: md,
        chart: speedup_chart(
            format!(
                "Table 1: parallel / serial scan speedup ({})",
                args.backend.label()
            ),
            "sequence length T",
            series,
        ),
    }
    .publish(dir)
}

/// A log-log chart of speedup against sequence length.
fn speedup_chart(title: String, x_label: &str, series: Vec<(String, Vec<(f64, f64)>)>) -> Chart {
    Chart {
        title,
        x_label: x_label.into(),
        y_label: "speedup".into(),
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        y_range: None,
        series,
        markers: Vec::new(),
        x_marks: Vec::new(),
    }
}

fn kernel_row(
    t: usize,
    f: usize,
    pass: &'static str,
    serial: Duration,
    parallel: Duration,
) -> KernelRow {
    let elements = (t * f) as f64;
    KernelRow {
        t,
        f,
        pass,
        serial_ns_per_elem: serial.as_secs_f64() * 1e9 / elements,
        parallel_ns_per_elem: parallel.as_secs_f64() * 1e9 / elements,
        speedup: serial.as_secs_f64() / parallel.as_secs_f64(),
        paper_speedup: (pass == "forward").then(|| paper_table1(t, f)).flatten(),
    }
}

const RNN_INPUT: usize = 4;
/// File stem of `kernel-bench`'s outputs.
pub const KERNEL_STEM: &str = "kernel_bench";
/// File stem of `rnn-bench`'s outputs.
pub const RNN_STEM: &str = "rnn_bench";

fn rnn_config(kind: LayerKind, hidden: usize) -> ModelConfig {
    ModelConfig {
        layer: kind,
        input: InputKind::Dense { size: RNN_INPUT },
        // SRU's highway needs input = hidden: a linear input map 4 → hidden in front.
        input_projection: (kind == LayerKind::Sru).then_some(hidden),
        hidden,
        layers: 2,
        classes: 2,
    }
}

/// Median seconds of one training iteration of `kind` on `scan`.
fn time_training(
    kind: LayerKind,
    hidden: usize,
    scan: &dyn LinearScan<f32>,
    n_steps: usize,
    n_batch: usize,
    iterations: usize,
) -> Result<f64> {
    let mut model = Classifier::<f32>::new(rnn_config(kind, hidden), InitConfig::default(), 1)?;
    let mut adam = Adam::new(AdamConfig::default(), &model);
    let input = Array3::from_shape_fn((n_steps, n_batch, RNN_INPUT), |(t, b, k)| {
        (((t * 31 + b * 17 + k * 7) % 13) as f32 - 6.0) / 6.0
    });
    let labels: Vec<usize> = (0..n_batch).map(|b| b % 2).collect();
    let mut step = || -> Result<()> {
        model.train_step(&mut adam, scan, ModelInput::Dense(input.view()), &labels)?;
        Ok(())
    };
    step()?;
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        crate::interrupt::check()?;
        let start = Instant::now();
        step()?;
        times.push(start.elapsed());
    }
    Ok(median(&mut times).as_secs_f64())
}

/// The most timed steps `rnn-bench` takes per configuration (their times are kept for
/// the median).
const MAX_ITERATIONS: usize = 1_000_000;

impl RnnBenchArgs {
    /// Every check that can fail, before any work: values, sizes and memory.
    pub fn validate(&self) -> Result<()> {
        if self.steps.is_empty() || self.steps.contains(&0) {
            bail!("--steps needs values of at least 1");
        }
        if self.iterations == 0 || self.hidden == 0 || self.events == 0 {
            bail!("--iterations, --hidden and --events must be at least 1");
        }
        if self.iterations > MAX_ITERATIONS {
            bail!(
                "--iterations {} is more than {MAX_ITERATIONS} timed steps per configuration",
                self.iterations
            );
        }
        if let Some(t) = self
            .steps
            .iter()
            .find(|&&t| !self.events.is_multiple_of(t) || t > self.events)
        {
            bail!(
                "T = {t} does not divide --events {}: the minibatch B = events / T must be whole",
                self.events
            );
        }
        for &t in &self.steps {
            for kind in TABLE2_MODELS {
                let what = format!(
                    "rnn-bench with {} at T = {t}, B = {}, 2 × {} hidden",
                    kind.label(),
                    self.events / t,
                    self.hidden
                );
                let config = rnn_config(kind, self.hidden);
                let bytes = limits::training_bytes(&config, t, self.events / t)?
                    + limits::array_bytes(&what, 1, &[self.events, RNN_INPUT])?;
                limits::check_memory(&what, bytes, "reduce --events or --hidden")?;
            }
        }
        Ok(())
    }
}

/// Runs `trainer rnn-bench`.
pub fn rnn_bench(args: &RnnBenchArgs) -> Result<BenchReport> {
    args.validate()?;
    in_output_folder(
        &args.output,
        args.backend,
        "rnn-bench",
        RNN_STEM,
        |dir, s, p| measure_training(args, dir, s, p),
    )
}

fn measure_training(
    args: &RnnBenchArgs,
    dir: &Path,
    serial: &dyn LinearScan<f32>,
    parallel: &dyn LinearScan<f32>,
) -> Result<BenchReport> {
    let mut rows = Vec::new();
    for &t in &args.steps {
        let batch = args.events / t;
        for (k, &kind) in TABLE2_MODELS.iter().enumerate() {
            crate::interrupt::check()?;
            note_in_place(&format!("  T = {t}, {}", kind.label()));
            let ts = time_training(kind, args.hidden, serial, t, batch, args.iterations)?;
            crate::interrupt::check()?;
            let tp = time_training(kind, args.hidden, parallel, t, batch, args.iterations)?;
            rows.push(RnnRow {
                t,
                batch,
                model: kind.label(),
                serial_events_per_second: args.events as f64 / ts,
                parallel_events_per_second: args.events as f64 / tp,
                speedup: ts / tp,
                paper_speedup: (args.events == 65536 && args.hidden == 256)
                    .then(|| paper_table2(t, k))
                    .flatten(),
            });
        }
    }
    clear_note();
    let mut md = String::new();
    writeln!(
        md,
        "Table 2 — training throughput speedup (forward + backward + Adam), parallel / serial scan; 2 × {} hidden, input {RNN_INPUT}, B·T = {}; ours (paper's K80 GPU)\n\n{}\n",
        args.hidden,
        args.events,
        machine_line(args.backend)
    )?;
    writeln!(
        md,
        "| T | SRU | QRNN k=2 | QRNN k=10 | GILR-LSTM |\n|---:|---:|---:|---:|---:|"
    )?;
    for &t in &args.steps {
        let cells: Vec<String> = rows
            .iter()
            .filter(|r| r.t == t)
            .map(|r| cell(r.speedup, r.paper_speedup))
            .collect();
        writeln!(md, "| {t} | {} |", cells.join(" | "))?;
    }
    writeln!(
        md,
        "\nThroughput (events per second, median of {} iterations):\n\n| T | B | model | serial events/s | parallel events/s | speedup |\n|---:|---:|---|---:|---:|---:|",
        args.iterations
    )?;
    let mut csv = String::from(
        "t,batch,model,serial_events_per_second,parallel_events_per_second,speedup,paper_speedup\n",
    );
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {} | {:.3e} | {:.3e} | {:.2} |",
            r.t,
            r.batch,
            r.model,
            r.serial_events_per_second,
            r.parallel_events_per_second,
            r.speedup
        )?;
        writeln!(
            csv,
            "{},{},{},{},{},{},{}",
            r.t,
            r.batch,
            r.model,
            r.serial_events_per_second,
            r.parallel_events_per_second,
            r.speedup,
            r.paper_speedup.map(|p| p.to_string()).unwrap_or_default()
        )?;
    }
    let series = TABLE2_MODELS
        .iter()
        .map(|kind| {
            let label = kind.label();
            let points = rows
                .iter()
                .filter(|r| r.model == label)
                .map(|r| (r.t as f64, r.speedup))
                .collect();
            (label, points)
        })
        .collect();
    TableOutput {
        stem: RNN_STEM,
        rows: &rows,
        csv,
        markdown: md,
        chart: speedup_chart(
            format!(
                "Table 2: training speedup with the parallel scan ({})",
                args.backend.label()
            ),
            "sequence length T (B·T fixed)",
            series,
        ),
    }
    .publish(dir)
}
