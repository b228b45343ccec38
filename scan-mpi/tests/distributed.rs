//! The distributed scan against the serial reference on the whole sequence. Run under
//! `mpirun -n N` (any N ≥ 1): every rank draws the same random cases from a shared seed,
//! takes its chunk, and checks its part of the result; rank 0 prints the totals.

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scan_core::{BackwardInputs, BackwardOutputs, Direction, ForwardInputs, LinearScan, Reference};
use scan_mpi::{DistributedError, DistributedScan, MpiElement};

const CASES_PER_TYPE: u64 = 60;

/// One random problem over the whole sequence, and where it is cut between ranks.
struct Case<E> {
    decay: Array2<E>,
    impulse: Array2<E>,
    grad_state: Array2<E>,
    initial: Option<Array1<E>>,
    grad_last: Option<Array1<E>>,
    direction: Direction,
    /// Rank r holds rows `cuts[r]..cuts[r + 1]`.
    cuts: Vec<usize>,
}

fn decay_value(rng: &mut ChaCha8Rng) -> f64 {
    match rng.gen_range(0..6) {
        0 => 0.0,
        1 => 1.0,
        2 => rng.gen_range(0.999..=1.0),
        3 => rng.gen_range(-1.0..=1.0),
        _ => rng.gen_range(0.0..1.0),
    }
}

fn random_case<E: MpiElement>(seed: u64, n_ranks: usize) -> Case<E> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n_steps = match rng.gen_range(0..4) {
        0 => rng.gen_range(0..=2),
        _ => rng.gen_range(0..=47),
    };
    let n_features = rng.gen_range(1..=7);
    let mut draw = |f: &mut dyn FnMut(&mut ChaCha8Rng) -> f64| {
        Array2::from_shape_simple_fn((n_steps, n_features), || E::from_f64(f(&mut rng)))
    };
    let decay = draw(&mut decay_value);
    let impulse = draw(&mut |rng| rng.gen_range(-2.0..2.0));
    let grad_state = draw(&mut |rng| rng.gen_range(-1.0..1.0));
    let initial = rng.gen_bool(0.5).then(|| {
        Array1::from_shape_simple_fn(n_features, || E::from_f64(rng.gen_range(-3.0..3.0)))
    });
    let grad_last = rng.gen_bool(0.5).then(|| {
        Array1::from_shape_simple_fn(n_features, || E::from_f64(rng.gen_range(-3.0..3.0)))
    });
    let direction = if rng.gen_bool(0.5) {
        Direction::Forward
    } else {
        Direction::Reverse
    };
    // Uneven cuts, empty chunks included.
    let mut cuts: Vec<usize> = (1..n_ranks).map(|_| rng.gen_range(0..=n_steps)).collect();
    cuts.sort_unstable();
    cuts.insert(0, 0);
    cuts.push(n_steps);
    Case {
        decay,
        impulse,
        grad_state,
        initial,
        grad_last,
        direction,
        cuts,
    }
}

/// A +∞ impulse followed by decays of 1e-30: products of decays underflow to 0 across
/// ranks, where the serial loop keeps ∞.
fn infinity_case<E: MpiElement>(n_ranks: usize) -> Case<E> {
    let n_steps = 8 * n_ranks;
    let decay = Array2::from_elem((n_steps, 2), E::from_f64(1e-30));
    let mut impulse = Array2::from_elem((n_steps, 2), E::one());
    impulse[[0, 0]] = E::infinity();
    impulse[[n_steps / 2, 1]] = E::neg_infinity();
    let cuts = (0..=n_ranks).map(|r| r * 8).collect();
    Case {
        grad_state: impulse.clone(),
        decay,
        impulse,
        initial: None,
        grad_last: None,
        direction: Direction::Forward,
        cuts,
    }
}

/// `got` equals `want` up to rounding relative to the magnitude of `want`; non-finite
/// values must match exactly (same infinity, or both NaN).
fn close<E: MpiElement>(got: ArrayView2<'_, E>, want: ArrayView2<'_, E>) -> bool {
    let tolerance = if E::NAME == "f32" { 2e-4 } else { 1e-11 };
    let scale = 1.0
        + want
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0_f64, |m, v| m.max(v.as_f64().abs()));
    got.dim() == want.dim()
        && got.iter().zip(want.iter()).all(|(&g, &w)| {
            if w.is_finite() {
                (g.as_f64() - w.as_f64()).abs() <= tolerance * scale
            } else {
                (g.is_nan() && w.is_nan()) || g == w
            }
        })
}

