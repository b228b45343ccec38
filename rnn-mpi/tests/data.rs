//! Data-parallel training against single-process training on the concatenated batch. Run
//! under `mpirun -n N` (any N ≥ 1): every rank builds the same model, draws the same global
//! batches, trains on its share with [`DataParallel::train_step`], and also trains a copy of
//! the model on the whole batch itself as the reference; rank 0 prints the totals.

use mpi::collective::SystemOperation;
use mpi::traits::*;
use rnn_mpi::{batch_sequences, share_of_batch, DataParallel, DataParallelError};
use scan_mpi::MpiElement;
use surrogate_rnn::{
    Adam, AdamConfig, Classifier, GateBiasInit, InitConfig, LayerKind, ModelConfig, ModelInput,
    Parameters, Real, SyntheticTask,
};

const STEPS: u64 = 4;
const SEED: u64 = 5;

fn model<E: Real>(task: &SyntheticTask, layer: LayerKind, seed: u64) -> Classifier<E> {
    let config = ModelConfig {
        layer,
        input: surrogate_rnn::InputKind::OneHot { vocab: task.dim() },
        input_projection: Some(4),
        hidden: 6,
        layers: 2,
        classes: SyntheticTask::N_CLASSES,
    };
    let init = InitConfig {
        gate_bias: GateBiasInit::Chrono {
            max_len: task.seq_len(),
        },
    };
    Classifier::new(config, init, seed).expect("a valid model")
}

fn adam<E: Real>(model: &Classifier<E>) -> Adam<E> {
    let config = AdamConfig {
        learning_rate: 1e-2,
        // Low enough that some steps clip: clipping must agree too.
        clip_norm: Some(0.3),
        ..AdamConfig::default()
    };
    Adam::new(config, model)
}

/// The largest `|a − b| / (1 + |b|)` over all parameters.
fn max_difference<E: Real>(a: &Classifier<E>, b: &Classifier<E>) -> f64 {
    let mut values = Vec::new();
    b.visit_params(&mut |_, value, _| values.extend(value.iter().map(|v| v.as_f64())));
    let mut worst = 0.0_f64;
    let mut index = 0;
    a.visit_params(&mut |_, value, _| {
        for v in value.iter() {
            let expected = values[index];
            worst = worst.max((v.as_f64() - expected).abs() / (1.0 + expected.abs()));
            index += 1;
        }
    });
    worst
}

/// `STEPS` data-parallel steps on a global batch of `n_batch` against single-process
/// training on the same batches; parameters, loss, accuracy and gradient norm must agree
/// within `tolerance` (relative, with an absolute floor of `tolerance`).
fn matches_single_process<E: MpiElement + Real>(
    data: &DataParallel,
    layer: LayerKind,
    n_batch: usize,
    tolerance: f64,
) -> Result<(), String> {
    let task = SyntheticTask::new(9, 5).map_err(|e| e.to_string())?;
    let scan = scan_cpu::Parallel::default();
    let mut distributed = model::<E>(&task, layer, 11);
    let mut distributed_adam = adam(&distributed);
    let mut single = distributed.clone();
    let mut single_adam = distributed_adam.clone();
    data.check_replicas(&distributed, &distributed_adam)
        .map_err(|e| e.to_string())?;
    let share = share_of_batch(n_batch, data.rank(), data.size());
    for step in 0..STEPS {
        let batch = task
            .batch_for_step::<E>(SEED, step, n_batch)
            .map_err(|e| e.to_string())?;
        let expected = single
            .train_step(
                &mut single_adam,
                &scan,
                ModelInput::OneHot(&batch.input),
                &batch.labels,
            )
            .map_err(|e| e.to_string())?;
        let local = batch_sequences(&batch, share.clone()).map_err(|e| e.to_string())?;
        let actual = data
            .train_step(
                &mut distributed,
                &mut distributed_adam,
                &scan,
                ModelInput::OneHot(&local.input),
                &local.labels,
            )
            .map_err(|e| e.to_string())?;
        let close = |a: f64, b: f64| (a - b).abs() <= tolerance * (1.0 + b.abs());
        if !close(actual.batch.loss, expected.batch.loss)
            || actual.batch.n_correct != expected.batch.n_correct
            || actual.batch.n_sequences != n_batch
            || !close(actual.grad_norm, expected.grad_norm)
            || actual.clipped != expected.clipped
        {
            return Err(format!(
                "step {step}: distributed {actual:?}, single process {expected:?}"
            ));
        }
        let difference = max_difference(&distributed, &single);
        if difference > tolerance {
            return Err(format!(
                "step {step}: parameters differ by {difference:e} (relative), tolerance {tolerance:e}"
            ));
        }
    }
    // Every rank must hold bitwise the same model and optimizer state.
    data.check_replicas(&distributed, &distributed_adam)
        .map_err(|e| e.to_string())
}

