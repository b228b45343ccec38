//! Sequence parallelism against one process. Run under `mpirun -n N` (any N ≥ 1): every
//! rank builds the same models and batches from shared seeds, takes its steps of each
//! batch under several splits (even, uneven, ranks with no steps, the last rank empty),
//! and compares the loss and every parameter gradient of `SequenceParallel::loss_and_grad`
//! with `Classifier::loss_and_grad` on the whole sequence in one process, in f64.
//!
//! Tolerance: |split − single| ≤ 1e-13 · max(1, max |single|) per parameter array (the
//! two differ only in the order of floating-point operations: the scans' carries are
//! composed maps instead of a serial sweep, and gradients are summed over ranks).

mod common;

use common::{config, gradients, same_on_every_rank, worst_error, Batch, Report};
use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use ndarray::Array3;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_mpi::{SequenceError, SequenceParallel};
use scan_core::Reference;
use scan_cpu::{Parallel, Serial};
use surrogate_rnn::{
    Adam, AdamConfig, Classifier, GateBiasInit, InitConfig, InputKind, LayerKind, ModelConfig,
    Parameters,
};

const TOLERANCE: f64 = 1e-13;

/// The models under test: name, configuration, sequence length.
fn cases() -> Vec<(&'static str, ModelConfig, usize)> {
    let one_hot = InputKind::OneHot { vocab: 5 };
    let dense = InputKind::Dense { size: 3 };
    vec![
        (
            "gilr-lstm x2",
            config(LayerKind::GilrLstm, one_hot, Some(3)),
            13,
        ),
        (
            "gilr-lstm x2 dense",
            config(LayerKind::GilrLstm, dense, None),
            9,
        ),
        (
            "qrnn k=3 x2",
            config(LayerKind::Qrnn { width: 3 }, dense, None),
            11,
        ),
        (
            "qrnn k=3 x2 one-hot",
            config(LayerKind::Qrnn { width: 3 }, one_hot, Some(2)),
            7,
        ),
        (
            "qrnn k=1 x2",
            config(LayerKind::Qrnn { width: 1 }, dense, None),
            6,
        ),
        ("gilr x2", config(LayerKind::Gilr, dense, None), 8),
        ("sru x2", config(LayerKind::Sru, dense, Some(4)), 8),
    ]
}

/// Where the steps go: `cuts[r]..cuts[r + 1]` on rank r. Even; random (often with empty
/// ranks and chunks shorter than the QRNN window); everything on the first rank but one
/// step on the last; the last rank empty; one step on every rank but the first.
fn splits(n_steps: usize, n_ranks: usize, seed: u64) -> Vec<(&'static str, Vec<usize>)> {
    let even = (0..=n_ranks).map(|r| r * n_steps / n_ranks).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut random: Vec<usize> = (0..n_ranks - 1)
        .map(|_| rng.gen_range(0..=n_steps))
        .collect();
    random.extend([0, n_steps]);
    random.sort_unstable();
    let mut front = vec![0];
    front.extend(std::iter::repeat_n(n_steps - 1, n_ranks - 1));
    front.push(n_steps);
    let mut last_empty = vec![0];
    last_empty.extend((1..n_ranks).map(|r| r * n_steps / n_ranks.max(2)));
    last_empty.push(n_steps);
    if n_ranks > 1 {
        last_empty[n_ranks - 1] = n_steps;
    }
    // Every rank but the first holds one step: QRNN windows reach across several ranks.
    let mut one_step_tails = vec![0];
    one_step_tails.extend((1..=n_ranks).map(|r| n_steps + r - n_ranks));
    vec![
        ("even", even),
        ("random", random),
        ("front-loaded", front),
        ("last rank empty", last_empty),
        ("one-step tails", one_step_tails),
    ]
}

