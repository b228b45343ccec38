//! The 2-D grid (data groups × sequence ranks) against one process. Run under
//! `mpirun -n N` (any N ≥ 1): every grid shape `D × S` with `S` dividing `N` (on 4 ranks:
//! 4 × 1, 2 × 2, 1 × 4). Every rank builds the same models and batches from shared seeds,
//! takes its data group's sequences and its own steps of them, and compares the loss and
//! every parameter gradient of `GridParallel::loss_and_grad` with
//! `Classifier::loss_and_grad` on the whole batch and the whole sequence in one process,
//! in f64; then three Adam steps, an evaluation, and the errors every rank must report.
//!
//! Tolerance: |grid − single| ≤ 1e-13 · max(1, max |single|) per parameter array (the two
//! differ only in the order of floating-point operations: scans composed over ranks, and
//! gradients summed over the sequence ranks, then weighted by each group's share of the
//! batch and summed over the groups); the loss within 1e-13 relative to max(1, loss).

mod common;

use common::{config, gradients, same_on_every_rank, worst_error, Batch, Report};
use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use rnn_mpi::{DataParallelError, GridError, GridParallel};
use scan_core::Reference;
use scan_cpu::Parallel;
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
            9,
        ),
        (
            "qrnn k=3 x2",
            config(LayerKind::Qrnn { width: 3 }, dense, None),
            7,
        ),
        ("sru x2", config(LayerKind::Sru, dense, Some(4)), 6),
    ]
}

/// The global batch: 5 sequences, so data groups get uneven shares.
const LABELS: [usize; 5] = [2, 0, 1, 1, 2];

/// This rank's part of `batch`: its data group's sequences, its own steps of them.
fn mine(grid: &GridParallel<Parallel>, batch: &Batch, n_steps: usize, rank: usize) -> Batch {
    let (sequences, steps) = (
        grid.shape().batch_share(LABELS.len(), rank),
        grid.shape().step_share(n_steps, rank),
    );
    batch
        .sequences(sequences.start, sequences.end)
        .steps(steps.start, steps.end)
}

fn gradients_match(world: &SimpleCommunicator, grid: &GridParallel<Parallel>, report: &mut Report) {
    let rank = world.rank();
    let shape = grid.shape();
    let labels = &LABELS[grid.shape().batch_share(LABELS.len(), rank as usize)];
    for (case, (name, config, n_steps)) in cases().into_iter().enumerate() {
        let init = InitConfig {
            gate_bias: GateBiasInit::Chrono { max_len: n_steps },
        };
        let model = Classifier::<f64>::new(config, init, 21 + case as u64).unwrap();
        let batch = Batch::random(&config, n_steps, LABELS.len(), 201 + case as u64);
        let mut single = model.clone();
        let expected_stats = single
            .loss_and_grad(&Reference, batch.input(), &LABELS)
            .unwrap();
        let expected = gradients(&single);
        let part = mine(grid, &batch, n_steps, rank as usize);
        let mut split = model.clone();
        let what = || {
            format!(
                "{name} on a {} x {} grid",
                shape.data_groups(),
                shape.sequence_ranks()
            )
        };
        let stats = match grid.loss_and_grad(&mut split, part.input(), labels) {
            Ok(stats) => stats,
            Err(error) => {
                report.check(rank, false, || format!("{}: {error}", what()));
                continue;
            }
        };
        let loss_error = (stats.loss - expected_stats.loss).abs();
        report.check(
            rank,
            loss_error <= TOLERANCE * expected_stats.loss.abs().max(1.0),
            || format!("{}: loss {} vs {}", what(), stats.loss, expected_stats.loss),
        );
        report.check(
            rank,
            stats.n_correct == expected_stats.n_correct && stats.n_sequences == LABELS.len(),
            || format!("{}: {stats:?} vs {expected_stats:?}", what()),
        );
        let actual = gradients(&split);
        let (error, at) = worst_error(&actual, &expected);
        report.check(rank, error <= TOLERANCE, || {
            format!("{}: gradient of {at} off by {error:e} (relative)", what())
        });
        report.check(rank, same_on_every_rank(world, &actual), || {
            format!("{}: gradients differ between ranks", what())
        });
        if rank == 0 {
            println!(
                "{name:14} {} x {} grid: worst relative gradient error {error:.1e}, loss {loss_error:.1e}",
                shape.data_groups(),
                shape.sequence_ranks()
            );
        }
    }
}

