//! # scan-cpu
//!
//! CPU backends of the linear recurrence `h_t = a_t·h_{t-1} + x_t` (the contract is
//! `scan_core::LinearScan`):
//!
//! * [`Serial`]: the serial-over-time baseline — one loop over time, vectorized across
//!   features, feature blocks split across threads. The yardstick of every speedup we
//!   claim, so it gets the same care as the fast path (AVX-512 or AVX2 + FMA when the CPU
//!   has them, states kept in registers).
//! * [`Parallel`]: Algorithm 1 of Martin & Cundy — chunk reductions, a carry scan over
//!   chunks, a rescan — parallel over time and features with rayon. For narrow problems
//!   (1, 2 or 4 contiguous features, or time-contiguous data) each thread additionally
//!   scans inside SIMD registers, which breaks the one-FMA-per-step dependency chain
//!   (forward; backward only for rows of at most 8 bytes, where it measured faster).
//!
//! The plan comes from the machine: the instruction set is detected at run time
//! ([`InstructionSet`]: AVX-512 F/VL, AVX2 + FMA, or the build's baseline; never
//! `target-cpu=native`), cache sizes are read once per process ([`CacheSizes`]), and the
//! thread count is rayon's. Every rule is static, so a given machine and thread count always
//! runs the same plan and gets bit-identical results. A backend may be pinned to a lower
//! instruction set (`isa` field) to compare them. The loop over time is compiled three
//! times (baseline, AVX2, AVX-512); the in-register kernels exist for AVX2 and AVX-512.
//!
//! No allocation per call: the running state and Algorithm 1's per-chunk vectors live in a
//! per-thread scratch space that grows to the widest problem seen and is reused; feature
//! blocks are split without a task list (tested with a counting allocator).
//! Design decision: both backends share one engine over raw row sequences (pointer plus
//! signed strides), so any strided 2-D view, either direction and the backward pass run
//! through the same few kernels with no copies; only the split differs.
//!
//! ```
//! use ndarray::Array2;
//! use scan_core::{Direction, ForwardInputs, LinearScan};
//! use scan_cpu::Parallel;
//!
//! let decay = Array2::from_elem((100_000, 4), 0.999_f32);
//! let impulse = Array2::from_elem((100_000, 4), 1.0_f32);
//! let h = Parallel::default().forward(ForwardInputs {
//!     decay: decay.view(),
//!     impulse: impulse.view(),
//!     initial: None,
//!     direction: Direction::Forward,
//! })?;
//! assert!((h[[99_999, 0]] - 1000.0).abs() < 0.5);
//! # Ok::<(), scan_core::ScanError>(())
//! ```
//!
//! Chunk maps (`LinearScan::forward_map`/`backward_map`, what `scan-mpi` exchanges between
//! ranks) run on the reduction kernels of Algorithm 1's first phase rather than on
//! `scan_core`'s scalar loop: in registers for narrow contiguous rows, vectorized across
//! features otherwise; [`Parallel`] splits a large reduction over threads (time chunks
//! composed in order for narrow problems, feature blocks for wide ones).
//!
//! Non-finite values: both backends return the serial loop's IEEE result (the contract of
//! `scan_core`). [`Parallel`] composes decays (in registers and across chunks), and a
//! product that underflows to 0 would turn an infinite state into NaN; so its in-register
//! kernels check their outputs (one multiply and OR per register) and continue with the
//! serial loop from the first register group with a non-finite state, and Algorithm 1
//! rescans serially from the first chunk whose entering state is not finite. Data with a
//! NaN or infinity therefore runs at serial speed from that point on, never with a wrong
//! class.
//!
//! Determinism: results are bit-identical from run to run for the same inputs, machine
//! and thread count. Chunk boundaries depend on the thread count, so results for
//! different thread counts agree only up to rounding.
#![warn(missing_docs)]

mod aligned;
mod engine;
mod kernels;
mod machine;
mod maps;
mod scratch;

use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use scan_core::{
    BackwardProblem, ChunkMap, Direction, Element, ForwardProblem, LinearScan, ScanError,
};

use engine::{Engine, Split};
use kernels::{Fused, Isa, Job, Seq};
use scratch::with_scratch;

pub use kernels::InstructionSet;
pub use machine::{describe as describe_machine, CacheSizes};

/// Whether a backend may use the rayon thread pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parallelism {
    /// Run on the calling thread only.
    None,
    /// Use rayon's current thread pool.
    #[default]
    Rayon,
}

/// The serial-over-time baseline: one loop over time, features split across threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial {
    /// Whether feature blocks may run on several threads.
    pub parallelism: Parallelism,
    /// The instruction set of the kernels; `None` picks the best this CPU supports. Asking
    /// for one the CPU lacks makes every call return [`ScanError::Unavailable`].
    pub isa: Option<InstructionSet>,
}

