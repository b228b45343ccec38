//! Runs a [`Job`] on the thread pool: features split across threads, and, for narrow
//! problems, Algorithm 1 over time.
//!
//! Algorithm 1 is run tile by tile so the second pass over a chunk hits cache: the rows
//! are cut into *super-tiles* of [`Plan::tile_elems`] elements (an eighth of the last-level
//! cache), processed one after
//! another with the state carried between them. Within a super-tile of `n` rows on `p`
//! threads, the first `n/p` rows are scanned directly from the incoming state while the
//! other threads reduce the remaining rows in `2(p−1)` chunks (phase 1); the chunk carries
//! are then composed serially (phase 2) and the chunks rescanned from their carries, in
//! parallel (phase 3). That is `(2p−1)/p²` of a serial pass on the critical path (¾ on two
//! threads) and one pass over memory, since phase 3 reads what phase 1 just brought into
//! cache.
//!
//! Time is split only from `min_time_split_threads` threads on (three by default): on the
//! two-core machine we measured, the ¾ critical path of two threads never beat the
//! in-register kernels on one thread once thread hand-offs were paid (see the README).

use rayon::prelude::*;
use scan_core::Element;

use crate::kernels::{self, Isa, Job, KernelSet};
use crate::machine::CacheSizes;
use crate::scratch::{Chunk, ChunkScratch};
use crate::Parallelism;

/// How a backend splits its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// Features across threads only; one loop over time per feature block.
    FeaturesOnly,
    /// Features across threads when there are enough, otherwise Algorithm 1 over time.
    TimeAndFeatures,
}

/// Sizes that decide how a job is split; see the module doc.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Threads to use.
    pub threads: usize,
    /// Below this many elements a job runs on one thread.
    pub min_parallel_elems: usize,
    /// Features per thread at which splitting features beats splitting time.
    pub min_features_per_thread: usize,
    /// Elements per super-tile of Algorithm 1.
    pub tile_elems: usize,
    /// Fewest threads at which time is split (see `Tuning::min_time_split_threads`).
    pub min_time_split_threads: usize,
    /// Jobs moving more bytes than this (inputs and outputs) stream their outputs.
    pub stream_min_bytes: usize,
}

impl Plan {
    /// The plan for this machine and element type.
    pub fn new<E: Element>(parallelism: Parallelism) -> Self {
        let threads = match parallelism {
            Parallelism::None => 1,
            Parallelism::Rayon => rayon::current_num_threads().max(1),
        };
        let lanes = 32 / std::mem::size_of::<E>();
        Self {
            threads,
            min_parallel_elems: 1 << 18,
            // Two registers' worth of features per thread keep two FMA chains in flight.
            min_features_per_thread: 2 * lanes,
            tile_elems: default_tile_input_bytes() / (2 * std::mem::size_of::<E>()),
            min_time_split_threads: 3,
            stream_min_bytes: default_stream_min_bytes(),
        }
    }
}

/// Bytes of input per super-tile: an eighth of the last-level cache (so the rows reduced in
/// phase 1 are still cached when phase 3 rescans them, with room for the outputs and
/// other work), between 1 and 8 MiB; 4 MiB where the cache size cannot be read.
pub(crate) fn default_tile_input_bytes() -> usize {
    (cache_bytes() / 8).clamp(1 << 20, 8 << 20)
}

/// Jobs that move more bytes than this (inputs and outputs) stream their outputs past the
/// cache, since it could not keep them until they are read: the last-level cache size.
pub(crate) fn default_stream_min_bytes() -> usize {
    cache_bytes()
}

/// The last-level cache size (read once per process); 32 MiB where it cannot be read.
fn cache_bytes() -> usize {
    CacheSizes::detect().last_level().unwrap_or(32 << 20)
}

/// The engine: a plan, the kernels it may use and the instruction set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Engine {
    pub plan: Plan,
    pub split: Split,
    pub isa: Isa,
}

impl Engine {
    /// The engine for a backend, with kernels for `isa`.
    pub fn new<E: Element>(parallelism: Parallelism, split: Split, isa: Isa) -> Self {
        Self {
            plan: Plan::new::<E>(parallelism),
            split,
            isa,
        }
    }