fn gradients_match(world: &SimpleCommunicator, report: &mut Report) {
    let (rank, n_ranks) = (world.rank(), world.size() as usize);
    let n_batch = 2;
    let labels = [2, 0];
    for (case, (name, config, n_steps)) in cases().into_iter().enumerate() {
        let init = InitConfig {
            gate_bias: GateBiasInit::Chrono { max_len: n_steps },
        };
        let model = Classifier::<f64>::new(config, init, 11 + case as u64).unwrap();
        let batch = Batch::random(&config, n_steps, n_batch, 101 + case as u64);
        let mut single = model.clone();
        let expected_stats = single
            .loss_and_grad(&Reference, batch.input(), &labels)
            .unwrap();
        let expected = gradients(&single);
        for (split_name, cuts) in splits(n_steps, n_ranks, 7 + case as u64) {
            let mine = batch.steps(cuts[rank as usize], cuts[rank as usize + 1]);
            let mut split = model.clone();
            let parallel = SequenceParallel::new(world, Parallel::default());
            let stats = parallel.loss_and_grad(&mut split, mine.input(), &labels);
            let what = || format!("{name}, {split_name} split {cuts:?}");
            let Ok(stats) = stats else {
                report.check(rank, false, || format!("{}: {:?}", what(), stats.err()));
                continue;
            };
            let loss_error = (stats.loss - expected_stats.loss).abs();
            report.check(
                rank,
                loss_error <= TOLERANCE * expected_stats.loss.abs().max(1.0),
                || format!("{}: loss {} vs {}", what(), stats.loss, expected_stats.loss),
            );
            report.check(rank, stats.n_correct == expected_stats.n_correct, || {
                format!("{}: accuracy", what())
            });
            let actual = gradients(&split);
            let (error, at) = worst_error(&actual, &expected);
            report.check(rank, error <= TOLERANCE, || {
                format!("{}: gradient of {at} off by {error:e} (relative)", what())
            });
            report.check(rank, same_on_every_rank(world, &actual), || {
                format!("{}: gradients differ between ranks", what())
            });
            if rank == 0 {
                println!("{name:22} {split_name:16} worst relative gradient error {error:.1e}");
            }
        }
    }
}

/// Three Adam steps on the split sequence move the parameters as one process does, and
/// evaluation gives the one-process loss.
fn train_step_matches(world: &SimpleCommunicator, report: &mut Report) {
    let (rank, n_ranks) = (world.rank(), world.size() as usize);
    let n_steps = 10;
    let config = config(LayerKind::GilrLstm, InputKind::OneHot { vocab: 5 }, Some(3));
    let model = Classifier::<f64>::new(config, InitConfig::default(), 3).unwrap();
    let batch = Batch::random(&config, n_steps, 2, 5);
    let labels = [1, 1];
    let mut single = model.clone();
    let mut single_adam = Adam::new(AdamConfig::default(), &single);
    let mut split = model.clone();
    let mut split_adam = Adam::new(AdamConfig::default(), &split);
    let parallel = SequenceParallel::new(world, Serial::default());
    let (start, end) = (
        rank as usize * n_steps / n_ranks,
        (rank as usize + 1) * n_steps / n_ranks,
    );
    let mine = batch.steps(start, end);
    for _ in 0..3 {
        single
            .train_step(&mut single_adam, &Reference, batch.input(), &labels)
            .unwrap();
        parallel
            .train_step(&mut split, &mut split_adam, mine.input(), &labels)
            .unwrap();
    }
    let values = |m: &Classifier<f64>| {
        let mut out = Vec::new();
        m.visit_params(&mut |name, value, _| out.push((name.to_string(), value.to_owned())));
        out
    };
    let (error, at) = worst_error(&values(&split), &values(&single));
    report.check(rank, error <= TOLERANCE, || {
        format!("three Adam steps: parameter {at} off by {error:e}")
    });
    // Evaluation after training: the same loss, and the gradients left as they were.
    let expected = single.evaluate(&Reference, batch.input(), &labels).unwrap();
    let grads_before = gradients(&split);
    let stats = parallel
        .evaluate(&mut split, mine.input(), &labels)
        .unwrap();
    let loss_error = (stats.loss - expected.loss).abs();
    report.check(
        rank,
        loss_error <= TOLERANCE * expected.loss.abs().max(1.0),
        || format!("evaluate: loss {} vs {}", stats.loss, expected.loss),
    );
    report.check(rank, gradients(&split) == grads_before, || {
        "evaluate changed the gradients".into()
    });
}

