//! A CPU transcription of the parallel kernel, for testing its algorithm without a GPU.
//!
//! It follows `parallel_scan` in `kernels/linrec.cu` statement by statement: the same plan,
//! staging, scan-step indexing, per-thread reduction, Hillis-Steele block scan, windowed
//! look-back over the workspace arrays, epoch flags and tickets. Tiles run one after another
//! in ticket order, which is one schedule the GPU may produce; a flag that is not ready when
//! a tile reads it would be a deadlock on the GPU and panics here. The whole scan-core
//! conformance suite runs against it, so the index arithmetic, padding, directions, layouts,
//! h0/grad_last handling and the backward formulas are checked on every `cargo test`. What
//! it cannot check is the CUDA code itself (memory ordering, the compiler), which only a GPU
//! run of `tests/gpu.rs` can.

// Loops run over thread ids and index per-thread arrays, as the kernel does.
#![allow(clippy::needless_range_loop)]

use ndarray::Array1;
use scan_core::{
    copy_or_zero, BackwardProblem, Direction, Element, ForwardProblem, LinearScan, ScanError,
};

use crate::error::element_count;
use crate::plan::{plan_parallel, EpochState, ParallelPlan};
use crate::staging::{choose_layout, stage, unstage};
use crate::{ElementKind, BLOCK_THREADS};

/// The kernel arguments, with slices for device pointers.
struct Args<'a, E> {
    decay: &'a [E],
    impulse: &'a [E],
    state: &'a [E],
    carry_in: Option<&'a [E]>,
    initial_state: Option<&'a [E]>,
    n_steps: i64,
    n_features: i64,
    stride_t: i64,
    stride_f: i64,
    reverse: bool,
}

struct Outputs<'a, E> {
    out: &'a mut [E],
    grad_decay: &'a mut [E],
    grad_initial: Option<&'a mut [E]>,
}

/// The workspace, persisting across launches like the device's.
struct Workspace<E> {
    counter: u64,
    flags: Vec<u32>,
    carry_decay: Vec<E>,
    carry_impulse: Vec<E>,
    carry_state: Vec<E>,
    epochs: EpochState,
}

impl<'a, E: Element> Args<'a, E> {
    fn time_index(&self, j: i64) -> i64 {
        if self.reverse {
            self.n_steps - 1 - j
        } else {
            j
        }
    }

    fn element(&self, t: i64, f: i64) -> usize {
        (t * self.stride_t + f * self.stride_f) as usize
    }

    fn load_step(&self, backward: bool, j: i64, f: i64) -> (E, E) {
        let t = self.time_index(j);
        let x = self.impulse[self.element(t, f)];
        let a = if !backward {
            self.decay[self.element(t, f)]
        } else if j == 0 {
            E::one()
        } else {
            self.decay[self.element(self.time_index(j - 1), f)]
        };
        (a, x)
    }

    fn store_step(&self, backward: bool, j: i64, f: i64, v: E, outputs: &mut Outputs<'_, E>) {
        let t = self.time_index(j);
        outputs.out[self.element(t, f)] = v;
        if backward {
            let first_forward_step = j == self.n_steps - 1;
            let h_prev = if first_forward_step {
                self.initial_state.map_or(E::zero(), |h0| h0[f as usize])
            } else {
                self.state[self.element(self.time_index(j + 1), f)]
            };
            outputs.grad_decay[self.element(t, f)] = h_prev * v;
            if first_forward_step {
                if let Some(grad_initial) = outputs.grad_initial.as_deref_mut() {
                    grad_initial[f as usize] = self.decay[self.element(t, f)] * v;
                }
            }
        }
    }
}

fn fma<E: Element>(a: E, b: E, c: E) -> E {
    a.mul_add(b, c)
}

/// The kernel's `mul_decays`: a product of decays that is never an underflowed 0 when both
/// factors are nonzero (the smallest subnormal, with the product's sign, instead).
fn mul_decays<E: Element>(a: E, b: E) -> E {
    let product = a * b;
    if product == E::zero() && a != E::zero() && b != E::zero() {
        (E::min_positive_value() * E::epsilon()).copysign(product)
    } else {
        product
    }
}

