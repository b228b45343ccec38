//! The distributed scan: local reduction, exclusive scan of chunk maps, local rescan.

use mpi::collective::{SystemOperation, UserOperation};
use mpi::datatype::{DynBuffer, DynBufferMut, Equivalence, MutView, UserDatatype, View};
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::*;
use mpi::Count;
use ndarray::{Array1, ArrayView1, ArrayViewMut2, Axis};
use scan_core::{
    BackwardInputs, BackwardOutputs, BackwardProblem, ChunkMap, Direction, Element, ForwardInputs,
    ForwardProblem, LinearScan,
};

use crate::DistributedError;

/// An element type that MPI can send: `f32` or `f64`.
pub trait MpiElement: Element + Equivalence {}
impl MpiElement for f32 {}
impl MpiElement for f64 {}

/// A linear scan over a sequence split over time across the ranks of a communicator.
///
/// Rank `r` holds the `r`-th consecutive chunk of time steps (`T_r ≥ 0` rows, the same
/// `F` features on every rank); for [`Direction::Reverse`] the processing order runs from
/// the last rank to the first. Each call is collective: every rank of the communicator
/// calls it with its own chunk. Communication per call: one exclusive scan of `F` affine
/// maps (2·F elements per rank), plus two small agreements on the arguments.
///
/// Results equal the local backend run on the whole sequence up to rounding. Where a
/// carry between ranks is not finite, the ranks fall back to passing the state along the
/// chain one rank after the other, which gives the serial recurrence's IEEE result.
pub struct DistributedScan<B> {
    in_rank_order: SimpleCommunicator,
    in_reverse_rank_order: SimpleCommunicator,
    local: B,
}

impl<B> DistributedScan<B> {
    /// Builds the scan over the ranks of `communicator`, each rank running `local` on its
    /// chunk. Collective: every rank must call it.
    pub fn new<C: Communicator>(communicator: &C, local: B) -> Self {
        let in_rank_order = communicator.duplicate();
        let reversed_key = communicator.size() - 1 - communicator.rank();
        let in_reverse_rank_order = communicator
            .split_by_color_with_key(Color::with_value(0), reversed_key)
            // A defined color puts every rank into the new communicator.
            .unwrap_or_else(|| communicator.duplicate());
        Self {
            in_rank_order,
            in_reverse_rank_order,
            local,
        }
    }

    /// The communicator whose rank order is the processing order of `direction`.
    fn chain(&self, direction: Direction) -> &SimpleCommunicator {
        match direction {
            Direction::Forward => &self.in_rank_order,
            Direction::Reverse => &self.in_reverse_rank_order,
        }
    }

    /// The local backend.
    pub fn local(&self) -> &B {
        &self.local
    }