    pub(crate) fn kernels(&self) -> KernelSet {
        match self.split {
            Split::FeaturesOnly => KernelSet::TimeLoop,
            Split::TimeAndFeatures => KernelSet::InRegister,
        }
    }

    /// Runs `job` from `carry` (one state per feature), leaving the last state there.
    ///
    /// # Safety
    /// As for [`kernels::scan`].
    pub unsafe fn run<E: Element>(
        &self,
        job: &Job<E>,
        carry: &mut [E],
        scratch: &mut ChunkScratch<E>,
    ) {
        let (n, w) = (job.n_rows, job.width);
        if n == 0 || w == 0 {
            return;
        }
        let threads = self.plan.threads;
        // A job that moves more than the last-level cache holds streams its outputs past it.
        let sequences = if job.fused.is_some() { 5 } else { 3 };
        let bytes = (n.saturating_mul(w)).saturating_mul(sequences * std::mem::size_of::<E>());
        let job = &Job {
            stream: self.isa.has_avx2() && bytes > self.plan.stream_min_bytes,
            ..*job
        };
        let small = n * w < self.plan.min_parallel_elems || threads == 1;
        let columns_contiguous = w > 1 && !job.rows_contiguous() && column_major(job);
        let time_parallel = self.split == Split::TimeAndFeatures
            && !small
            && threads >= self.plan.min_time_split_threads;
        // SAFETY: for all calls, the caller's contract, and every task below gets disjoint
        // output columns (feature blocks) or rows (time chunks) of the job.
        unsafe {
            if columns_contiguous && small {
                // Each feature is its own contiguous series; too little work to share.
                for f in 0..w {
                    kernels::scan(
                        &job.cols(f, 1),
                        &mut carry[f..f + 1],
                        self.isa,
                        self.kernels(),
                    );
                }
            } else if columns_contiguous {
                // Each feature is its own contiguous series.
                if time_parallel && w < 2 * threads {
                    for f in 0..w {
                        self.time_parallel(&job.cols(f, 1), &mut carry[f..f + 1], scratch);
                    }
                } else {
                    self.feature_blocks(job, carry, 1);
                }
            } else if n * w < self.plan.min_parallel_elems {
                kernels::scan(job, carry, self.isa, self.kernels());
            } else if small || !time_parallel || w >= threads * self.plan.min_features_per_thread {
                self.feature_split(job, carry);
            } else {
                self.time_parallel(job, carry, scratch);
            }
        }
    }

    /// Composes `job` into the map in `product` and `acc` (see [`kernels::reduce_from`]):
    /// a chunk reduced to its affine map. Unlike a scan, a reduction split over time costs
    /// no second pass (each thread reduces its part, the parts are composed in order), so
    /// narrow problems are split over time from two threads on; wide ones are split over
    /// features, and small ones run on the calling thread.
    ///
    /// # Safety
    /// As for [`kernels::reduce`].
    pub unsafe fn reduce<E: Element>(
        &self,
        job: &Job<E>,
        product: &mut [E],
        acc: &mut [E],
        scratch: &mut ChunkScratch<E>,
    ) {
        let (n, w) = (job.n_rows, job.width);
        if n == 0 || w == 0 {
            return;
        }
        let threads = self.plan.threads;
        let small = n * w < self.plan.min_parallel_elems || threads == 1;
        let columns_contiguous = w > 1 && !job.rows_contiguous() && column_major(job);
        let (isa, kernels) = (self.isa, self.kernels());
        let by_features = self.split == Split::FeaturesOnly
            || if columns_contiguous {
                w >= 2 * threads
            } else {
                w >= threads * self.plan.min_features_per_thread
            };
        let block = if columns_contiguous {
            1
        } else if small {
            w
        } else {
            w.div_ceil(threads).next_multiple_of(8).min(w)
        };
        // SAFETY: for all calls, the caller's contract; blocks are disjoint columns of the job
        // and reducing writes nothing but `product` and `acc`.
        let run_block = |(i, (product, acc)): (usize, (&mut [E], &mut [E]))| unsafe {
            kernels::reduce_from(&job.cols(i * block, acc.len()), product, acc, isa, kernels)
        };
        if small || (by_features && w <= block) {
            let blocks = product.chunks_mut(block).zip(acc.chunks_mut(block));
            blocks.enumerate().for_each(run_block);
        } else if by_features {
            let blocks = product
                .par_chunks_mut(block)
                .zip(acc.par_chunks_mut(block))
                .enumerate();
            blocks.for_each(run_block);
        } else if columns_contiguous {
            for f in 0..w {
                // SAFETY: column f is inside the job.
                unsafe {
                    self.reduce_over_time(
                        &job.cols(f, 1),
                        &mut product[f..f + 1],
                        &mut acc[f..f + 1],
                        scratch,
                    )
                };
            }
        } else {
            // SAFETY: the caller's contract.
            unsafe { self.reduce_over_time(job, product, acc, scratch) };
        }
    }

