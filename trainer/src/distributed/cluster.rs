//! The MPI side of [`super`]: the processes of one job, held for the run in a thread-local
//! (the training loop runs on the main thread; MPI handles are not `Send`).

use std::cell::{Cell, RefCell};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use rnn_mpi::{share_of_batch, DataParallel, DataParallelError, SequenceError, SequenceParallel};
use scan_core::LinearScan;
use surrogate_rnn::{Adam, Classifier, ModelError, ModelInput, SyntheticTask, TrainStats};

use super::{agree_local, local_step, rank_seed, Mode};
use crate::resume::{self, RunSettings, Session};
use crate::state::LoopState;
use crate::synthetic::{self, Outcome, SyntheticArgs};

/// The processes of the job, while a run is on.
struct Cluster {
    world: SimpleCommunicator,
    data: DataParallel,
    /// The run's mode, once its session is agreed (`None`: a one-process plain run).
    mode: Cell<Option<Mode>>,
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

/// Checks that the session fits this job's process count.
fn check_ranks(args: &SyntheticArgs, size: usize) -> Result<()> {
    match (args.distributed, args.ranks) {
        (None, _) if size > 1 => bail!(
            "this run is not distributed, but mpirun started {size} processes; resume it \
             without mpirun"
        ),
        (Some(_), Some(ranks)) if ranks != size => bail!(
            "this run was trained on {ranks} processes, this job has {size}; resume it with \
             `mpirun -n {ranks}` (every process draws its own data stream, so another count \
             would train on other data)"
        ),
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

/// Whether any process was asked to stop. Collective in a distributed run.
pub fn any_interrupted(interrupted: bool) -> bool {
    with_cluster(|cluster| match cluster {
        Some(c) if c.mode.get().is_some() => any(c, interrupted),
        _ => interrupted,
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
/// the run's stream (the same on every rank), this rank's share of its steps.
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
                let batch = task.batch_for_step::<f32>(rank_seed(seed, rank), adam.steps(), share);
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
                let batch = task.batch_for_step::<f32>(seed, adam.steps(), n_batch);
                let steps = share_of_batch(task.seq_len(), rank, size);
                let mine = batch.input.steps(steps.start, steps.len())?;
                let split = SequenceParallel::new(&cluster.world, scan);
                (split.train_step(model, adam, ModelInput::OneHot(&mine), &batch.labels)).map_err(
                    |error| match error {
                        SequenceError::Model(error) => error,
                        other => failed_step(other.into()),
                    },
                )
            }
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