    /// Runs the forward recurrence over the whole split sequence, writing this rank's
    /// states into `state`, and returns the state that entered this rank's chunk (what
    /// [`DistributedScan::backward_into`] needs as `initial`).
    ///
    /// `inputs.initial` (h0) may only be passed on the first rank in processing order.
    pub fn forward_into<E: MpiElement>(
        &self,
        inputs: ForwardInputs<'_, E>,
        mut state: ArrayViewMut2<'_, E>,
    ) -> Result<Array1<E>, DistributedError>
    where
        B: LinearScan<E>,
    {
        let chain = self.chain(inputs.direction);
        let is_first = chain.rank() == 0;
        let checked = ForwardProblem::new(inputs.clone(), state.view_mut())
            .map(drop)
            .map_err(DistributedError::from)
            .and_then(|()| match inputs.initial {
                Some(_) if !is_first => Err(misplaced("initial", "first", &self.in_rank_order)),
                _ => Ok(()),
            });
        let n_features = agree(chain, checked, inputs.decay.ncols())?;

        // The last rank's map reaches no one: skip its reduction pass.
        let mut map = if is_last_in(chain) {
            ChunkMap::identity(n_features)?
        } else {
            self.local
                .forward_map(inputs.decay, inputs.impulse, inputs.direction)?
        };
        let entering = carry_in(chain, &mut map, inputs.initial, n_features);
        let run_local = |entering: &Array1<E>, state: &mut ArrayViewMut2<'_, E>| {
            let local_inputs = ForwardInputs {
                decay: inputs.decay.view(),
                impulse: inputs.impulse.view(),
                initial: Some(entering.view()),
                direction: inputs.direction,
            };
            self.local.forward_into(local_inputs, state.view_mut())?;
            let leaving = match last_row_index(state.nrows(), inputs.direction) {
                Some(t) => state.index_axis(Axis(0), t).to_owned(),
                None => entering.clone(),
            };
            Ok::<_, DistributedError>(leaving)
        };
        if all_finite(chain, &entering) {
            run_local(&entering, &mut state)?;
            Ok(entering)
        } else {
            relay(chain, entering, |entering| run_local(entering, &mut state))
        }
    }

    /// Runs the backward pass over the whole split sequence, writing this rank's gradients.
    ///
    /// `inputs.initial` is the state that entered this rank's chunk (the value
    /// [`DistributedScan::forward_into`] returned; h0 or `None` on the first rank);
    /// `inputs.grad_last` may only be passed on the last rank in processing order.
    /// `outputs.grad_initial` receives the gradient on the state entering this rank's chunk.
    pub fn backward_into<E: MpiElement>(
        &self,
        inputs: BackwardInputs<'_, E>,
        mut outputs: BackwardOutputs<'_, E>,
    ) -> Result<(), DistributedError>
    where
        B: LinearScan<E>,
    {
        // The gradient flows against the processing order.
        let chain = self.chain(inputs.direction.flip());
        let is_last = chain.rank() == 0;
        let checked = BackwardProblem::new(inputs.clone(), reborrow(&mut outputs))
            .map(drop)
            .map_err(DistributedError::from)
            .and_then(|()| match inputs.grad_last {
                Some(_) if !is_last => Err(misplaced("grad_last", "last", &self.in_rank_order)),
                _ => Ok(()),
            });
        let n_features = agree(chain, checked, inputs.decay.ncols())?;

        let mut map = if is_last_in(chain) {
            ChunkMap::identity(n_features)?
        } else {
            self.local
                .backward_map(inputs.decay, inputs.grad_state, inputs.direction)?
        };
        let grad_leaving = carry_in(chain, &mut map, inputs.grad_last, n_features);
        let run_local = |grad_last: &Array1<E>, outputs: &mut BackwardOutputs<'_, E>| {
            let mut grad_initial = Array1::zeros(n_features);
            self.local.backward_into(
                BackwardInputs {
                    decay: inputs.decay.view(),
                    state: inputs.state.view(),
                    initial: inputs.initial.as_ref().map(|h0| h0.view()),
                    grad_state: inputs.grad_state.view(),
                    grad_last: Some(grad_last.view()),
                    direction: inputs.direction,
                },
                BackwardOutputs {
                    grad_initial: Some(grad_initial.view_mut()),
                    ..reborrow(outputs)
                },
            )?;
            if let Some(target) = outputs.grad_initial.as_mut() {
                target.assign(&grad_initial);
            }
            Ok::<_, DistributedError>(grad_initial)
        };
        if all_finite(chain, &grad_leaving) {
            run_local(&grad_leaving, &mut outputs)?;
        } else {
            relay(chain, grad_leaving, |grad_last| {
                run_local(grad_last, &mut outputs)
            })?;
        }
        Ok(())
    }
}

fn reborrow<'s, E>(outputs: &'s mut BackwardOutputs<'_, E>) -> BackwardOutputs<'s, E> {
    BackwardOutputs {
        grad_decay: outputs.grad_decay.view_mut(),
        grad_impulse: outputs.grad_impulse.view_mut(),
        grad_initial: outputs.grad_initial.as_mut().map(|g| g.view_mut()),
    }
}

fn misplaced(
    argument: &'static str,
    owner: &'static str,
    communicator: &SimpleCommunicator,
) -> DistributedError {
    DistributedError::MisplacedArgument {
        argument,
        owner,
        rank: communicator.rank(),
    }
}

/// Whether this rank is the last of the chain (its chunk map is never needed).
fn is_last_in(chain: &SimpleCommunicator) -> bool {
    chain.rank() + 1 == chain.size()
}

/// The index of the last processed row, if any.
fn last_row_index(n_steps: usize, direction: Direction) -> Option<usize> {
    match (n_steps, direction) {
        (0, _) => None,
        (_, Direction::Forward) => Some(n_steps - 1),
        (_, Direction::Reverse) => Some(0),
    }
}

/// Every rank learns whether every rank's arguments are valid and that all agree on F,
/// before any rank enters an exchange that a failed rank would skip.
fn agree(
    chain: &SimpleCommunicator,
    checked: Result<(), DistributedError>,
    n_features: usize,
) -> Result<usize, DistributedError> {
    let features = i64::try_from(n_features).unwrap_or(i64::MAX);
    let failed = i64::from(checked.is_err());
    // Maxima of (failures, F, −F): F's maximum and minimum in one reduction.
    let local = [failed, features, -features];
    let mut global = [0_i64; 3];
    chain.all_reduce_into(&local[..], &mut global[..], SystemOperation::max());
    let other_failures = chain_failures(chain, failed);
    checked?;
    if other_failures > 0 {
        return Err(DistributedError::OtherRankFailed {
            count: other_failures,
        });
    }
    let (max, min) = (global[1], -global[2]);
    if max != min {
        return Err(DistributedError::FeatureCountMismatch {
            min: usize::try_from(min).unwrap_or(0),
            max: usize::try_from(max).unwrap_or(usize::MAX),
        });
    }
    // Two elements per feature travel as one MPI pair, counted in a C int.
    if n_features > Count::MAX as usize {
        return Err(DistributedError::TooLarge {
            what: "n_features",
            value: n_features,
            max: i64::from(Count::MAX),
        });
    }
    Ok(n_features)
}

