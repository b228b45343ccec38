//! The MPI side of [`super`]: the processes of one job, held for the run in a thread-local
//! (the training loop runs on the main thread; MPI handles are not `Send`).

use std::cell::{Cell, RefCell};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use std::ops::Range;

use ndarray::{Array2, ArrayView2, Axis, Slice};
use rnn_mpi::{
    share_of_batch, DataParallel, DataParallelError, GridError, GridParallel, GridShape,
    SequenceError, SequenceParallel,
};
use scan_core::LinearScan;
use surrogate_rnn::{
    Adam, Classifier, ModelConfig, ModelError, ModelInput, OneHotSequence, SyntheticTask,
    TrainStats,
};

use super::{agree_local, local_step, rank_seed, Mode};
use crate::resume::{self, RunSettings, Session};
use crate::state::LoopState;
use crate::synthetic::{self, eval_batch_within, eval_chunk_len, Outcome, SyntheticArgs};

/// The processes of the job, while a run is on.
struct Cluster {
    world: SimpleCommunicator,
    data: DataParallel,
    /// The run's mode, once its session is agreed (`None`: a one-process plain run).
    mode: Cell<Option<Mode>>,
    /// The processes each sequence is split over (grid runs; the whole job in sequence
    /// runs; 1 otherwise), once the session is agreed.
    sequence_ranks: Cell<usize>,
    /// Whether the last error was met by every process together.
    agreed_failure: Cell<bool>,
}

thread_local! {
    static CLUSTER: RefCell<Option<Cluster>> = const { RefCell::new(None) };
}

fn with_cluster<R>(body: impl FnOnce(Option<&Cluster>) -> R) -> R {
    CLUSTER.with(|cell| body(cell.borrow().as_ref()))
}

/// Whether `mpirun` (Open MPI, MPICH or a PMIx launcher) started this process.
fn launched_by_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

/// Runs `trainer synthetic`, joining the MPI job when `--distributed` is given or `mpirun`
/// started the process.
pub fn run_synthetic(args: &SyntheticArgs) -> Result<Outcome> {
    if args.distributed.is_none() && !launched_by_mpirun() {
        return synthetic::run(args);
    }
    let universe = mpi::initialize().context("MPI could not be initialized")?;
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    // A panic anywhere ends the whole job rather than leaving the others waiting.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        SimpleCommunicator::world().abort(101);
    }));
    CLUSTER.with(|cell| {
        *cell.borrow_mut() = Some(Cluster {
            data: DataParallel::new(&world),
            world,
            mode: Cell::new(None),
            sequence_ranks: Cell::new(1),
            agreed_failure: Cell::new(false),
        })
    });
    let result = synthetic::run(args);
    let cluster = CLUSTER
        .with(|cell| cell.borrow_mut().take())
        .expect("set above");
    match result {
        Ok(outcome) => {
            // mpirun ends the job when a process exits with a non-zero status (130 after an
            // interrupt), so nobody exits before rank 0 has written everything.
            cluster.world.barrier();
            drop(cluster);
            drop(universe);
            Ok(outcome)
        }
        Err(error) if cluster.agreed_failure.get() => {
            // Every process has this error: rank 0 reports it, then all finish MPI and fail.
            if rank == 0 {
                eprintln!("error: {error:#}");
            }
            cluster.world.barrier();
            drop(cluster);
            drop(universe);
            std::process::exit(1)
        }
        Err(error) => {
            eprintln!("error (rank {rank} of {size}): {error:#}");
            cluster.world.abort(1)
        }
    }
}