/// One launch of the parallel kernel, blocks in ticket order.
fn launch<E: Element>(
    plan: &ParallelPlan,
    backward: bool,
    args: &Args<'_, E>,
    outputs: &mut Outputs<'_, E>,
    workspace: &mut Workspace<E>,
) {
    let steps = plan.steps_per_thread as usize;
    let block = BLOCK_THREADS as usize;
    let lanes = plan.feature_lanes as usize;
    let groups = plan.time_groups as usize;
    let n_feature_tiles = plan.n_feature_tiles as i64;
    let n_time_tiles = plan.n_time_tiles as i64;
    let (epoch, ticket_base) = workspace.epochs.next_launch();
    for _block in 0..plan.blocks() {
        let tile = (workspace.counter - ticket_base) as i64;
        workspace.counter += 1;
        let feature_tile = tile % n_feature_tiles;
        let time_tile = tile / n_feature_tiles;
        // Per-thread registers, indexed by tid.
        let mut a = vec![vec![E::one(); steps]; block];
        let mut x = vec![vec![E::zero(); steps]; block];
        let mut pair = vec![(E::one(), E::zero()); block];
        let lane_group = |tid: usize| {
            if plan.lanes_on_time {
                (tid / groups, tid % groups)
            } else {
                (tid % lanes, tid / lanes)
            }
        };
        for tid in 0..block {
            let (lane, group) = lane_group(tid);
            let f = feature_tile * lanes as i64 + lane as i64;
            let first_step = (time_tile * groups as i64 + group as i64) * steps as i64;
            for s in 0..steps {
                let j = first_step + s as i64;
                if f < args.n_features && j < args.n_steps {
                    (a[tid][s], x[tid][s]) = args.load_step(backward, j, f);
                }
            }
            let (mut pd, mut pi) = (E::one(), E::zero());
            for s in 0..steps {
                pi = fma(a[tid][s], pi, x[tid][s]);
                pd = mul_decays(pd, a[tid][s]);
            }
            pair[tid] = (pd, pi);
        }
        // Shared memory, indexed by slot = group * lanes + lane.
        let mut shared = vec![(E::one(), E::zero()); block];
        for tid in 0..block {
            let (lane, group) = lane_group(tid);
            shared[group * lanes + lane] = pair[tid];
        }
        let mut distance = 1;
        while distance < groups {
            let before = shared.clone();
            for tid in 0..block {
                let (lane, group) = lane_group(tid);
                if group >= distance {
                    let (ed, ei) = before[(group - distance) * lanes + lane];
                    let (pd, pi) = pair[tid];
                    pair[tid] = (mul_decays(ed, pd), fma(pd, ei, pi));
                    shared[group * lanes + lane] = pair[tid];
                }
            }
            distance *= 2;
        }
        let window = i64::from(plan.tiles_per_window);
        let window_first = (time_tile / window) * window;
        let window_last = time_tile % window == window - 1 || time_tile == n_time_tiles - 1;
        let has_successor = time_tile + 1 < n_time_tiles;
        let flag_of = |q: i64| (q * n_feature_tiles + feature_tile) as usize;
        if !window_last {
            for lane in 0..lanes {
                let f = feature_tile * lanes as i64 + lane as i64;
                if f < args.n_features {
                    let slot = (time_tile * args.n_features + f) as usize;
                    let (td, ti) = shared[(groups - 1) * lanes + lane];
                    workspace.carry_decay[slot] = td;
                    workspace.carry_impulse[slot] = ti;
                }
            }
            workspace.flags[tile as usize] = epoch;
        }
        for q in window_first..time_tile {
            assert_eq!(
                workspace.flags[flag_of(q)],
                epoch,
                "tile {tile} would wait forever on {q}"
            );
        }
        if window_first > 0 {
            assert_eq!(
                workspace.flags[flag_of(window_first - 1)],
                epoch,
                "tile {tile} would wait forever"
            );
        }
        let mut carry = vec![E::zero(); lanes];
        for (lane, carry) in carry.iter_mut().enumerate() {
            let f = feature_tile * lanes as i64 + lane as i64;
            if f >= args.n_features {
                continue;
            }
            let (mut wd, mut wi) = (E::one(), E::zero());
            for q in window_first..time_tile {
                let q_slot = (q * args.n_features + f) as usize;
                wi = fma(
                    workspace.carry_decay[q_slot],
                    wi,
                    workspace.carry_impulse[q_slot],
                );
                wd = mul_decays(wd, workspace.carry_decay[q_slot]);
            }
            let window_in = if window_first > 0 {
                workspace.carry_state[((window_first - 1) * args.n_features + f) as usize]
            } else {
                args.carry_in.map_or(E::zero(), |c| c[f as usize])
            };
            *carry = fma(wd, window_in, wi);
            if window_last && has_successor {
                let (td, ti) = shared[(groups - 1) * lanes + lane];
                workspace.carry_state[(time_tile * args.n_features + f) as usize] =
                    fma(td, *carry, ti);
            }
        }
        if window_last && has_successor {
            workspace.flags[tile as usize] = epoch;
        }
        for tid in 0..block {
            let (lane, group) = lane_group(tid);
            let (bd, bi) = if group > 0 {
                shared[(group - 1) * lanes + lane]
            } else {
                (E::one(), E::zero())
            };
            let f = feature_tile * lanes as i64 + lane as i64;
            let first_step = (time_tile * groups as i64 + group as i64) * steps as i64;
            let mut h = fma(bd, carry[lane], bi);
            for s in 0..steps {
                let j = first_step + s as i64;
                h = fma(a[tid][s], h, x[tid][s]);
                if f < args.n_features && j < args.n_steps {
                    args.store_step(backward, j, f, h, outputs);
                }
            }
        }
    }
    workspace.epochs.launched(epoch, plan.blocks());
}