/// Three Adam steps on the grid move the parameters as one process does, and evaluation
/// gives the one-process loss and accuracy without touching the gradients.
fn train_step_matches(
    world: &SimpleCommunicator,
    grid: &GridParallel<Parallel>,
    report: &mut Report,
) {
    let rank = world.rank();
    let n_steps = 10;
    let config = config(LayerKind::GilrLstm, InputKind::OneHot { vocab: 5 }, Some(3));
    let model = Classifier::<f64>::new(config, InitConfig::default(), 3).unwrap();
    let batch = Batch::random(&config, n_steps, LABELS.len(), 5);
    let labels = &LABELS[grid.shape().batch_share(LABELS.len(), rank as usize)];
    let part = mine(grid, &batch, n_steps, rank as usize);
    let adam_config = AdamConfig {
        learning_rate: 1e-2,
        ..AdamConfig::default()
    };
    let mut single = model.clone();
    let mut single_adam = Adam::new(adam_config, &single);
    let mut split = model.clone();
    let mut split_adam = Adam::new(adam_config, &split);
    for step in 0..3 {
        let expected = single
            .train_step(&mut single_adam, &Reference, batch.input(), &LABELS)
            .unwrap();
        let actual = grid
            .train_step(&mut split, &mut split_adam, part.input(), labels)
            .unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= TOLERANCE * b.abs().max(1.0);
        report.check(
            rank,
            close(actual.batch.loss, expected.batch.loss)
                && close(actual.grad_norm, expected.grad_norm)
                && actual.batch.n_correct == expected.batch.n_correct,
            || format!("Adam step {step}: {actual:?} vs {expected:?}"),
        );
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
    report.check(
        rank,
        grid.check_replicas(&split, &split_adam).is_ok(),
        || "replicas differ after three Adam steps".into(),
    );
    let expected = single.evaluate(&Reference, batch.input(), &LABELS).unwrap();
    let grads_before = gradients(&split);
    match grid.evaluate(&mut split, part.input(), labels) {
        Ok(stats) => report.check(
            rank,
            (stats.loss - expected.loss).abs() <= TOLERANCE * expected.loss.abs().max(1.0)
                && stats.n_correct == expected.n_correct
                && stats.accuracy == expected.accuracy,
            || format!("evaluate: {stats:?} vs {expected:?}"),
        ),
        Err(error) => report.check(rank, false, || format!("evaluate: {error}")),
    }
    report.check(rank, gradients(&split) == grads_before, || {
        "evaluate changed the gradients".into()
    });
}

/// Bad arguments on any rank give every rank the same error, without a hang.
fn errors_are_agreed(
    world: &SimpleCommunicator,
    grid: &GridParallel<Parallel>,
    report: &mut Report,
) {
    let (rank, n_ranks) = (world.rank(), world.size());
    let config = config(LayerKind::Gilr, InputKind::Dense { size: 3 }, None);
    let mut model = Classifier::<f64>::new(config, InitConfig::default(), 1).unwrap();
    let batch = Batch::random(&config, 6, LABELS.len(), 9);
    let part = mine(grid, &batch, 6, rank as usize);
    let share = grid.shape().batch_share(LABELS.len(), rank as usize);

    // A label out of range on the last rank only: every rank reports that rank's error.
    let mut labels = LABELS[share.clone()].to_vec();
    if rank + 1 == n_ranks {
        *labels.last_mut().unwrap() = 7;
    }
    let result = grid.loss_and_grad(&mut model, part.input(), &labels);
    let expected = matches!(
        &result,
        Err(GridError::Data(DataParallelError::RankFailed { rank: failed, message }))
            if *failed == n_ranks - 1 && message.contains("label 7")
    );
    report.check(rank, expected, || {
        format!("bad label on the last rank: {result:?}")
    });

    // A batch of one over two or more data groups: the others have no sequences.
    if grid.shape().data_groups() > 1 {
        let one = batch.sequences(0, 1);
        let mut single = model.clone();
        single.zero_grad();
        let expected = single.loss_and_grad(&Reference, one.input(), &LABELS[..1]);
        let share = grid.shape().batch_share(1, rank as usize);
        let steps = grid.shape().step_share(6, rank as usize);
        let part = one
            .sequences(share.start, share.end)
            .steps(steps.start, steps.end);
        let result = grid.loss_and_grad(&mut model, part.input(), &LABELS[share.clone()]);
        let (error, at) = worst_error(&gradients(&model), &gradients(&single));
        report.check(
            rank,
            result.as_ref().ok().map(|s| s.n_correct) == expected.ok().map(|s| s.n_correct)
                && error <= TOLERANCE,
            || format!("empty data groups: {result:?}, gradient of {at} off by {error:e}"),
        );
        // Ranks of one group that disagree on having sequences: an error everywhere.
        let labels = if rank as usize == grid.shape().sequence_ranks() - 1 {
            &LABELS[..0]
        } else {
            &LABELS[share]
        };
        let result = grid.loss_and_grad(&mut model, part.input(), labels);
        report.check(
            rank,
            matches!(&result, Err(GridError::Data(DataParallelError::RankFailed { message, .. }))
                if message.contains("whether the data group has sequences"))
                || grid.shape().sequence_ranks() == 1,
            || format!("a group half empty: {result:?}"),
        );
    }

    // Replicas built from another seed on rank 0.
    let other =
        Classifier::<f64>::new(config, InitConfig::default(), 1 + u64::from(rank == 0)).unwrap();
    let result = grid.check_replicas(&other, &Adam::new(AdamConfig::default(), &other));
    let expected = n_ranks == 1 && result.is_ok()
        || matches!(
            result,
            Err(GridError::Data(DataParallelError::ReplicasDiffer { .. }))
        );
    report.check(rank, expected, || format!("replicas differ: {result:?}"));
}

/// Grids that do not tile the ranks are errors on every rank.
fn bad_shapes_are_errors(world: &SimpleCommunicator, report: &mut Report) {
    let n_ranks = world.size() as usize;
    for sequence_ranks in [0, n_ranks + 1] {
        let result = GridParallel::new(world, sequence_ranks, Parallel::default());
        report.check(
            world.rank(),
            matches!(result, Err(GridError::Shape { ranks, .. }) if ranks == n_ranks),
            || format!("{sequence_ranks} sequence ranks of {n_ranks}: not a shape error"),
        );
    }
}

fn main() {
    let universe = mpi::initialize().expect("MPI initialises once");
    let world = universe.world();
    let n_ranks = world.size() as usize;
    let mut report = Report {
        failures: 0,
        checks: 0,
    };
    bad_shapes_are_errors(&world, &mut report);
    for sequence_ranks in (1..=n_ranks).filter(|s| n_ranks.is_multiple_of(*s)) {
        let grid = GridParallel::new(&world, sequence_ranks, Parallel::default())
            .expect("a shape that divides the ranks");
        gradients_match(&world, &grid, &mut report);
        train_step_matches(&world, &grid, &mut report);
        errors_are_agreed(&world, &grid, &mut report);
    }
    let mut failures = 0;
    world.all_reduce_into(&report.failures, &mut failures, SystemOperation::sum());
    if world.rank() == 0 {
        println!(
            "grid parallelism on {n_ranks} rank(s): {} checks per rank, {failures} failure(s)",
            report.checks
        );
    }
    if failures > 0 {
        std::process::exit(1);
    }
}
