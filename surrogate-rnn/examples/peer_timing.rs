//! Our side of the JAX comparison in `benches/peers/`: the median wall time of full
//! training steps (forward, backward, Adam) of a 2-layer model with a dense head on the
//! last step, printed as one JSON line. Same arguments as `benches/peers/jax_models.py`:
//!
//! `peer_timing --model gilr-lstm|lstm|sru|qrnn2|qrnn10 --steps T --batch B --hidden n
//!  [--input p] [--one-hot] [--iterations k]`
//!
//! With `--one-hot` the inputs are one-hot vectors in `p` dimensions stored densely, as
//! the JAX side feeds them; otherwise a fixed pseudo-random dense input.

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
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--one-hot" {
            options.one_hot = true;
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
    let mut times = Vec::with_capacity(options.iterations);
    for _ in 0..options.iterations {
        let start = Instant::now();
        step()?;
        times.push(start.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{{\"model\": \"{}\", \"steps\": {n_steps}, \"batch\": {n_batch}, \"hidden\": {}, \"input\": {n_input}, \"median_s\": {}, \"times_s\": {:?}}}",
        options.model_name,
        options.hidden,
        sorted[sorted.len() / 2],
        times
    );
    Ok(())
}