/// A new run's session: rank 0 creates the run folder; the other ranks build the same
/// model and optimizer (same seed) and learn the folder in [`agree_session`].
pub fn start_new(args: &SyntheticArgs) -> Result<Session> {
    with_cluster(|cluster| {
        let Some(cluster) = cluster else {
            return resume::start_new(args);
        };
        let size = cluster.world.size() as usize;
        match args.distributed {
            None if size == 1 => return resume::start_new(args),
            None => bail!(
                "mpirun started {size} processes, but the run is not distributed: pass \
                 --distributed data (or run the trainer without mpirun)"
            ),
            Some(Mode::Sequence) => anyhow::ensure!(
                args.seq_len >= size,
                "--seq-len {} is shorter than the {size} processes: every process needs at \
                 least one step of each sequence",
                args.seq_len
            ),
            Some(Mode::Data) => anyhow::ensure!(
                args.batch >= size,
                "--batch {} is smaller than the {size} processes: every process needs at \
                 least one sequence of each batch",
                args.batch
            ),
            Some(Mode::Grid) => check_grid(args, size)?,
        }
        let args = SyntheticArgs {
            ranks: Some(size),
            ..args.clone()
        };
        if cluster.world.rank() == 0 {
            return resume::start_new(&args);
        }
        args.validate()?;
        let model = Classifier::<f32>::new(args.model_config(), args.init_config(), args.seed)
            .context("building the model")?;
        let adam = Adam::new(args.adam_config(), &model);
        Ok(Session {
            settings: RunSettings::new(&args),
            dir: PathBuf::new(),
            model,
            adam,
            state: LoopState::new(&args.stages()),
            history: Vec::new(),
        })
    })
}

/// Checks that a new grid run's `--sequence-ranks` fits the job, its sequences and batch.
fn check_grid(args: &SyntheticArgs, size: usize) -> Result<()> {
    let Some(sequence_ranks) = args.sequence_ranks else {
        bail!(
            "--distributed grid needs --sequence-ranks S: the processes each sequence is split \
             over (S must divide the {size} processes)"
        );
    };
    let shape = GridShape::new(size, sequence_ranks).map_err(|_| {
        anyhow::anyhow!(
            "--sequence-ranks {sequence_ranks} does not divide the {size} processes of this \
             job: a grid is N/S data groups of S processes each"
        )
    })?;
    anyhow::ensure!(
        args.seq_len >= sequence_ranks,
        "--seq-len {} is shorter than --sequence-ranks {sequence_ranks}: every process needs \
         at least one step of each sequence",
        args.seq_len
    );
    anyhow::ensure!(
        args.batch >= shape.data_groups(),
        "--batch {} is smaller than the {} data groups ({size} processes / --sequence-ranks \
         {sequence_ranks}): every group needs at least one sequence of each batch",
        args.batch,
        shape.data_groups()
    );
    Ok(())
}

/// Checks that the session fits this job's process count.
fn check_ranks(args: &SyntheticArgs, size: usize) -> Result<()> {
    match (args.distributed, args.ranks) {
        (None, _) if size > 1 => bail!(
            "this run is not distributed, but mpirun started {size} processes; resume it \
             without mpirun"
        ),
        (Some(Mode::Grid), Some(ranks)) if ranks != size => bail!(
            "this run was trained on a grid of {ranks} processes ({} data groups × \
             --sequence-ranks {}), this job has {size}; resume it with `mpirun -n {ranks}` \
             (the grid is part of the run: run.json records it)",
            ranks / args.sequence_ranks.unwrap_or(1).max(1),
            args.sequence_ranks.unwrap_or(1)
        ),
        (Some(_), Some(ranks)) if ranks != size => bail!(
            "this run was trained on {ranks} processes, this job has {size}; resume it with \
             `mpirun -n {ranks}` (every process draws its own data stream, so another count \
             would train on other data)"
        ),
        (Some(Mode::Grid), Some(_)) => check_grid(args, size),
        (Some(_), None) => bail!("run.json records --distributed without a process count"),
        _ => Ok(()),
    }
}