    /// Reduces `threads` consecutive time chunks of `job` in parallel, then composes their
    /// maps after `product` and `acc` in order. Where the state entering a chunk is not
    /// finite, composing could give `0·∞ = NaN` where the serial loop keeps ∞, so the rest
    /// is reduced serially from that state instead (the serial IEEE result).
    ///
    /// # Safety
    /// As for [`kernels::reduce`].
    unsafe fn reduce_over_time<E: Element>(
        &self,
        job: &Job<E>,
        product: &mut [E],
        acc: &mut [E],
        scratch: &mut ChunkScratch<E>,
    ) {
        let (isa, kernels) = (self.isa, self.kernels());
        let n = job.n_rows;
        let n_chunks = self.plan.threads;
        scratch.prepare(n_chunks, job.width);
        let begin = |i: usize| n * i / n_chunks;
        let chunk = |i: usize| job.rows(begin(i), begin(i + 1) - begin(i));
        scratch
            .chunks
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, c)| {
                // SAFETY: chunk i is inside the job; reducing writes nothing.
                unsafe { kernels::reduce(&chunk(i), &mut c.product, &mut c.acc, isa, kernels) }
            });
        for (i, c) in scratch.chunks.iter().enumerate() {
            if !acc.iter().all(|v| v.is_finite()) {
                let rest = job.rows(begin(i), n - begin(i));
                // SAFETY: rows begin(i)..n are inside the job; reducing writes nothing.
                unsafe { kernels::reduce_from(&rest, product, acc, isa, kernels) };
                return;
            }
            for f in 0..acc.len() {
                acc[f] = c.product[f].mul_add(acc[f], c.acc[f]);
                product[f] = kernels::flush_subnormal(product[f] * c.product[f]);
            }
        }
    }

    /// Feature blocks of `block` columns, in parallel, each one loop over time.
    pub(crate) unsafe fn feature_blocks<E: Element>(
        &self,
        job: &Job<E>,
        carry: &mut [E],
        block: usize,
    ) {
        let kernels = self.kernels();
        let isa = self.isa;
        // SAFETY: blocks are disjoint column ranges of the job (the caller's contract).
        let run = |(i, carry): (usize, &mut [E])| unsafe {
            kernels::scan(&job.cols(i * block, carry.len()), carry, isa, kernels)
        };
        if self.plan.threads > 1 && carry.len() > block {
            carry.par_chunks_mut(block).enumerate().for_each(run);
        } else {
            carry.chunks_mut(block).enumerate().for_each(run);
        }
    }

    /// Algorithm 1 over time, one super-tile after another.
    unsafe fn time_parallel<E: Element>(
        &self,
        job: &Job<E>,
        carry: &mut [E],
        scratch: &mut ChunkScratch<E>,
    ) {
        let w = job.width;
        let p = self.plan.threads;
        let tile_rows = (self.plan.tile_elems / w).max(64 * p);
        let n_chunks = 2 * (p - 1);
        // Per chunk, reused across super-tiles (and calls).
        scratch.prepare(n_chunks, w);
        let ChunkScratch { chunks, first_end } = scratch;
        let mut start = 0;
        while start < job.n_rows {
            let mut rows = tile_rows.min(job.n_rows - start);
            // Avoid a last super-tile too short to split.
            if job.n_rows - start - rows < tile_rows / 2 {
                rows = job.n_rows - start;
            }
            // SAFETY: rows start..start+rows are inside the job.
            unsafe { self.tile(&job.rows(start, rows), carry, chunks, first_end) };
            start += rows;
        }
    }

    unsafe fn tile<E: Element>(
        &self,
        job: &Job<E>,
        carry: &mut [E],
        chunks: &mut [Chunk<E>],
        first_end: &mut [E],
    ) {
        let (isa, kernels) = (self.isa, self.kernels());
        let n = job.n_rows;
        let p = self.plan.threads;
        let first = n / p;
        let rest = n - first;
        let n_chunks = chunks.len();
        let begin = |i: usize| first + rest * i / n_chunks;
        let chunk = |i: usize| job.rows(begin(i), begin(i + 1) - begin(i));
        // Phase 1: scan the first rows from the incoming state; reduce the other chunks.
        rayon::join(
            // SAFETY: the first rows are disjoint from every chunk.
            || unsafe { kernels::scan(&job.rows(0, first), carry, isa, kernels) },
            || {
                chunks.par_iter_mut().enumerate().for_each(|(i, c)| {
                    // SAFETY: chunk i is inside the job; reducing writes nothing.
                    unsafe { kernels::reduce(&chunk(i), &mut c.product, &mut c.acc, isa, kernels) }
                })
            },
        );
        first_end.copy_from_slice(carry);
        // Phase 2: the state entering each chunk; `acc` is replaced by it.
        for c in chunks.iter_mut() {
            for (f, state) in carry.iter_mut().enumerate() {
                let entering = *state;
                *state = c.product[f].mul_add(entering, c.acc[f]);
                c.acc[f] = entering;
                c.entering[f] = entering;
            }
        }
        // Phase 3: rescan every chunk from its entering state; `acc` becomes its last state.
        chunks.par_iter_mut().enumerate().for_each(|(i, c)| {
            // SAFETY: chunks are disjoint row ranges of the job.
            unsafe { kernels::scan(&chunk(i), &mut c.acc, isa, kernels) }
        });
        // Phase 4: the serial IEEE result. Phase 2 multiplies decays together; a product
        // that underflows to 0 (or overflows) turns an infinite state into NaN where the
        // serial loop keeps the infinity. Rescanning is exact from the last state of a chunk
        // (its rescan is serial given its entering state), so from the first chunk whose
        // entering state or predecessor's last state is not finite, the rest of the tile is
        // rescanned serially. Finite data only pays for the checks on a few rows.
        let mut previous_end: &[E] = first_end;
        for (i, c) in chunks.iter().enumerate() {
            let finite = |v: &[E]| v.iter().all(|v| v.is_finite());
            if !finite(previous_end) || !finite(&c.entering) {
                carry.copy_from_slice(previous_end);
                // SAFETY: rows begin(i)..n are inside the job; the parallel regions above
                // have finished, so nothing else touches the outputs.
                unsafe {
                    kernels::scan(
                        &job.rows(begin(i), n - begin(i)),
                        carry,
                        isa,
                        KernelSet::TimeLoop,
                    )
                };
                return;
            }
            previous_end = &c.acc;
        }
        // The last chunk's own last state (equal to phase 2's composition up to rounding).
        carry.copy_from_slice(previous_end);
    }
}

/// Whether every sequence of the job walks time with unit stride (time-contiguous).
fn column_major<E>(job: &Job<E>) -> bool {
    let fused = job.fused.iter().flat_map(|f| [f.prev_state, f.grad_decay]);
    [job.decay, job.impulse, job.out]
        .into_iter()
        .chain(fused)
        .all(|s| s.row.abs() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_size_is_bounded() {
        let bytes = default_tile_input_bytes();
        assert!((1 << 20..=8 << 20).contains(&bytes), "{bytes}");
    }

    #[test]
    fn plan_threads_follow_parallelism() {
        assert_eq!(Plan::new::<f32>(Parallelism::None).threads, 1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        assert_eq!(
            pool.install(|| Plan::new::<f64>(Parallelism::Rayon).threads),
            3
        );
    }
}