/// Algorithm 1: parallel over time and features.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parallel {
    /// Whether work may be split across threads.
    pub parallelism: Parallelism,
    /// Size thresholds of the plan; the defaults suit current x86-64 and ARM cores.
    pub tuning: Tuning,
    /// The instruction set of the kernels, as for [`Serial::isa`].
    pub isa: Option<InstructionSet>,
}

/// The kernels' instruction set: `wanted`, if the CPU has it, or the best detected.
fn resolve_isa(backend: &'static str, wanted: Option<InstructionSet>) -> Result<Isa, ScanError> {
    match wanted {
        None => Ok(Isa::detect()),
        Some(wanted) => Isa::checked(wanted).ok_or_else(|| ScanError::Unavailable {
            backend,
            reason: format!(
                "this CPU does not support the {} kernels (it supports: {})",
                wanted.name(),
                InstructionSet::supported()
                    .iter()
                    .map(|isa| isa.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Size thresholds that decide how [`Parallel`] splits a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Problems with fewer elements (T·F) run on one thread.
    pub min_parallel_elements: usize,
    /// Bytes of input (decays and impulses) per super-tile of Algorithm 1; each
    /// super-tile's chunks are reduced and rescanned while they are still in cache.
    pub tile_input_bytes: usize,
    /// Fewest threads at which time is split across threads (Algorithm 1). On `p` threads
    /// its critical path is `(2p−1)/p²` of a single pass — ¾ on two threads, a gain that
    /// thread hand-offs and the second pass over memory consumed on the two-core machine
    /// we measured — so by default time is split from three threads on; below that, narrow
    /// problems run the in-register kernels on one thread.
    pub min_time_split_threads: usize,
    /// Problems that move more bytes than this (inputs and outputs together) write their
    /// outputs with streaming stores, which skip reading each output line from memory
    /// before writing it but leave the output out of the cache; by default the
    /// last-level cache size.
    pub stream_min_bytes: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            min_parallel_elements: 1 << 18,
            tile_input_bytes: engine::default_tile_input_bytes(),
            min_time_split_threads: 3,
            stream_min_bytes: engine::default_stream_min_bytes(),
        }
    }
}

impl Serial {
    fn engine<E: Element>(&self) -> Result<Engine, ScanError> {
        let isa = resolve_isa("serial", self.isa)?;
        Ok(Engine::new::<E>(self.parallelism, Split::FeaturesOnly, isa))
    }
}

impl Parallel {
    fn engine<E: Element>(&self) -> Result<Engine, ScanError> {
        let isa = resolve_isa("parallel", self.isa)?;
        let mut engine = Engine::new::<E>(self.parallelism, Split::TimeAndFeatures, isa);
        engine.plan.min_parallel_elems = self.tuning.min_parallel_elements;
        engine.plan.min_time_split_threads = self.tuning.min_time_split_threads;
        engine.plan.stream_min_bytes = self.tuning.stream_min_bytes;
        engine.plan.tile_elems =
            (self.tuning.tile_input_bytes / (2 * std::mem::size_of::<E>())).max(1);
        Ok(engine)
    }
}

/// Implements `LinearScan` for a backend with a `fn engine<E>(&self) -> Result<Engine, _>`:
/// both backends run the same entry points on their own engine.
macro_rules! linear_scan_on_engine {
    ($backend:ty, $name:literal) => {
        impl<E: Element> LinearScan<E> for $backend {
            fn name(&self) -> &'static str {
                $name
            }

            fn forward_checked(&self, problem: ForwardProblem<'_, '_, E>) -> Result<(), ScanError> {
                forward(self.engine::<E>()?, problem);
                Ok(())
            }

            fn backward_checked(
                &self,
                problem: BackwardProblem<'_, '_, E>,
            ) -> Result<(), ScanError> {
                backward(self.engine::<E>()?, problem);
                Ok(())
            }

            fn forward_map(
                &self,
                decay: ArrayView2<'_, E>,
                impulse: ArrayView2<'_, E>,
                direction: Direction,
            ) -> Result<ChunkMap<E>, ScanError> {
                maps::forward_map(self.engine::<E>()?, decay, impulse, direction)
            }

            fn backward_map(
                &self,
                decay: ArrayView2<'_, E>,
                grad_state: ArrayView2<'_, E>,
                direction: Direction,
            ) -> Result<ChunkMap<E>, ScanError> {
                maps::backward_map(self.engine::<E>()?, decay, grad_state, direction)
            }
        }
    };
}

linear_scan_on_engine!(Serial, "serial");
linear_scan_on_engine!(Parallel, "parallel");

/// A view's first element and strides, as a row sequence.
fn seq<E>(view: &ArrayView2<'_, E>) -> Seq<E> {
    Seq {
        ptr: view.as_ptr().cast_mut(),
        row: view.strides()[0],
        col: view.strides()[1],
    }
}

fn seq_mut<E>(view: &mut ArrayViewMut2<'_, E>) -> Seq<E> {
    Seq {
        ptr: view.as_mut_ptr(),
        row: view.strides()[0],
        col: view.strides()[1],
    }
}

/// The sequence that starts at row `row` and walks rows downwards.
fn downwards<E>(s: Seq<E>, row: usize) -> Seq<E> {
    let start = s.offset(row as isize, 0);
    Seq {
        row: -s.row,
        ..start
    }
}

fn forward<E: Element>(engine: Engine, problem: ForwardProblem<'_, '_, E>) {
    let shape = problem.shape();
    if shape.is_empty() {
        return;
    }
    let (inputs, mut state) = problem.into_parts();
    let (mut decay, mut impulse) = (inputs.decay, inputs.impulse);
    // Process in index order: a reverse scan is a forward scan of time-inverted views.
    if inputs.direction == Direction::Reverse {
        decay.invert_axis(Axis(0));
        impulse.invert_axis(Axis(0));
        state.invert_axis(Axis(0));
    }
    let job = Job {
        n_rows: shape.n_steps,
        width: shape.n_features,
        decay: seq(&decay),
        impulse: seq(&impulse),
        out: seq_mut(&mut state),
        fused: None,
        stream: false,
    };
    with_scratch::<E, _>(|scratch| {
        let width = shape.n_features;
        scratch.state_from(width, inputs.initial.map(|h0| h0.into_iter().copied()));
        // SAFETY: the sequences come from validated (T, F) views (shapes checked by
        // `ForwardProblem`, whose fields nothing can replace), the output is an exclusive
        // borrow distinct from the inputs, and the views outlive the call; the state holds
        // F values (the initial state's length was checked too).
        unsafe { engine.run(&job, &mut scratch.state, &mut scratch.algorithm1) };
    });
}

fn backward<E: Element>(engine: Engine, problem: BackwardProblem<'_, '_, E>) {
    let shape = problem.shape();
    let (n, width) = (shape.n_steps, shape.n_features);
    let (inputs, outputs) = problem.into_parts();
    let (mut decay, mut state, mut grad_state) = (inputs.decay, inputs.state, inputs.grad_state);
    let (mut grad_decay, mut grad_impulse) = (outputs.grad_decay, outputs.grad_impulse);
    if inputs.direction == Direction::Reverse {
        for view in [&mut decay, &mut state, &mut grad_state] {
            view.invert_axis(Axis(0));
        }
        grad_decay.invert_axis(Axis(0));
        grad_impulse.invert_axis(Axis(0));
    }
    let initial = |f: usize| inputs.initial.as_ref().map_or(E::zero(), |h0| h0[f]);
    let prev_state = |t: usize, f: usize| {
        if t == 0 {
            initial(f)
        } else {
            state[[t - 1, f]]
        }
    };
    with_scratch::<E, _>(|scratch| {
        scratch.state_from(width, inputs.grad_last.map(|v| v.into_iter().copied()));
        let g = &mut scratch.state;
        // g_t = a_{t+1}·g_{t+1} + ∂L/∂h_t, walked from the last step; ∂L/∂x = g, ∂L/∂a = h_{t-1}·g.
        if n > 0 {
            let t = n - 1;
            for (f, g) in g.iter_mut().enumerate() {
                *g = *g + grad_state[[t, f]];
                grad_impulse[[t, f]] = *g;
                grad_decay[[t, f]] = prev_state(t, f) * *g;
            }
        }
        if n >= 3 {
            // Steps n−2 down to 1: decay a_{t+1}, previous state h_{t−1}, both in reach.
            let job = Job {
                n_rows: n - 2,
                width,
                decay: downwards(seq(&decay), n - 1),
                impulse: downwards(seq(&grad_state), n - 2),
                out: downwards(seq_mut(&mut grad_impulse), n - 2),
                fused: Some(Fused {
                    prev_state: downwards(seq(&state), n - 3),
                    grad_decay: downwards(seq_mut(&mut grad_decay), n - 2),
                }),
                stream: false,
            };
            // SAFETY: rows 1..n−1 of the outputs and rows 0..n of the inputs are in bounds of
            // validated (T, F) views; outputs are exclusive borrows distinct from the inputs
            // and from each other; the views outlive the call and are not used during it.
            unsafe { engine.run(&job, g, &mut scratch.algorithm1) };
        }
        if n >= 2 {
            for (f, g) in g.iter_mut().enumerate() {
                *g = decay[[1, f]] * *g + grad_state[[0, f]];
                grad_impulse[[0, f]] = *g;
                grad_decay[[0, f]] = initial(f) * *g;
            }
        }
        if let Some(mut grad_initial) = outputs.grad_initial {
            for (f, g) in g.iter().enumerate() {
                grad_initial[f] = if n == 0 { *g } else { decay[[0, f]] * *g };
            }
        }
    });
}
