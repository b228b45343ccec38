//! The synthetic long-dependency task of PAPER.md §3 (Hochreiter & Schmidhuber 1997,
//! problem 2b).

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{ModelError, OneHotSequence, Real};

/// Sequences of length `seq_len` of one-hot vectors in `dim` dimensions: `x_0 = ±e_1`,
/// every later element a one-hot vector drawn uniformly from the `dim` directions. The
/// label is the sign of `x_0`: class 1 for `+e_1`, class 0 for `−e_1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticTask {
    seq_len: usize,
    dim: usize,
}

/// A batch of the synthetic task.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticBatch<E> {
    /// The inputs, `(T, B)` one-hot vectors in `dim` dimensions (`x_0` has value ±1).
    pub input: OneHotSequence<E>,
    /// The classes, one per sequence (1 = positive first element).
    pub labels: Vec<usize>,
}

impl SyntheticTask {
    /// The number of classes (two: the sign of `x_0`).
    pub const N_CLASSES: usize = 2;

    /// A task with sequences of `seq_len ≥ 1` steps in `dim ≥ 1` dimensions.
    pub fn new(seq_len: usize, dim: usize) -> Result<Self, ModelError> {
        if seq_len == 0 || dim == 0 || dim > u32::MAX as usize {
            return Err(ModelError::InvalidConfig {
                reason: format!(
                    "the synthetic task needs seq_len ≥ 1 and 1 ≤ dim < 2³² (got seq_len = {seq_len}, dim = {dim})"
                ),
            });
        }
        Ok(Self { seq_len, dim })
    }

    /// The sequence length n.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The one-hot dimension p.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Draws `batch` fresh sequences from `rng`.
    pub fn sample<E: Real, R: Rng + ?Sized>(&self, batch: usize, rng: &mut R) -> SyntheticBatch<E> {
        let mut index = Array2::zeros((self.seq_len, batch));
        let mut value = Array2::from_elem((self.seq_len, batch), E::one());
        let mut labels = Vec::with_capacity(batch);
        for b in 0..batch {
            let positive = rng.gen_bool(0.5);
            labels.push(usize::from(positive));
            if !positive {
                value[[0, b]] = -E::one();
            }
        }
        let dim = self.dim as u32;
        for t in 1..self.seq_len {
            for b in 0..batch {
                index[[t, b]] = rng.gen_range(0..dim);
            }
        }
        let input =
            OneHotSequence::new(index, value, self.dim).expect("generated indices are below dim");
        SyntheticBatch { input, labels }
    }

    /// The same sequences as [`SyntheticTask::batch_for_step`], generated `chunk_len` steps
    /// at a time (for [`crate::Classifier::stream`]): the labels, and an iterator over
    /// `(chunk_len, B)` chunks (the last one shorter). Memory is `O(chunk_len·B)`, not
    /// `O(T·B)`. `chunk_len = 0` is treated as 1.
    pub fn chunks_for_step<E: Real>(
        &self,
        seed: u64,
        step: u64,
        batch: usize,
        chunk_len: usize,
    ) -> (Vec<usize>, SyntheticChunks<E>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(step);
        let labels: Vec<usize> = (0..batch).map(|_| usize::from(rng.gen_bool(0.5))).collect();
        let signs = labels
            .iter()
            .map(|&l| if l == 1 { E::one() } else { -E::one() })
            .collect();
        let chunks = SyntheticChunks {
            rng,
            signs,
            next_step: 0,
            seq_len: self.seq_len,
            dim: self.dim,
            chunk_len: chunk_len.max(1),
        };
        (labels, chunks)
    }

    /// The batch for training step `step` of a run seeded with `seed`: a pure function of
    /// `(seed, step, batch)`, so a resumed run sees exactly the batches it would have seen.
    /// (Each step uses its own ChaCha8 stream.)
    pub fn batch_for_step<E: Real>(&self, seed: u64, step: u64, batch: usize) -> SyntheticBatch<E> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(step);
        self.sample(batch, &mut rng)
    }
}

/// The chunks of [`SyntheticTask::chunks_for_step`], in order.
#[derive(Clone, Debug)]
pub struct SyntheticChunks<E> {
    rng: ChaCha8Rng,
    signs: Vec<E>,
    next_step: usize,
    seq_len: usize,
    dim: usize,
    chunk_len: usize,
}

impl<E: Real> Iterator for SyntheticChunks<E> {
    type Item = OneHotSequence<E>;

    fn next(&mut self) -> Option<OneHotSequence<E>> {
        let start = self.next_step;
        let len = self.chunk_len.min(self.seq_len.checked_sub(start)?);
        if len == 0 {
            return None;
        }
        let batch = self.signs.len();
        let mut index = Array2::zeros((len, batch));
        let mut value = Array2::from_elem((len, batch), E::one());
        let dim = self.dim as u32;
        for t in 0..len {
            for b in 0..batch {
                if start + t == 0 {
                    value[[t, b]] = self.signs[b];
                } else {
                    index[[t, b]] = self.rng.gen_range(0..dim);
                }
            }
        }
        self.next_step += len;
        OneHotSequence::new(index, value, self.dim).ok()
    }
}