fn close_1d<E: MpiElement>(got: ArrayView1<'_, E>, want: ArrayView1<'_, E>) -> bool {
    close(
        got.insert_axis(ndarray::Axis(0)),
        want.insert_axis(ndarray::Axis(0)),
    )
}

/// Runs one case on this rank; `Err` names what differs.
fn check_case<E: MpiElement>(world: &SimpleCommunicator, case: &Case<E>) -> Result<(), String> {
    let rank = world.rank() as usize;
    let n_ranks = world.size() as usize;
    let (first_rank, last_rank) = match case.direction {
        Direction::Forward => (0, n_ranks - 1),
        Direction::Reverse => (n_ranks - 1, 0),
    };
    let rows = s![case.cuts[rank]..case.cuts[rank + 1], ..];
    let whole = Reference
        .forward(ForwardInputs {
            decay: case.decay.view(),
            impulse: case.impulse.view(),
            initial: case.initial.as_ref().map(|h0| h0.view()),
            direction: case.direction,
        })
        .map_err(|e| e.to_string())?;
    let whole_grads = Reference
        .backward(BackwardInputs {
            decay: case.decay.view(),
            state: whole.view(),
            initial: case.initial.as_ref().map(|h0| h0.view()),
            grad_state: case.grad_state.view(),
            grad_last: case.grad_last.as_ref().map(|g| g.view()),
            direction: case.direction,
        })
        .map_err(|e| e.to_string())?;

    let scan = DistributedScan::new(world, scan_cpu::Parallel::default());
    let mut state = Array2::zeros(case.decay.slice(rows).dim());
    let entering = scan
        .forward_into(
            ForwardInputs {
                decay: case.decay.slice(rows),
                impulse: case.impulse.slice(rows),
                initial: case
                    .initial
                    .as_ref()
                    .filter(|_| rank == first_rank)
                    .map(|h0| h0.view()),
                direction: case.direction,
            },
            state.view_mut(),
        )
        .map_err(|e| e.to_string())?;
    if !close(state.view(), whole.slice(rows)) {
        return Err(format!("forward states differ on rank {rank}"));
    }

    let n_features = case.decay.ncols();
    let mut grad_decay = Array2::zeros(state.dim());
    let mut grad_impulse = Array2::zeros(state.dim());
    let mut grad_initial = Array1::zeros(n_features);
    scan.backward_into(
        BackwardInputs {
            decay: case.decay.slice(rows),
            state: state.view(),
            initial: Some(entering.view()),
            grad_state: case.grad_state.slice(rows),
            grad_last: case
                .grad_last
                .as_ref()
                .filter(|_| rank == last_rank)
                .map(|g| g.view()),
            direction: case.direction,
        },
        BackwardOutputs {
            grad_decay: grad_decay.view_mut(),
            grad_impulse: grad_impulse.view_mut(),
            grad_initial: Some(grad_initial.view_mut()),
        },
    )
    .map_err(|e| e.to_string())?;
    if !close(grad_decay.view(), whole_grads.decay.slice(rows)) {
        return Err(format!("∂L/∂a differs on rank {rank}"));
    }
    if !close(grad_impulse.view(), whole_grads.impulse.slice(rows)) {
        return Err(format!("∂L/∂x differs on rank {rank}"));
    }
    if rank == first_rank && !close_1d(grad_initial.view(), whole_grads.initial.view()) {
        return Err(format!("∂L/∂h0 differs on rank {rank}"));
    }
    Ok(())
}