/// Every process learns whether any failed to set up its session (lowest failing rank's
/// message); then the others take rank 0's folder and run identity, and the model and
/// optimizer state are checked to be the same everywhere.
pub fn agree_session(session: Result<Session>) -> Result<Session> {
    with_cluster(|cluster| {
        let Some(cluster) = cluster else {
            return agree_local(session);
        };
        let size = cluster.world.size() as usize;
        let session = session.and_then(|s| check_ranks(&s.settings.args, size).map(|()| s));
        let status = session.as_ref().map(|_| ()).map_err(|e| format!("{e:#}"));
        if let Err(error) = cluster.data.agree(status) {
            cluster.agreed_failure.set(true);
            return Err(describe(error));
        }
        let mut session = session?;
        let root = cluster.world.process_at_rank(0);
        session.dir = PathBuf::from(broadcast_string(
            &root,
            session.dir.to_string_lossy().into_owned(),
        ));
        session.settings.run_id = broadcast_string(&root, session.settings.run_id.clone());
        if let Err(error) = cluster.data.check_replicas(&session.model, &session.adam) {
            cluster.agreed_failure.set(true);
            return Err(describe(error));
        }
        cluster.mode.set(session.settings.args.distributed);
        let args = &session.settings.args;
        cluster.sequence_ranks.set(match args.distributed {
            Some(Mode::Sequence) => size,
            Some(Mode::Grid) => args.sequence_ranks.unwrap_or(1),
            _ => 1,
        });
        if cluster.world.rank() == 0 && size > 1 {
            match args.distributed {
                Some(Mode::Data) => eprintln!(
                    "data parallel over {size} processes: each trains on its share of every \
                     batch of {}; rank 0 prints and writes the run folder",
                    args.batch
                ),
                Some(Mode::Sequence) => eprintln!(
                    "sequence parallel over {size} processes: each holds its share of the \
                     {} steps of every sequence; rank 0 prints and writes the run folder",
                    args.seq_len
                ),
                Some(Mode::Grid) => eprintln!(
                    "grid over {size} processes: {} data groups, each training on its share of \
                     every batch of {} with every sequence split over time across its {} \
                     processes; rank 0 prints and writes the run folder",
                    size / cluster.sequence_ranks.get(),
                    args.batch,
                    cluster.sequence_ranks.get()
                ),
                None => {}
            }
        }
        Ok(session)
    })
}

fn describe(error: DataParallelError) -> anyhow::Error {
    match error {
        DataParallelError::RankFailed { rank, message } => {
            anyhow::anyhow!("rank {rank}: {message}")
        }
        other => other.into(),
    }
}