fn element_kind<E: Element>() -> ElementKind {
    if E::NAME == "f32" {
        ElementKind::F32
    } else {
        ElementKind::F64
    }
}

/// The emulated parallel kernel as a scan backend. Each call uses a fresh workspace that
/// first serves a dummy launch, so stale flags and a nonzero ticket base are exercised.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Emulated;

fn fresh_workspace<E: Element>(plan: &ParallelPlan, n_features: usize) -> Workspace<E> {
    let carry = plan.n_time_tiles as usize * n_features;
    let mut workspace = Workspace {
        counter: 0,
        flags: vec![0; plan.blocks() as usize],
        carry_decay: vec![E::nan(); carry],
        carry_impulse: vec![E::nan(); carry],
        carry_state: vec![E::nan(); carry],
        epochs: EpochState::cleared(),
    };
    // A previous launch that published everything: its flags must not look ready now.
    workspace.flags.fill(1);
    workspace.counter = 7;
    workspace.epochs.launched(1, 7);
    workspace
}

impl<E: Element> LinearScan<E> for Emulated {
    fn name(&self) -> &'static str {
        "emulated-cuda"
    }

    fn forward_checked(&self, problem: ForwardProblem<'_, '_, E>) -> Result<(), ScanError> {
        let shape = problem.shape();
        if shape.is_empty() {
            return Ok(());
        }
        let len = element_count("forward", shape).map_err(|e| e.into_scan_error("forward"))?;
        let (inputs, state) = problem.into_parts();
        let layout = choose_layout(&inputs.decay);
        let plan = plan_parallel(shape, layout, element_kind::<E>()).expect("plan");
        let (stride_t, stride_f) = layout.strides(shape);
        let decay = stage(inputs.decay, layout);
        let impulse = stage(inputs.impulse, layout);
        let initial = inputs.initial.map(|v| v.to_vec());
        let mut out = vec![E::nan(); len];
        let args = Args {
            decay: &decay,
            impulse: &impulse,
            state: &[],
            carry_in: initial.as_deref(),
            initial_state: None,
            n_steps: shape.n_steps as i64,
            n_features: shape.n_features as i64,
            stride_t,
            stride_f,
            reverse: inputs.direction == Direction::Reverse,
        };
        let mut outputs = Outputs {
            out: &mut out,
            grad_decay: &mut [],
            grad_initial: None,
        };
        let mut workspace = fresh_workspace(&plan, shape.n_features);
        launch(&plan, false, &args, &mut outputs, &mut workspace);
        unstage(&out, layout, state);
        Ok(())
    }

    fn backward_checked(&self, problem: BackwardProblem<'_, '_, E>) -> Result<(), ScanError> {
        let shape = problem.shape();
        let len = element_count("backward", shape).map_err(|e| e.into_scan_error("backward"))?;
        let (inputs, mut outputs) = problem.into_parts();
        if shape.n_steps == 0 {
            if let Some(grad_initial) = outputs.grad_initial.as_mut() {
                copy_or_zero(grad_initial, inputs.grad_last);
            }
            return Ok(());
        }
        if shape.is_empty() {
            return Ok(());
        }
        let layout = choose_layout(&inputs.decay);
        let plan = plan_parallel(shape, layout, element_kind::<E>()).expect("plan");
        let (stride_t, stride_f) = layout.strides(shape);
        let decay = stage(inputs.decay, layout);
        let grad_state = stage(inputs.grad_state, layout);
        let state = stage(inputs.state, layout);
        let initial = inputs.initial.map(|v| v.to_vec());
        let grad_last = inputs.grad_last.map(|v| v.to_vec());
        let mut grad_impulse = vec![E::nan(); len];
        let mut grad_decay = vec![E::nan(); len];
        let mut grad_initial = Array1::from_elem(shape.n_features, E::nan());
        let args = Args {
            decay: &decay,
            impulse: &grad_state,
            state: &state,
            carry_in: grad_last.as_deref(),
            initial_state: initial.as_deref(),
            n_steps: shape.n_steps as i64,
            n_features: shape.n_features as i64,
            stride_t,
            stride_f,
            // The backward scan runs against the forward processing order.
            reverse: inputs.direction == Direction::Forward,
        };
        let mut device_outputs = Outputs {
            out: &mut grad_impulse,
            grad_decay: &mut grad_decay,
            grad_initial: grad_initial.as_slice_mut(),
        };
        let mut workspace = fresh_workspace(&plan, shape.n_features);
        launch(&plan, true, &args, &mut device_outputs, &mut workspace);
        unstage(&grad_impulse, layout, outputs.grad_impulse);
        unstage(&grad_decay, layout, outputs.grad_decay);
        if let Some(target) = outputs.grad_initial.as_mut() {
            target.assign(&grad_initial);
        }
        Ok(())
    }
}

scan_core::conformance_suite!(crate::emulate::Emulated);
