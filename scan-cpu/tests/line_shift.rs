//! Rows that lie back to back but start off the 64-byte line grid are scanned as rows
//! shifted onto it (`aligned.rs`), with the state vector rotated. The features' recurrences
//! and their roundings are unchanged, so the results must equal bit for bit those of the
//! same data laid out with padded rows (which are never shifted), for every offset from
//! the line, width, length, direction, pass, element type and thread count.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Ix2, ShapeBuilder, StrideShape};
use proptest::prelude::*;
use scan_core::{BackwardInputs, BackwardOutputs, Direction, Element, ForwardInputs, LinearScan};
use scan_cpu::{Parallel, Parallelism, Tuning};

/// Feature splits on every problem with more than a few elements, never time splits
/// (whose chunking would change the roundings).
fn backend(parallelism: Parallelism) -> Parallel {
    Parallel {
        parallelism,
        tuning: Tuning {
            min_parallel_elements: 8,
            min_time_split_threads: usize::MAX,
            ..Tuning::default()
        },
        isa: None,
    }
}

/// `n × w` values in a buffer, laid out back to back from element `offset` on, or (with
/// no offset) with 3 unused elements after each row.
struct Buffer<E> {
    data: Vec<E>,
    n: usize,
    w: usize,
    offset: Option<usize>,
}

impl<E: Element> Buffer<E> {
    fn new(n: usize, w: usize, offset: Option<usize>, fill: impl Fn(usize, usize) -> E) -> Self {
        let mut buffer = Self {
            data: vec![E::zero(); n * (w + 3) + 64],
            n,
            w,
            offset,
        };
        let mut view = buffer.view_mut();
        for ((t, f), v) in view.indexed_iter_mut() {
            *v = fill(t, f);
        }
        buffer
    }

    fn shape(&self) -> StrideShape<Ix2> {
        let row = if self.offset.is_some() {
            self.w
        } else {
            self.w + 3
        };
        (self.n, self.w).strides((row, 1))
    }

    fn range(&self) -> std::ops::Range<usize> {
        match self.offset {
            Some(k) => k..k + self.n * self.w,
            None => 0..self.n * (self.w + 3),
        }
    }

    fn view(&self) -> ArrayView2<'_, E> {
        ArrayView2::from_shape(self.shape(), &self.data[self.range()]).unwrap()
    }

    fn view_mut(&mut self) -> ArrayViewMut2<'_, E> {
        let (shape, range) = (self.shape(), self.range());
        ArrayViewMut2::from_shape(shape, &mut self.data[range]).unwrap()
    }
}

/// A deterministic value in [lo, lo + 1) from an index and a salt.
fn value<E: Element>(i: usize, salt: u64, lo: f64) -> E {
    let mut z = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    E::from(lo + (z >> 11) as f64 / (1u64 << 53) as f64).unwrap()
}

/// Forward states and backward gradients for one layout: `flat(offset)` or padded.
fn run<E: Element>(
    backend: &Parallel,
    n: usize,
    w: usize,
    offset: Option<usize>,
    direction: Direction,
) -> (Array2<E>, Array2<E>, Array2<E>, Array1<E>)
where
    Parallel: LinearScan<E>,
{
    let data = |salt: u64, lo: f64| move |t: usize, f: usize| value::<E>(t * w + f, salt, lo);
    let decay = Buffer::new(n, w, offset, data(1, -0.2));
    let impulse = Buffer::new(n, w, offset, data(2, -0.5));
    let grad_state = Buffer::new(n, w, offset, data(3, -0.5));
    let initial = Array1::from_shape_fn(w, |f| value::<E>(f, 4, 0.0));
    let grad_last = Array1::from_shape_fn(w, |f| value::<E>(f, 5, 0.0));
    let zeros = |_: usize, _: usize| E::zero();
    let mut state = Buffer::new(n, w, offset, zeros);
    let mut grad_decay = Buffer::new(n, w, offset, zeros);
    let mut grad_impulse = Buffer::new(n, w, offset, zeros);
    let mut grad_initial = Array1::zeros(w);
    backend
        .forward_into(
            ForwardInputs {
                decay: decay.view(),
                impulse: impulse.view(),
                initial: Some(initial.view()),
                direction,
            },
            state.view_mut(),
        )
        .unwrap();
    backend
        .backward_into(
            BackwardInputs {
                decay: decay.view(),
                state: state.view(),
                initial: Some(initial.view()),
                grad_state: grad_state.view(),
                grad_last: Some(grad_last.view()),
                direction,
            },
            BackwardOutputs {
                grad_decay: grad_decay.view_mut(),
                grad_impulse: grad_impulse.view_mut(),
                grad_initial: Some(grad_initial.view_mut()),
            },
        )
        .unwrap();
    (
        state.view().to_owned(),
        grad_decay.view().to_owned(),
        grad_impulse.view().to_owned(),
        grad_initial,
    )
}

fn check<E: Element>(n: usize, w: usize, offset: usize, direction: Direction, threads: usize)
where
    Parallel: LinearScan<E>,
{
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        for parallelism in [Parallelism::Rayon, Parallelism::None] {
            let backend = backend(parallelism);
            let shifted = run::<E>(&backend, n, w, Some(offset), direction);
            let padded = run::<E>(&backend, n, w, None, direction);
            let same = |a: &Array2<E>, b: &Array2<E>| a.iter().zip(b).all(|(x, y)| x == y);
            assert!(same(&shifted.0, &padded.0), "states, {parallelism:?}");
            assert!(same(&shifted.1, &padded.1), "∂L/∂a, {parallelism:?}");
            assert!(same(&shifted.2, &padded.2), "∂L/∂x, {parallelism:?}");
            assert_eq!(shifted.3, padded.3, "∂L/∂h0, {parallelism:?}");
        }
    });
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Forward), Just(Direction::Reverse)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shifted_rows_equal_padded_rows_f32(
        n in 2usize..200,
        w in prop::sample::select(vec![32usize, 48, 64, 80, 128, 1040]),
        offset in 0usize..16,
        direction in direction(),
        threads in 1usize..4,
    ) {
        check::<f32>(n, w, offset, direction, threads);
    }

    #[test]
    fn shifted_rows_equal_padded_rows_f64(
        n in 2usize..200,
        w in prop::sample::select(vec![16usize, 24, 32, 40, 64, 520]),
        offset in 0usize..8,
        direction in direction(),
        threads in 1usize..4,
    ) {
        check::<f64>(n, w, offset, direction, threads);
    }
}