/// Rank 0's `value` on every rank.
fn broadcast_string(root: &mpi::topology::Process<'_>, value: String) -> String {
    let mut bytes = value.into_bytes();
    let mut len = bytes.len() as u64;
    root.broadcast_into(&mut len);
    bytes.resize(len as usize, 0);
    root.broadcast_into(&mut bytes[..]);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether this process writes the run's files and prints: rank 0, or a plain run.
pub fn writes_files() -> bool {
    with_cluster(|cluster| cluster.is_none_or(|c| c.world.rank() == 0))
}

/// Rank 0's clock, and whether any process was asked to stop: what the schedule decides
/// on, so every process decides the same. Collective in a distributed run.
pub fn agree_clock(wall_seconds: f64, interrupted: bool) -> (f64, bool) {
    with_cluster(|cluster| match cluster {
        Some(c) if c.mode.get().is_some() => {
            let mut wall = wall_seconds;
            c.world.process_at_rank(0).broadcast_into(&mut wall);
            (wall, any(c, interrupted))
        }
        _ => (wall_seconds, interrupted),
    })
}

fn any(cluster: &Cluster, flag: bool) -> bool {
    let mut global = 0_u8;
    cluster
        .world
        .all_reduce_into(&u8::from(flag), &mut global, SystemOperation::max());
    global != 0
}

/// One training step: local in a plain run (whole, or in chunks of `chunk_len` steps;
/// the distributed modes run whole steps). Data parallel: this rank's share of the batch
/// from its own stream, gradients summed over all ranks. Sequence parallel: the batch of
/// the run's stream (the same on every rank), this rank's share of its steps. Grid: the
/// same batch, this rank's data group's share of its sequences and its own steps of them.
pub fn train_step(
    model: &mut Classifier<f32>,
    adam: &mut Adam<f32>,
    scan: &dyn LinearScan<f32>,
    task: &SyntheticTask,
    seed: u64,
    n_batch: usize,
    chunk_len: Option<usize>,
) -> Result<TrainStats, ModelError> {
    with_cluster(|cluster| {
        let Some((cluster, mode)) = cluster.and_then(|c| Some((c, c.mode.get()?))) else {
            return local_step(model, adam, scan, task, seed, n_batch, chunk_len);
        };
        let (rank, size) = (cluster.data.rank(), cluster.data.size());
        let result = match mode {
            Mode::Data => {
                let share = share_of_batch(n_batch, rank, size).len();
                let batch =
                    task.batch_for_step::<f32>(rank_seed(seed, rank), adam.steps(), share)?;
                let input = ModelInput::OneHot(&batch.input);
                (cluster
                    .data
                    .train_step(model, adam, scan, input, &batch.labels))
                .map_err(|error| match error {
                    DataParallelError::Optimizer(error) => error,
                    other => failed_step(describe(other)),
                })
            }
            Mode::Sequence => {
                let steps = share_of_batch(task.seq_len(), rank, size);
                let key = (seed, adam.steps());
                let (labels, mine) =
                    draw_part(task, model.config(), key, n_batch, steps, 0..n_batch)
                        .map_err(failed_step)?;
                let split = SequenceParallel::new(&cluster.world, scan);
                (split.train_step(model, adam, ModelInput::OneHot(&mine), &labels)).map_err(
                    |error| match error {
                        SequenceError::Model(error) => error,
                        other => failed_step(other.into()),
                    },
                )
            }
            Mode::Grid => grid_step(cluster, model, adam, scan, task, seed, n_batch),
        };
        // Every rank meets these errors at the same step (a failure after the ranks agreed
        // to run a pass aborts the job inside rnn-mpi instead).
        cluster.agreed_failure.set(result.is_err());
        result
    })
}

fn failed_step(error: anyhow::Error) -> ModelError {
    ModelError::InvalidInput {
        operation: "distributed training step",
        reason: format!("{error:#}"),
    }
}

/// A grid training step: the run's batch, this rank's group's sequences, its own steps.
fn grid_step(
    cluster: &Cluster,
    model: &mut Classifier<f32>,
    adam: &mut Adam<f32>,
    scan: &dyn LinearScan<f32>,
    task: &SyntheticTask,
    seed: u64,
    n_batch: usize,
) -> Result<TrainStats, ModelError> {
    let grid = GridParallel::new(&cluster.world, cluster.sequence_ranks.get(), scan)
        .map_err(|error| failed_step(error.into()))?;
    let (shape, rank) = (grid.shape(), cluster.data.rank());
    let (steps, sequences) = (
        shape.step_share(task.seq_len(), rank),
        shape.batch_share(n_batch, rank),
    );
    let key = (seed, adam.steps());
    let (labels, input) =
        draw_part(task, model.config(), key, n_batch, steps, sequences).map_err(failed_step)?;
    grid.train_step(model, adam, ModelInput::OneHot(&input), &labels)
        .map_err(|error| match error {
            GridError::Data(DataParallelError::Optimizer(error)) => error,
            GridError::Data(other) => failed_step(describe(other)),
            other => failed_step(other.into()),
        })
}

/// Whether the run splits its sequences over the processes (sequence and grid runs), so
/// its evaluations do too ([`evaluate_split`]).
pub fn splits_sequences() -> bool {
    with_cluster(|cluster| {
        cluster.is_some_and(|c| matches!(c.mode.get(), Some(Mode::Sequence | Mode::Grid)))
    })
}

/// The number of correct labels among `size` fresh sequences
/// (`task.chunks_for_step(seed, key, size, ·)`), evaluated with the run's split: each
/// process draws the sequences chunk by chunk and keeps only its share of the steps
/// (`⌈T/S⌉`), and its data group's share of the sequences in a grid; the sequences pass
/// in groups that fit the training step's memory budget. Before each group every process
/// calls `stop` with the sequences done so far (it must be collective, and agree); `None`
/// when it asked to stop. Collective; an error is every process's error.
pub fn evaluate_split(
    model: &mut Classifier<f32>,
    scan: &dyn LinearScan<f32>,
    task: &SyntheticTask,
    (seed, key): (u64, u64),
    size: usize,
    stop: &mut dyn FnMut(usize) -> bool,
) -> Result<Option<usize>> {
    with_cluster(|cluster| {
        let cluster = cluster.context("a split evaluation outside a distributed run")?;
        let result = evaluate_on_grid(cluster, model, scan, task, (seed, key), size, stop);
        cluster.agreed_failure.set(result.is_err());
        result
    })
}

fn evaluate_on_grid(
    cluster: &Cluster,
    model: &mut Classifier<f32>,
    scan: &dyn LinearScan<f32>,
    task: &SyntheticTask,
    (seed, key): (u64, u64),
    size: usize,
    stop: &mut dyn FnMut(usize) -> bool,
) -> Result<Option<usize>> {
    let grid = GridParallel::new(&cluster.world, cluster.sequence_ranks.get(), scan)?;
    let (shape, rank) = (grid.shape(), cluster.data.rank());
    let steps = shape.step_share(task.seq_len(), rank);
    let config = *model.config();
    let (labels, input) = draw_part(task, &config, (seed, key), size, steps, 0..size)?;
    // From the longest share of steps, `⌈T/S⌉`, so that every process makes the same
    // number of passes (each pass is collective).
    let longest = task.seq_len().div_ceil(shape.sequence_ranks());
    let per_group = eval_batch_within(&config, longest.max(1), size)?;
    let per_pass = per_group
        .saturating_mul(shape.data_groups())
        .min(size)
        .max(1);
    let mut correct = 0;
    for first in (0..size).step_by(per_pass) {
        if stop(first) {
            return Ok(None);
        }
        let pass = first..(first + per_pass).min(size);
        let share = share_of_batch(
            pass.len(),
            shape.position(rank).data_group,
            shape.data_groups(),
        );
        let columns = pass.start + share.start..pass.start + share.end;
        let all_steps = 0..input.dim().0;
        let part = OneHotSequence::new(
            part_of(input.index(), all_steps.clone(), columns.clone()).to_owned(),
            part_of(input.value(), all_steps, columns.clone()).to_owned(),
            task.dim(),
        )?;
        let labels = &labels[columns];
        let stats = grid
            .evaluate(model, ModelInput::OneHot(&part), labels)
            .map_err(|error| match error {
                GridError::Data(other) => describe(other),
                other => other.into(),
            })?;
        correct += stats.n_correct;
    }
    Ok(Some(correct))
}

/// Steps `steps` of sequences `columns` of the `n_batch` sequences that
/// `task.chunks_for_step(seed, key, n_batch, ·)` draws (the sequences of
/// `task.batch_for_step(seed, key, n_batch)`), with their labels: drawn chunk by chunk,
/// keeping only this part, so a process holds `|steps| × |columns|` of them, never `T × B`.
fn draw_part(
    task: &SyntheticTask,
    config: &ModelConfig,
    (seed, key): (u64, u64),
    n_batch: usize,
    steps: Range<usize>,
    columns: Range<usize>,
) -> Result<(Vec<usize>, OneHotSequence<f32>)> {
    let chunk_len = eval_chunk_len(config, task.seq_len(), n_batch)?;
    let (labels, chunks) = task.chunks_for_step::<f32>(seed, key, n_batch, chunk_len)?;
    let mut index = Array2::<u32>::zeros((steps.len(), columns.len()));
    let mut value = Array2::<f32>::zeros((steps.len(), columns.len()));
    let mut start = 0;
    for chunk in chunks {
        let chunk = chunk?;
        let end = start + chunk.dim().0;
        let (from, to) = (start.max(steps.start), end.min(steps.end));
        if from < to {
            let mine = Slice::from(from - steps.start..to - steps.start);
            let theirs = from - start..to - start;
            index.slice_axis_mut(Axis(0), mine).assign(&part_of(
                chunk.index(),
                theirs.clone(),
                columns.clone(),
            ));
            value.slice_axis_mut(Axis(0), mine).assign(&part_of(
                chunk.value(),
                theirs,
                columns.clone(),
            ));
        }
        start = end;
    }
    let input = OneHotSequence::new(index, value, task.dim())?;
    Ok((labels[columns].to_vec(), input))
}

/// Rows `rows` and columns `columns` of `array`.
fn part_of<T>(
    array: ArrayView2<'_, T>,
    rows: Range<usize>,
    columns: Range<usize>,
) -> ArrayView2<'_, T> {
    array
        .slice_axis_move(Axis(0), Slice::from(rows))
        .slice_axis_move(Axis(1), Slice::from(columns))
}