/// Bad arguments on any rank give an error on every rank, without a hang.
fn errors_are_agreed(world: &SimpleCommunicator, report: &mut Report) {
    let rank = world.rank();
    let dense = InputKind::Dense { size: 3 };
    let batch = Batch::Dense(Array3::zeros((2, 2, 3)));
    let parallel = SequenceParallel::new(world, Serial::default());

    let lstm = Classifier::<f64>::new(
        config(LayerKind::Lstm, dense, None),
        InitConfig::default(),
        1,
    );
    let result = parallel.loss_and_grad(&mut lstm.unwrap(), batch.input(), &[0, 1]);
    report.check(
        rank,
        matches!(result, Err(SequenceError::NotSplittable { .. })),
        || format!("LSTM: {result:?}"),
    );

    let mut model = Classifier::<f64>::new(
        config(LayerKind::Gilr, dense, None),
        InitConfig::default(),
        1,
    )
    .unwrap();
    // A label out of range on the last rank only.
    let labels = if rank + 1 == world.size() {
        [0, 7]
    } else {
        [0, 1]
    };
    let result = parallel.loss_and_grad(&mut model, batch.input(), &labels);
    let expected = if rank + 1 == world.size() {
        matches!(result, Err(SequenceError::Model(_)))
    } else {
        matches!(result, Err(SequenceError::OtherRankFailed { count: 1 }))
    };
    report.check(rank, expected, || {
        format!("bad label on the last rank: {result:?}")
    });

    // Another batch size on rank 0.
    let other = Batch::Dense(Array3::zeros((2, 1 + usize::from(rank != 0), 3)));
    let labels = if rank == 0 { vec![0] } else { vec![0, 1] };
    let result = parallel.loss_and_grad(&mut model, other.input(), &labels);
    let expected = world.size() == 1 && result.is_ok()
        || matches!(result, Err(SequenceError::Disagreement { .. }));
    report.check(rank, expected, || format!("batch sizes differ: {result:?}"));

    // Other parameter values on rank 0.
    let mut other = Classifier::<f64>::new(
        config(LayerKind::Gilr, dense, None),
        InitConfig::default(),
        1 + u64::from(rank == 0),
    )
    .unwrap();
    let result = parallel.loss_and_grad(&mut other, batch.input(), &[0, 1]);
    let expected = world.size() == 1 && result.is_ok()
        || matches!(
            result,
            Err(SequenceError::Disagreement { what: "the model" })
        );
    report.check(rank, expected, || format!("models differ: {result:?}"));

    // No steps anywhere.
    let empty = Batch::Dense(Array3::zeros((0, 2, 3)));
    let result = parallel.loss_and_grad(&mut model, empty.input(), &[0, 1]);
    report.check(rank, matches!(result, Err(SequenceError::NoSteps)), || {
        format!("no steps: {result:?}")
    });
}

fn main() {
    let universe = mpi::initialize().expect("MPI initialises once");
    let world = universe.world();
    let mut report = Report {
        failures: 0,
        checks: 0,
    };
    gradients_match(&world, &mut report);
    train_step_matches(&world, &mut report);
    errors_are_agreed(&world, &mut report);
    let mut failures = 0;
    world.all_reduce_into(&report.failures, &mut failures, SystemOperation::sum());
    if world.rank() == 0 {
        println!(
            "sequence parallelism on {} rank(s): {} checks per rank, {failures} failure(s)",
            world.size(),
            report.checks
        );
    }
    if failures > 0 {
        std::process::exit(1);
    }
}
