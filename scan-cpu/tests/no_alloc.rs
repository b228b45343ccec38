//! Once warm, a scan call allocates nothing: carries, chunk states and gradient rows come
//! from the per-thread scratch space (`scratch.rs`), feature blocks are split without a
//! task list. A counting global allocator checks every path: narrow (in-register) and wide
//! rows, time-contiguous columns, Algorithm 1, both directions, forward and backward, on
//! one thread and on a rayon pool. The calls run inside the pool (as a model's do), so
//! rayon's own queues are warm too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ndarray::{Array1, Array2, ShapeBuilder};
use scan_core::{BackwardInputs, BackwardOutputs, Direction, ForwardInputs, LinearScan};
use scan_cpu::{Parallel, Parallelism, Serial, Tuning};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator unchanged; the counter is a side
// effect that touches no allocated memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `body` (on any thread).
fn allocations(body: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    body();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

struct Problem {
    decay: Array2<f32>,
    impulse: Array2<f32>,
    state: Array2<f32>,
    grad_decay: Array2<f32>,
    grad_impulse: Array2<f32>,
    initial: Array1<f32>,
    grad_initial: Array1<f32>,
}

impl Problem {
    fn new((t, f): (usize, usize), time_contiguous: bool) -> Self {
        let array = |fill: f32| {
            if time_contiguous {
                Array2::from_elem((t, f).f(), fill)
            } else {
                Array2::from_elem((t, f), fill)
            }
        };
        Self {
            decay: array(0.9),
            impulse: array(1.0),
            state: array(0.0),
            grad_decay: array(0.0),
            grad_impulse: array(0.0),
            initial: Array1::from_elem(f, 0.5),
            grad_initial: Array1::zeros(f),
        }
    }

    fn run(&mut self, backend: &dyn LinearScan<f32>, direction: Direction) {
        backend
            .forward_into(
                ForwardInputs {
                    decay: self.decay.view(),
                    impulse: self.impulse.view(),
                    initial: Some(self.initial.view()),
                    direction,
                },
                self.state.view_mut(),
            )
            .expect("forward");
        backend
            .backward_into(
                BackwardInputs {
                    decay: self.decay.view(),
                    state: self.state.view(),
                    initial: Some(self.initial.view()),
                    grad_state: self.impulse.view(),
                    grad_last: Some(self.initial.view()),
                    direction,
                },
                BackwardOutputs {
                    grad_decay: self.grad_decay.view_mut(),
                    grad_impulse: self.grad_impulse.view_mut(),
                    grad_initial: Some(self.grad_initial.view_mut()),
                },
            )
            .expect("backward");
    }
}

#[test]
fn warm_calls_allocate_nothing() {
    let eager = Parallel {
        parallelism: Parallelism::Rayon,
        tuning: Tuning {
            min_parallel_elements: 8,
            tile_input_bytes: 5600,
            min_time_split_threads: 2,
            ..Tuning::default()
        },
        isa: None,
    };
    let streamed = Parallel {
        tuning: Tuning {
            stream_min_bytes: 0,
            ..eager.tuning
        },
        ..eager
    };
    let backends: [(&str, Box<dyn LinearScan<f32>>); 5] = [
        ("serial", Box::new(Serial::default())),
        ("parallel", Box::new(Parallel::default())),
        (
            "parallel, one thread",
            Box::new(Parallel {
                parallelism: Parallelism::None,
                ..Parallel::default()
            }),
        ),
        ("parallel, Algorithm 1 everywhere", Box::new(eager)),
        ("parallel, streaming stores", Box::new(streamed)),
    ];
    let shapes = [
        ((5000, 1), false),
        ((70_000, 4), false),
        ((3000, 96), false),
        ((300, 700), false),
        ((4000, 3), true),
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .expect("pool");
    // Every worker started (its thread-local set-up done) before anything is counted.
    pool.broadcast(|_| ());
    pool.install(|| {
        for (name, backend) in &backends {
            for &(shape, time_contiguous) in &shapes {
                let mut problem = Problem::new(shape, time_contiguous);
                for direction in [Direction::Forward, Direction::Reverse] {
                    // Warm-up: the scratch grows to this width, rayon's queues fill.
                    for _ in 0..3 {
                        problem.run(&**backend, direction);
                    }
                    // The counter sees every thread; a one-off allocation elsewhere in the
                    // process (a worker still starting, the test harness) is not the
                    // scan's, while one the calls make shows in every attempt.
                    let count = (0..3)
                        .map(|_| {
                            allocations(|| {
                                for _ in 0..5 {
                                    problem.run(&**backend, direction);
                                }
                            })
                        })
                        .min()
                        .unwrap_or(0);
                    assert_eq!(
                        count, 0,
                        "{name}: {count} allocations in 5 warm calls at {shape:?}, \
                         time-contiguous {time_contiguous}, {direction:?}"
                    );
                }
            }
        }
    });
}