/// Wrong arguments on one rank make every rank return an error, and nobody hangs.
fn check_errors(world: &SimpleCommunicator) -> Result<(), String> {
    let rank = world.rank();
    let last = world.size() - 1;
    let scan = DistributedScan::new(world, scan_cpu::Parallel::default());
    let decay = Array2::<f64>::ones((3, 2));
    let wrong = Array2::<f64>::ones((3, if rank == last { 5 } else { 2 }));
    let mut state = Array2::zeros((3, 2));
    let result = scan.forward_into(
        ForwardInputs {
            decay: decay.view(),
            impulse: wrong.view(),
            initial: None,
            direction: Direction::Forward,
        },
        state.view_mut(),
    );
    match (&result, rank == last) {
        (Err(DistributedError::Scan(_)), true) => {}
        (Err(DistributedError::OtherRankFailed { count: 1 }), false) => {}
        _ => return Err(format!("shape error: rank {rank} got {result:?}")),
    }
    // An initial state on the last rank of a forward scan of more than one rank.
    let h0 = Array1::<f64>::ones(2);
    let result = scan.forward_into(
        ForwardInputs {
            decay: decay.view(),
            impulse: decay.view(),
            initial: (rank == last).then(|| h0.view()),
            direction: Direction::Forward,
        },
        state.view_mut(),
    );
    let ok = match (&result, last == 0) {
        (Ok(_), true) => true,
        (Err(DistributedError::MisplacedArgument { .. }), false) => rank == last,
        (Err(DistributedError::OtherRankFailed { .. }), false) => rank != last,
        _ => false,
    };
    if !ok {
        return Err(format!("misplaced h0: rank {rank} got {result:?}"));
    }
    // Ranks that disagree on F.
    let features = if rank == 0 { 3 } else { 2 };
    let decay = Array2::<f32>::ones((2, features));
    let mut state = Array2::zeros((2, features));
    let result = scan.forward_into(
        ForwardInputs {
            decay: decay.view(),
            impulse: decay.view(),
            initial: None,
            direction: Direction::Reverse,
        },
        state.view_mut(),
    );
    match (&result, last == 0) {
        (Ok(_), true) | (Err(DistributedError::FeatureCountMismatch { min: 2, max: 3 }), false) => {
            Ok(())
        }
        _ => Err(format!("feature mismatch: rank {rank} got {result:?}")),
    }
}

fn main() {
    let Some(universe) = mpi::initialize() else {
        eprintln!("MPI could not be initialized");
        std::process::exit(2);
    };
    let world = universe.world();
    let n_ranks = world.size() as usize;
    let mut outcomes: Vec<(String, Result<(), String>)> = Vec::new();
    for seed in 0..CASES_PER_TYPE {
        outcomes.push((
            format!("f64 case {seed}"),
            check_case(&world, &random_case::<f64>(seed, n_ranks)),
        ));
        outcomes.push((
            format!("f32 case {seed}"),
            check_case(&world, &random_case::<f32>(1000 + seed, n_ranks)),
        ));
    }
    outcomes.push((
        "f32 infinity".into(),
        check_case(&world, &infinity_case::<f32>(n_ranks)),
    ));
    outcomes.push((
        "f64 infinity".into(),
        check_case(&world, &infinity_case::<f64>(n_ranks)),
    ));
    outcomes.push(("errors agree".into(), check_errors(&world)));

    let local_failed = outcomes.iter().filter(|(_, r)| r.is_err()).count() as u64;
    for (name, outcome) in &outcomes {
        if let Err(why) = outcome {
            eprintln!("FAILED {name}: {why}");
        }
    }
    let mut failed_anywhere = 0_u64;
    world.all_reduce_into(&local_failed, &mut failed_anywhere, SystemOperation::sum());
    let mut failing_tests = 0_u64;
    let local_flags: Vec<u64> = outcomes
        .iter()
        .map(|(_, r)| u64::from(r.is_err()))
        .collect();
    let mut global_flags = vec![0_u64; local_flags.len()];
    world.all_reduce_into(
        &local_flags[..],
        &mut global_flags[..],
        SystemOperation::max(),
    );
    failing_tests += global_flags.iter().sum::<u64>();
    if world.rank() == 0 {
        let total = outcomes.len() as u64;
        println!("distributed scan on {n_ranks} rank(s): {failed_anywhere} rank-level failures");
        println!("{} passed, {failing_tests} failed", total - failing_tests);
    }
    if failing_tests > 0 {
        std::process::exit(1);
    }
}
