//! Our side of the JAX comparison in `benches/peers/`: the median wall time of full
//! training steps (forward, backward, Adam) of a 2-layer model with a dense head on the
//! last step, printed as one JSON line. Same arguments as `benches/peers/jax_models.py`:
//!
//! `peer_timing --model gilr-lstm|lstm|sru|qrnn2|qrnn10 --steps T --batch B --hidden n
//!  [--input p] [--one-hot] [--iterations k] [--shapes]`
//!
//! With `--one-hot` the inputs are one-hot vectors in `p` dimensions stored densely, as
//! the JAX side feeds them; otherwise a fixed pseudo-random dense input. With `--shapes`
//! (and the feature `product-stats`), a table of one step's products per shape and
//! layout (calls, time, rate) goes to stderr.

use std::time::Instant;

use ndarray::Array3;
use scan_cpu::Parallel;
use surrogate_rnn::{
    Adam, AdamConfig, Classifier, InitConfig, InputKind, LayerKind, ModelConfig, ModelInput,
};

struct Options {
    layer: LayerKind,
    model_name: String,
    n_steps: usize,
    n_batch: usize,
    hidden: usize,
    n_input: usize,
    one_hot: bool,
    iterations: usize,
    /// Print each product shape's time and rate (feature `product-stats`) to stderr.
    shapes: bool,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        layer: LayerKind::GilrLstm,
        model_name: "gilr-lstm".into(),
        n_steps: 1024,
        n_batch: 1,
        hidden: 64,
        n_input: 128,
        one_hot: false,
        iterations: 5,
        shapes: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--one-hot" {
            options.one_hot = true;
            continue;
        }
        if flag == "--shapes" {
            options.shapes = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--model" => {
                options.layer = match value.as_str() {
                    "gilr-lstm" => LayerKind::GilrLstm,
                    "lstm" => LayerKind::Lstm,
                    "sru" => LayerKind::Sru,
                    "qrnn2" => LayerKind::Qrnn { width: 2 },
                    "qrnn10" => LayerKind::Qrnn { width: 10 },
                    other => return Err(format!("unknown model {other}")),
                };
                options.model_name = value.clone();
            }
            "--steps" => options.n_steps = number()?,
            "--batch" => options.n_batch = number()?,
            "--hidden" => options.hidden = number()?,
            "--input" => options.n_input = number()?,
            "--iterations" => options.iterations = number()?.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(options)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse()?;
    let (n_steps, n_batch, n_input) = (options.n_steps, options.n_batch, options.n_input);
    let config = ModelConfig {
        layer: options.layer,
        input: InputKind::Dense { size: n_input },
        // SRU's highway needs input = hidden: a linear map in front (the JAX side too).
        input_projection: (options.layer == LayerKind::Sru).then_some(options.hidden),
        hidden: options.hidden,
        layers: 2,
        classes: 2,
    };
    let mut model = Classifier::<f32>::new(config, InitConfig::default(), 7)?;
    let mut adam = Adam::new(AdamConfig::default(), &model);
    let input = Array3::from_shape_fn((n_steps, n_batch, n_input), |(t, b, k)| {
        let code = (t * 7919 + b * 104_729 + 13) % 1_000_003;
        if options.one_hot {
            f32::from(u8::from(code % n_input == k))
        } else {
            (((code + k * 31) % 13) as f32 - 6.0) / 6.0
        }
    });
    let labels: Vec<usize> = (0..n_batch).map(|b| b % 2).collect();
    let scan = Parallel::default();
    let mut step = || model.train_step(&mut adam, &scan, ModelInput::Dense(input.view()), &labels);
    step()?;
    // The plain product's rate is the best of samples before and after the timed steps.
    #[cfg(feature = "product-stats")]
    let plain_before = products::plain_rate(products::largest_shape(), &scan)?;
    let mut times = Vec::with_capacity(options.iterations);
    for _ in 0..options.iterations {
        let start = Instant::now();
        step()?;
        times.push(start.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    #[cfg(feature = "product-stats")]
    let products = products::measure(&mut step, &scan, options.shapes, plain_before)?;
    #[cfg(not(feature = "product-stats"))]
    let products = String::new();
    println!(
        "{{\"model\": \"{}\", \"steps\": {n_steps}, \"batch\": {n_batch}, \"hidden\": {}, \"input\": {n_input}, \"median_s\": {median}, \"times_s\": {times:?}{products}}}",
        options.model_name, options.hidden,
    );
    Ok(())
}

/// With the feature `product-stats`: the products of one more training step (operations,
/// time, share of that step), the rate of a plain product of the step's largest product
/// shape (the best of 5 samples before the timed steps and 5 after), and the step's GEMM
/// floor, its products' operations at that rate.
#[cfg(feature = "product-stats")]
mod products {
    use std::time::Instant;

    use ndarray::Array2;
    use scan_core::LinearScan;
    use surrogate_rnn::backend::{product_stats, Transpose};
    use surrogate_rnn::{Backend, CpuBackend, ModelError};

    /// The largest product shape `[m, k, n]` since the statistics were last taken (the
    /// warm-up step's); takes them.
    pub fn largest_shape() -> [usize; 3] {
        product_stats::take().largest
    }

    /// The best rate of 5 plain `(m, k)·(k, n)` products on the backend, in FLOP/s.
    pub fn plain_rate(
        [m, k, n]: [usize; 3],
        scan: &dyn LinearScan<f32>,
    ) -> Result<f64, ModelError> {
        let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.1);
        let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 2) % 13) as f32 * 0.1);
        let mut c = Array2::<f32>::zeros((m, n));
        let backend = CpuBackend::new(scan);
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = Instant::now();
            let (a, b) = (a.view(), b.view());
            backend.matmul(a, Transpose::No, b, Transpose::No, c.view_mut(), false)?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        product_stats::take();
        Ok(2.0 * (m * k * n) as f64 / best)
    }

    /// JSON fields (each with a leading comma) for the line `peer_timing` prints.
    pub fn measure<R>(
        step: &mut impl FnMut() -> Result<R, ModelError>,
        scan: &dyn LinearScan<f32>,
        shapes: bool,
        plain_before: f64,
    ) -> Result<String, ModelError> {
        product_stats::take();
        let start = Instant::now();
        step()?;
        let step_s = start.elapsed().as_secs_f64();
        let stats = product_stats::take();
        if shapes {
            eprintln!("| m × k × n | layout | calls | GFLOP | seconds | GFLOP/s |");
            eprintln!("|---|---|---:|---:|---:|---:|");
            for s in &stats.by_shape {
                let [m, k, n] = s.dims;
                eprintln!(
                    "| {m} × {k} × {n} | {} | {} | {:.2} | {:.4} | {:.1} |",
                    s.layout,
                    s.calls,
                    s.flops() * 1e-9,
                    s.seconds,
                    s.flops() / s.seconds.max(1e-12) * 1e-9
                );
            }
        }
        let [m, k, n] = stats.largest;
        let plain = plain_rate(stats.largest, scan)?.max(plain_before);
        let flops = stats.flops as f64;
        Ok(format!(
            ", \"product_gflop\": {:.3}, \"product_s\": {:.4}, \"product_step_s\": {step_s:.4}, \"product_share\": {:.3}, \"product_gflops\": {:.1}, \"largest_product\": [{m}, {k}, {n}], \"plain_gflops\": {:.1}, \"gemm_floor_s\": {:.4}",
            flops * 1e-9,
            stats.seconds,
            stats.seconds / step_s,
            flops / stats.seconds.max(1e-12) * 1e-9,
            plain * 1e-9,
            flops / plain,
        ))
    }
}
