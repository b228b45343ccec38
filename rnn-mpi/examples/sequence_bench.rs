//! Timing of one sequence-parallel GILR-LSTM training step against the same step in one
//! process, in one run: rank 0 alone over the whole sequence (`Classifier::train_step`,
//! then `SequenceParallel` on a one-rank communicator; the other ranks sleep, so they take
//! no core from it), then every rank over its share, alternating, medians.
//!
//! ```sh
//! cargo build --release -p rnn-mpi --features mpi --example sequence_bench
//! RAYON_NUM_THREADS=1 mpirun -x RAYON_NUM_THREADS \
//!     -n 2 target/release/examples/sequence_bench --steps 1048576 --hidden 8 --batch 1
//! ```

use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::*;
use ndarray::{s, Array3};
use rnn_mpi::SequenceParallel;
use surrogate_rnn::{
    Adam, AdamConfig, Classifier, GateBiasInit, InitConfig, InputKind, LayerKind, ModelConfig,
    ModelInput, Parameters,
};

struct Options {
    n_steps: usize,
    hidden: usize,
    n_batch: usize,
    layers: usize,
    repeats: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        n_steps: 1 << 20,
        hidden: 8,
        n_batch: 1,
        layers: 2,
        repeats: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<usize>()
            .map_err(|e| format!("{flag}: {e}"))?;
        let target = match flag.as_str() {
            "--steps" => &mut options.n_steps,
            "--hidden" => &mut options.hidden,
            "--batch" => &mut options.n_batch,
            "--layers" => &mut options.layers,
            "--repeats" => &mut options.repeats,
            _ => {
                return Err(format!(
                    "unknown flag {flag} (--steps, --hidden, --batch, --layers, --repeats)"
                ))
            }
        };
        *target = value.max(1);
    }
    Ok(options)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Waits for every rank without spinning (a blocking barrier would poll and take a core
/// from the rank being timed).
fn sleeping_barrier(world: &SimpleCommunicator) {
    let mut request = world.immediate_barrier();
    loop {
        match request.test() {
            Ok(_) => return,
            Err(pending) => request = pending,
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// CPU time of this process so far (user + system, all threads), in clock ticks, from
/// `/proc/self/stat`; 0 where that file cannot be read.
fn cpu_ticks() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (in parentheses): utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    field(14).zip(field(15)).map_or(0.0, |(u, s)| u + s)
}

/// Wall seconds of `work` on every rank of `group` until the slowest finishes, and the
/// largest CPU time (ticks) a rank spent on it (waiting in MPI included: an upper bound).
fn timed(group: &SimpleCommunicator, work: impl FnOnce()) -> (f64, f64) {
    group.barrier();
    let (start, cpu_start) = (Instant::now(), cpu_ticks());
    work();
    let local = [start.elapsed().as_secs_f64(), cpu_ticks() - cpu_start];
    let mut slowest = [0.0_f64; 2];
    group.all_reduce_into(&local[..], &mut slowest[..], SystemOperation::max());
    (slowest[0], slowest[1])
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("sequence_bench: {message}");
            std::process::exit(2);
        }
    };
    let Some(universe) = mpi::initialize() else {
        eprintln!("sequence_bench: MPI could not be initialized");
        std::process::exit(2);
    };
    let world = universe.world();
    let (rank, n_ranks) = (world.rank() as usize, world.size() as usize);
    let Options {
        n_steps,
        hidden,
        n_batch,
        layers,
        repeats,
    } = options;
    let config = ModelConfig {
        layer: LayerKind::GilrLstm,
        input: InputKind::Dense { size: 4 },
        input_projection: None,
        hidden,
        layers,
        classes: 2,
    };
    let init = InitConfig {
        gate_bias: GateBiasInit::Chrono { max_len: n_steps },
    };
    let model = Classifier::<f32>::new(config, init, 1).unwrap_or_else(|e| {
        eprintln!("sequence_bench: {e}");
        std::process::exit(2)
    });
    let input = Array3::from_shape_fn((n_steps, n_batch, 4), |(t, b, f)| {
        (((t * 7 + b * 3 + f) % 11) as f32 - 5.0) * 0.1
    });
    let labels: Vec<usize> = (0..n_batch).map(|b| b % 2).collect();
    let (start, end) = (rank * n_steps / n_ranks, (rank + 1) * n_steps / n_ranks);
    let mine = input.slice(s![start..end, .., ..]);

    let alone_group = world.split_by_color(match rank {
        0 => Color::with_value(0),
        _ => Color::undefined(),
    });
    let local = scan_cpu::Parallel::default();
    let split = SequenceParallel::new(&world, local);
    let alone = alone_group
        .as_ref()
        .map(|group| SequenceParallel::new(group, local));

    let (mut model_plain, mut model_alone, mut model_split) = (model.clone(), model.clone(), model);
    let mut adam_plain = Adam::new(AdamConfig::default(), &model_plain);
    let mut adam_alone = Adam::new(AdamConfig::default(), &model_alone);
    let mut adam_split = Adam::new(AdamConfig::default(), &model_split);
    let (mut plain_times, mut alone_times, mut split_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut loss_plain, mut loss_alone, mut loss_split) = (0.0, 0.0, 0.0);
    for _ in 0..repeats {
        if let (Some(group), Some(alone)) = (&alone_group, &alone) {
            // The one-process baseline: `Classifier::train_step` (pooled buffers).
            plain_times.push(timed(group, || {
                let stats = model_plain
                    .train_step(
                        &mut adam_plain,
                        &local,
                        ModelInput::Dense(input.view()),
                        &labels,
                    )
                    .unwrap_or_else(|e| panic!("rank 0 alone: {e}"));
                loss_plain = stats.batch.loss;
            }));
            alone_times.push(timed(group, || {
                let stats = alone
                    .train_step(
                        &mut model_alone,
                        &mut adam_alone,
                        ModelInput::Dense(input.view()),
                        &labels,
                    )
                    .unwrap_or_else(|e| panic!("rank 0 alone: {e}"));
                loss_alone = stats.batch.loss;
            }));
        }
        sleeping_barrier(&world);
        split_times.push(timed(&world, || {
            let stats = split
                .train_step(
                    &mut model_split,
                    &mut adam_split,
                    ModelInput::Dense(mine),
                    &labels,
                )
                .unwrap_or_else(|e| panic!("rank {rank}: {e}"));
            loss_split = stats.batch.loss;
        }));
    }

    if rank == 0 {
        let wall = |times: &[(f64, f64)]| median(times.iter().map(|t| t.0).collect());
        let cpu = |times: &[(f64, f64)]| median(times.iter().map(|t| t.1).collect());
        let (t_plain, t_alone, t_split) =
            (wall(&plain_times), wall(&alone_times), wall(&split_times));
        let n_params = model_split.n_params();
        let element = 4;
        let rounds = (usize::BITS - (n_ranks - 1).leading_zeros()) as usize;
        // Per step and rank: 4 scans per layer (2 forward, 2 backward), each an exclusive
        // scan of B·n (decay, impulse) pairs per round; the look-back's ∂h̃ (B·n) to the
        // previous rank; the gradient sum (reduce-scatter + all-gather).
        let scans = 4 * layers * 2 * n_batch * hidden * element * rounds;
        let look_back = layers * n_batch * hidden * element * usize::from(n_ranks > 1);
        let gradients = 2 * (n_ranks - 1) * n_params * element / n_ranks;
        println!(
            "# GILR-LSTM training step, f32, T = {n_steps}, B = {n_batch}, n = {hidden}, \
             {layers} layers, {n_params} parameters; medians of {repeats}"
        );
        println!("| measurement | value |");
        println!("|---|---:|");
        println!("| one process, `Classifier::train_step` (s) | {t_plain:.3} |");
        println!("| rank 0 alone, `SequenceParallel` on 1 rank (s) | {t_alone:.3} |");
        println!("| {n_ranks} ranks, T/{n_ranks} steps each (s) | {t_split:.3} |");
        println!("| speedup over `train_step` | {:.2} |", t_plain / t_split);
        println!("| speedup over 1 rank | {:.2} |", t_alone / t_split);
        println!(
            "| CPU time: train_step / busiest split rank (its waits in MPI included) \
             | {:.2} |",
            cpu(&plain_times) / cpu(&split_times)
        );
        println!(
            "| loss after the last step: train_step, 1 rank, {n_ranks} ranks | {loss_plain:.6}, \
             {loss_alone:.6}, {loss_split:.6} |"
        );
        println!(
            "| bytes sent per rank per step: scans + look-back + gradient sum | {scans} + \
             {look_back} + {gradients} |"
        );
    }
}