/// How many ranks other than this one failed.
fn chain_failures(chain: &SimpleCommunicator, failed: i64) -> usize {
    let mut total = 0_i64;
    chain.all_reduce_into(&failed, &mut total, SystemOperation::sum());
    usize::try_from(total - failed).unwrap_or(0)
}

/// Whether `values` are finite on every rank.
fn all_finite<E: Element>(chain: &SimpleCommunicator, values: &Array1<E>) -> bool {
    let local = i32::from(values.iter().all(|v| v.is_finite()));
    let mut global = 0_i32;
    chain.all_reduce_into(&local, &mut global, SystemOperation::min());
    global == 1
}

/// The value entering this rank's chunk: `seed` (or zeros) on the first rank of the chain;
/// elsewhere the composition of all earlier ranks' maps applied to the seed. The first
/// rank folds its seed into its map, so the composed map's impulse is the value itself.
fn carry_in<E: MpiElement>(
    chain: &SimpleCommunicator,
    map: &mut ChunkMap<E>,
    seed: Option<ArrayView1<'_, E>>,
    n_features: usize,
) -> Array1<E> {
    let is_first = chain.rank() == 0;
    let entering = match (is_first, seed) {
        (true, Some(seed)) => seed.to_owned(),
        _ => Array1::zeros(n_features),
    };
    if is_first {
        map.impulse = &map.decay * &entering + &map.impulse;
        map.decay.fill(E::zero());
    }
    if chain.size() == 1 {
        return entering;
    }
    let carried = exclusive_scan(chain, map);
    if is_first {
        entering
    } else {
        carried
    }
}

/// The exclusive scan of the ranks' maps in chain order; returns the composed impulse
/// (undefined, returned as received, on the chain's first rank).
fn exclusive_scan<E: MpiElement>(chain: &SimpleCommunicator, map: &ChunkMap<E>) -> Array1<E> {
    let n_features = map.decay.len();
    let mut send = Vec::with_capacity(2 * n_features);
    for (&decay, &impulse) in map.decay.iter().zip(&map.impulse) {
        send.push(decay);
        send.push(impulse);
    }
    let mut received = vec![E::zero(); 2 * n_features];
    let pair = UserDatatype::contiguous(2, &E::equivalent_datatype());
    let compose = UserOperation::associative(compose_pairs::<E>);
    // `agree` checked that n_features fits a Count.
    let count = n_features as Count;
    // SAFETY: `pair` is two contiguous `E`s without padding, and each buffer holds exactly
    // `count` such pairs (2·n_features elements), so the views map only memory they borrow.
    let send_view = unsafe { View::with_count_and_datatype(&send[..], count, &pair) };
    {
        let mut received_view =
            // SAFETY: as above, for the receive buffer of the same length.
            unsafe { MutView::with_count_and_datatype(&mut received[..], count, &pair) };
        chain.exclusive_scan_into(&send_view, &mut received_view, &compose);
    }
    Array1::from_iter(received.chunks_exact(2).map(|pair| pair[1]))
}

/// MPI's reduction callback: `later ← earlier then later`, for (decay, impulse) pairs.
fn compose_pairs<E: MpiElement>(earlier: DynBuffer<'_>, mut later: DynBufferMut<'_>) {
    let n_pairs = earlier.len().min(later.len());
    // SAFETY: this operation is only used by `exclusive_scan`, whose buffers hold pairs of
    // `E` described by `contiguous(2, E)`; MPI passes `len` whole pairs of that datatype,
    // aligned for `E`, in two distinct buffers.
    let (earlier, later) = unsafe {
        (
            std::slice::from_raw_parts(earlier.as_ptr().cast::<E>(), 2 * n_pairs),
            std::slice::from_raw_parts_mut(later.as_mut_ptr().cast::<E>(), 2 * n_pairs),
        )
    };
    for (first, second) in earlier.chunks_exact(2).zip(later.chunks_exact_mut(2)) {
        let (decay, impulse) = (second[0], second[1]);
        second[0] = first[0] * decay;
        second[1] = decay * first[1] + impulse;
    }
}

/// The exact fallback: each rank waits for the value leaving the rank before it in the
/// chain, runs its chunk from it, and passes on what leaves its own chunk.
fn relay<E: MpiElement>(
    chain: &SimpleCommunicator,
    mut entering: Array1<E>,
    run: impl FnOnce(&Array1<E>) -> Result<Array1<E>, DistributedError>,
) -> Result<Array1<E>, DistributedError> {
    let position = chain.rank();
    if position > 0 {
        let mut buffer = vec![E::zero(); entering.len()];
        chain
            .process_at_rank(position - 1)
            .receive_into(&mut buffer[..]);
        entering = Array1::from_vec(buffer);
    }
    let leaving = run(&entering);
    if position + 1 < chain.size() {
        // Pass something on even after a local failure, so no later rank waits forever.
        let message = leaving
            .as_ref()
            .map(|leaving| leaving.to_vec())
            .unwrap_or_else(|_| vec![E::nan(); entering.len()]);
        chain.process_at_rank(position + 1).send(&message[..]);
    }
    leaving.map(|_| entering)
}
