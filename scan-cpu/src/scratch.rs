//! Reusable working memory, so that a scan call allocates nothing once warm.
//!
//! Every call needs a few vectors of `F` values: the running state, and for Algorithm 1 the
//! reduction, entering and last state of each chunk. They live in a per-thread scratch
//! space (one per element type) that grows to the widest problem the thread has run and is
//! then reused: the backends are plain `Copy` values shared across threads, so the memory
//! belongs to the calling thread rather than to the value. A call made while the thread's
//! scratch is in use (it cannot happen through the public API, which never nests scans)
//! gets fresh memory instead of failing.

use std::any::{Any, TypeId};
use std::cell::RefCell;

use scan_core::Element;

/// The working memory of one call.
#[derive(Debug, Default)]
pub(crate) struct Scratch<E> {
    /// The running state, one value per feature.
    pub state: Vec<E>,
    /// Algorithm 1's per-chunk vectors.
    pub algorithm1: ChunkScratch<E>,
}

/// Algorithm 1's working memory: the chunks and the state after the first rows.
#[derive(Debug, Default)]
pub(crate) struct ChunkScratch<E> {
    pub chunks: Vec<Chunk<E>>,
    pub first_end: Vec<E>,
}

/// One chunk of Algorithm 1: its reduction, then its entering and last states.
#[derive(Debug)]
pub(crate) struct Chunk<E> {
    /// Product of the chunk's decays (phase 1).
    pub product: Vec<E>,
    /// The chunk's state reached from zero (phase 1), then its entering state (phase 2),
    /// then its last state (phase 3).
    pub acc: Vec<E>,
    /// The entering state, kept for phase 4's check.
    pub entering: Vec<E>,
}

impl<E: Element> Scratch<E> {
    /// The state vector, `width` long, filled from `source` or with zeros.
    pub fn state_from(&mut self, width: usize, source: Option<impl Iterator<Item = E>>) {
        self.state.clear();
        match source {
            Some(values) => self.state.extend(values.take(width)),
            None => self.state.resize(width, E::zero()),
        }
    }
}

impl<E: Element> ChunkScratch<E> {
    /// `n_chunks` chunks of `width` values, and `first_end` of `width` values.
    pub fn prepare(&mut self, n_chunks: usize, width: usize) {
        self.chunks.truncate(n_chunks);
        while self.chunks.len() < n_chunks {
            self.chunks.push(Chunk {
                product: Vec::new(),
                acc: Vec::new(),
                entering: Vec::new(),
            });
        }
        for chunk in &mut self.chunks {
            for v in [&mut chunk.product, &mut chunk.acc, &mut chunk.entering] {
                v.resize(width, E::zero());
            }
        }
        self.first_end.resize(width, E::zero());
    }
}

thread_local! {
    static F32: RefCell<Scratch<f32>> = RefCell::new(Scratch::default());
    static F64: RefCell<Scratch<f64>> = RefCell::new(Scratch::default());
}

/// Runs `body` with this thread's scratch space for `E`.
pub(crate) fn with_scratch<E: Element, R>(body: impl FnOnce(&mut Scratch<E>) -> R) -> R {
    fn run<T: Element, E: Element, R>(
        cell: &RefCell<Scratch<T>>,
        body: impl FnOnce(&mut Scratch<E>) -> R,
    ) -> R {
        let Ok(mut scratch) = cell.try_borrow_mut() else {
            return body(&mut Scratch::default());
        };
        match (&mut *scratch as &mut dyn Any).downcast_mut::<Scratch<E>>() {
            Some(scratch) => body(scratch),
            None => body(&mut Scratch::default()),
        }
    }
    if TypeId::of::<E>() == TypeId::of::<f32>() {
        F32.with(|cell| run(cell, body))
    } else {
        F64.with(|cell| run(cell, body))
    }
}