/// Two runs of the same data-parallel steps give bitwise the same parameters.
fn deterministic(data: &DataParallel) -> Result<(), String> {
    let task = SyntheticTask::new(7, 4).map_err(|e| e.to_string())?;
    let scan = scan_cpu::Parallel::default();
    let run = || -> Result<Vec<u64>, String> {
        let mut model = model::<f32>(&task, LayerKind::GilrLstm, 3);
        let mut optimizer = adam(&model);
        for step in 0..STEPS {
            let batch = task
                .batch_for_step::<f32>(SEED, step, 6)
                .map_err(|e| e.to_string())?;
            let local = batch_sequences(&batch, share_of_batch(6, data.rank(), data.size()))
                .map_err(|e| e.to_string())?;
            data.train_step(
                &mut model,
                &mut optimizer,
                &scan,
                ModelInput::OneHot(&local.input),
                &local.labels,
            )
            .map_err(|e| e.to_string())?;
        }
        let mut bits = Vec::new();
        model
            .visit_params(&mut |_, value, _| bits.extend(value.iter().map(|v| v.to_bits() as u64)));
        Ok(bits)
    };
    if run()? != run()? {
        return Err("two identical runs gave different parameters".into());
    }
    Ok(())
}

/// A bad label on the last rank: every rank returns that rank's error, nothing hangs, the
/// model is untouched, and the next step works.
fn errors_agree(data: &DataParallel) -> Result<(), String> {
    let task = SyntheticTask::new(6, 4).map_err(|e| e.to_string())?;
    let scan = scan_cpu::Parallel::default();
    let mut model = model::<f64>(&task, LayerKind::Qrnn { width: 3 }, 2);
    let mut optimizer = adam(&model);
    let before = model.clone();
    let last = data.size() - 1;
    let n_batch = 2 * data.size();
    let batch = task
        .batch_for_step::<f64>(SEED, 0, n_batch)
        .map_err(|e| e.to_string())?;
    let mut local = batch_sequences(&batch, share_of_batch(n_batch, data.rank(), data.size()))
        .map_err(|e| e.to_string())?;
    if data.rank() == last {
        local.labels[0] = 7;
    }
    let result = data.train_step(
        &mut model,
        &mut optimizer,
        &scan,
        ModelInput::OneHot(&local.input),
        &local.labels,
    );
    match result {
        Err(DataParallelError::RankFailed { rank, message })
            if rank as usize == last && message.contains("label 7") => {}
        other => return Err(format!("a bad label on rank {last} gave {other:?}")),
    }
    if max_difference(&model, &before) != 0.0 || optimizer.steps() != 0 {
        return Err("a failed step changed the model or the optimizer".into());
    }
    // Every rank with an empty share: an error on every rank, not a hang.
    match data.train_step(
        &mut model,
        &mut optimizer,
        &scan,
        ModelInput::OneHot(
            &batch_sequences(&batch, 0..0)
                .map_err(|e| e.to_string())?
                .input,
        ),
        &[],
    ) {
        Err(DataParallelError::EmptyBatch) => {}
        other => return Err(format!("an empty global batch gave {other:?}")),
    }
    let good = batch_sequences(&batch, share_of_batch(n_batch, data.rank(), data.size()))
        .map_err(|e| e.to_string())?;
    data.train_step(
        &mut model,
        &mut optimizer,
        &scan,
        ModelInput::OneHot(&good.input),
        &good.labels,
    )
    .map(|_| ())
    .map_err(|e| format!("the step after a failed one: {e}"))
}

/// Replicas built from different seeds are caught (with more than one rank).
fn replicas_are_checked(data: &DataParallel) -> Result<(), String> {
    let task = SyntheticTask::new(6, 4).map_err(|e| e.to_string())?;
    let seed = if data.rank() == data.size() - 1 {
        99
    } else {
        1
    };
    let model = model::<f32>(&task, LayerKind::GilrLstm, seed);
    let result = data.check_replicas(&model, &adam(&model));
    match (data.size(), result) {
        (1, Ok(())) => Ok(()),
        (n, Err(DataParallelError::ReplicasDiffer { what })) if n > 1 && what.contains("value") => {
            Ok(())
        }
        (_, other) => Err(format!("replicas from different seeds gave {other:?}")),
    }
}

fn main() {
    let Some(universe) = mpi::initialize() else {
        eprintln!("MPI could not be initialized");
        std::process::exit(2);
    };
    let world = universe.world();
    let data = DataParallel::new(&world);
    let n_ranks = data.size();
    // Global batches that split unevenly over 2, 3 and 4 ranks, and one that leaves a rank
    // empty on 4.
    let outcomes: Vec<(String, Result<(), String>)> = vec![
        (
            "f64 GILR-LSTM, batch 7".into(),
            matches_single_process::<f64>(&data, LayerKind::GilrLstm, 7, 1e-9),
        ),
        (
            "f64 QRNN k = 3, batch 3".into(),
            matches_single_process::<f64>(&data, LayerKind::Qrnn { width: 3 }, 3, 1e-9),
        ),
        (
            "f32 GILR-LSTM, batch 10".into(),
            matches_single_process::<f32>(&data, LayerKind::GilrLstm, 10, 2e-3),
        ),
        ("deterministic".into(), deterministic(&data)),
        ("errors agree".into(), errors_agree(&data)),
        ("replicas are checked".into(), replicas_are_checked(&data)),
    ];
    let local_failed = outcomes.iter().filter(|(_, r)| r.is_err()).count() as u64;
    for (name, outcome) in &outcomes {
        if let Err(why) = outcome {
            eprintln!("rank {}: {name}: FAILED: {why}", data.rank());
        }
    }
    let mut failed = 0_u64;
    world.all_reduce_into(&local_failed, &mut failed, SystemOperation::sum());
    if data.rank() == 0 {
        println!(
            "data-parallel training on {n_ranks} rank(s): {} checks, {failed} failure(s) over all ranks",
            outcomes.len()
        );
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
