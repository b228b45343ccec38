//! Chunk maps (`LinearScan::forward_map`, `backward_map`) on the engine's reduction
//! kernels: what a sequence split over processes (scan-mpi) computes on every rank before
//! the exchange, vectorized across features (or inside registers for narrow problems) and
//! split across threads, instead of scan-core's scalar serial loop.

use ndarray::{Array1, ArrayView2, Axis};
use scan_core::{ChunkMap, Direction, Element, ScanError};

use crate::engine::Engine;
use crate::kernels::{flush_subnormal, Job};
use crate::scratch::with_scratch;
use crate::{downwards, seq};

/// Reduces `job` after the map `(product, acc)` and returns the map.
fn reduce<E: Element>(
    engine: Engine,
    job: Option<Job<E>>,
    mut product: Vec<E>,
    mut acc: Vec<E>,
) -> ChunkMap<E> {
    if let Some(job) = job {
        with_scratch::<E, _>(|scratch| {
            // SAFETY: the job's sequences come from views of `n_rows × width` elements that
            // outlive the call (built by the callers below from shape-checked views); a
            // reduction writes through none of them (its `out` is never dereferenced), and
            // `product` and `acc` hold `width` values.
            unsafe { engine.reduce(&job, &mut product, &mut acc, &mut scratch.algorithm1) }
        });
    }
    ChunkMap {
        decay: Array1::from_vec(product),
        impulse: Array1::from_vec(acc),
    }
}

/// The identity map's `width` ones and `width` zeros, allocated fallibly (a broadcast
/// view can be wider than memory holds).
fn identity_parts<E: Element>(width: usize) -> Result<(Vec<E>, Vec<E>), ScanError> {
    let ChunkMap { decay, impulse } = ChunkMap::identity(width)?;
    Ok((
        decay.into_raw_vec_and_offset().0,
        impulse.into_raw_vec_and_offset().0,
    ))
}

/// The forward chunk map (see `scan_core::forward_chunk_map`).
pub(crate) fn forward_map<E: Element>(
    engine: Engine,
    mut decay: ArrayView2<'_, E>,
    mut impulse: ArrayView2<'_, E>,
    direction: Direction,
) -> Result<ChunkMap<E>, ScanError> {
    ChunkMap::check_inputs("forward_map", "impulse", &decay, &impulse)?;
    let (n, width) = decay.dim();
    if direction == Direction::Reverse {
        decay.invert_axis(Axis(0));
        impulse.invert_axis(Axis(0));
    }
    let job = (n > 0).then(|| Job {
        n_rows: n,
        width,
        decay: seq(&decay),
        impulse: seq(&impulse),
        // Never written by a reduction; the impulses' layout keeps the layout checks true.
        out: seq(&impulse),
        fused: None,
        stream: false,
    });
    let (ones, zeros) = identity_parts(width)?;
    Ok(reduce(engine, job, ones, zeros))
}

/// The backward chunk map (see `scan_core::backward_chunk_map`). With steps numbered in
/// processing order, the gradient on the last state is `g = ∂L/∂h_{n−1}`, then
/// `g ← a_{t+1}·g + ∂L/∂h_t` for `t = n−2 … 0` (a reduction with decays shifted by one
/// step), and the map's impulse is `a_0·g`; its decay is the product of all decays.
pub(crate) fn backward_map<E: Element>(
    engine: Engine,
    mut decay: ArrayView2<'_, E>,
    mut grad_state: ArrayView2<'_, E>,
    direction: Direction,
) -> Result<ChunkMap<E>, ScanError> {
    ChunkMap::check_inputs("backward_map", "grad_state", &decay, &grad_state)?;
    let (n, width) = decay.dim();
    if n == 0 {
        return ChunkMap::identity(width);
    }
    if direction == Direction::Reverse {
        decay.invert_axis(Axis(0));
        grad_state.invert_axis(Axis(0));
    }
    let (ones, mut gradient) = identity_parts(width)?;
    for (g, &last) in gradient.iter_mut().zip(grad_state.row(n - 1)) {
        *g = last;
    }
    // Steps n−2 down to 0: decay a_{t+1}, gradient ∂L/∂h_t; the product a_{n−1} ⋯ a_1.
    let job = (n > 1).then(|| Job {
        n_rows: n - 1,
        width,
        decay: downwards(seq(&decay), n - 1),
        impulse: downwards(seq(&grad_state), n - 2),
        out: downwards(seq(&grad_state), n - 2),
        fused: None,
        stream: false,
    });
    let mut map = reduce(engine, job, ones, gradient);
    let rows = map.decay.iter_mut().zip(map.impulse.iter_mut());
    for ((product, gradient), &a) in rows.zip(decay.row(0)) {
        *gradient = a * *gradient;
        *product = flush_subnormal(*product * a);
    }
    Ok(map)
}
