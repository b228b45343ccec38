//! The synthetic long-dependency task of PAPER.md §3 (Hochreiter & Schmidhuber 1997,
//! problem 2b).

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::host::try_filled;
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

    /// Draws `batch` fresh sequences from `rng`; an error when they are too large to
    /// allocate.
    pub fn sample<E: Real, R: Rng + ?Sized>(
        &self,
        batch: usize,
        rng: &mut R,
    ) -> Result<SyntheticBatch<E>, ModelError> {
        const OP: &str = "SyntheticTask::sample";
        let (mut index, mut value) = one_hot_arrays(OP, self.seq_len, batch)?;
        let mut labels = with_capacity(OP, batch)?;
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
        let input = OneHotSequence::new(index, value, self.dim)?;
        Ok(SyntheticBatch { input, labels })
    }

    /// The same sequences as [`SyntheticTask::batch_for_step`], generated `chunk_len` steps
    /// at a time (for [`crate::Classifier::stream`]): the labels, and an iterator over
    /// `(chunk_len, B)` chunks (the last one shorter), each an error if it is too large to
    /// allocate. Memory is `O(chunk_len·B)`, not `O(T·B)`. `chunk_len = 0` is treated as 1.
    pub fn chunks_for_step<E: Real>(
        &self,
        seed: u64,
        step: u64,
        batch: usize,
        chunk_len: usize,
    ) -> Result<(Vec<usize>, SyntheticChunks<E>), ModelError> {
        const OP: &str = "SyntheticTask::chunks_for_step";
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(step);
        let (mut labels, mut signs) = (with_capacity(OP, batch)?, with_capacity(OP, batch)?);
        for _ in 0..batch {
            let positive = rng.gen_bool(0.5);
            labels.push(usize::from(positive));
            signs.push(if positive { E::one() } else { -E::one() });
        }
        let chunks = SyntheticChunks {
            rng,
            signs,
            next_step: 0,
            seq_len: self.seq_len,
            dim: self.dim,
            chunk_len: chunk_len.max(1),
        };
        Ok((labels, chunks))
    }

    /// The batch for training step `step` of a run seeded with `seed`: a pure function of
    /// `(seed, step, batch)`, so a resumed run sees exactly the batches it would have seen.
    /// (Each step uses its own ChaCha8 stream.) An error when the batch is too large to
    /// allocate.
    pub fn batch_for_step<E: Real>(
        &self,
        seed: u64,
        step: u64,
        batch: usize,
    ) -> Result<SyntheticBatch<E>, ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(step);
        self.sample(batch, &mut rng)
    }
}

/// Zero indices and unit values for `len` steps of `batch` sequences, or an error naming
/// `operation` when they are too large to allocate.
fn one_hot_arrays<E: Real>(
    operation: &'static str,
    len: usize,
    batch: usize,
) -> Result<(Array2<u32>, Array2<E>), ModelError> {
    let too_large = || ModelError::InvalidInput {
        operation,
        reason: format!("{len} steps of {batch} sequences are too large to allocate"),
    };
    let index = try_filled((len, batch), 0).ok_or_else(too_large)?;
    let value = try_filled((len, batch), E::one()).ok_or_else(too_large)?;
    Ok((index, value))
}

/// An empty vector with room for one item per sequence of a batch of `batch`.
fn with_capacity<T>(operation: &'static str, batch: usize) -> Result<Vec<T>, ModelError> {
    let mut items = Vec::new();
    items
        .try_reserve_exact(batch)
        .map_err(|_| ModelError::InvalidInput {
            operation,
            reason: format!("a batch of {batch} sequences is too large to allocate"),
        })?;
    Ok(items)
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
    /// A chunk, or the error that ends the iteration.
    type Item = Result<OneHotSequence<E>, ModelError>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.next_step;
        let len = self.chunk_len.min(self.seq_len.checked_sub(start)?);
        if len == 0 {
            return None;
        }
        let batch = self.signs.len();
        let (mut index, mut value) = match one_hot_arrays("SyntheticChunks::next", len, batch) {
            Ok(arrays) => arrays,
            Err(err) => {
                self.next_step = self.seq_len;
                return Some(Err(err));
            }
        };
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
        Some(OneHotSequence::new(index, value, self.dim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_too_large<T: std::fmt::Debug>(result: Result<T, ModelError>, operation: &str) {
        let message = result.unwrap_err().to_string();
        assert!(message.starts_with(operation), "{message}");
        assert!(message.contains("too large to allocate"), "{message}");
    }

    #[test]
    fn batches_too_large_to_allocate_are_errors() {
        const OP: &str = "SyntheticTask::sample";
        let long = SyntheticTask::new(usize::MAX, 2).unwrap();
        assert_too_large(long.batch_for_step::<f32>(0, 0, 2), OP);
        let short = SyntheticTask::new(4, 2).unwrap();
        assert_too_large(short.batch_for_step::<f32>(0, 0, usize::MAX), OP);
        // The element count fits, the allocation does not.
        let huge = SyntheticTask::new(isize::MAX as usize / 8, 2).unwrap();
        assert_too_large(huge.batch_for_step::<f64>(0, 0, 2), OP);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_too_large(short.sample::<f64, _>(usize::MAX / 4, &mut rng), OP);
        let batch = short.batch_for_step::<f32>(0, 0, 3).unwrap();
        assert_eq!((batch.input.dim(), batch.labels.len()), ((4, 3), 3));
    }

    #[test]
    fn chunks_too_large_to_allocate_are_errors() {
        let short = SyntheticTask::new(4, 2).unwrap();
        assert_too_large(
            short.chunks_for_step::<f32>(0, 0, usize::MAX, 1),
            "SyntheticTask::chunks_for_step",
        );
        let long = SyntheticTask::new(usize::MAX, 2).unwrap();
        let (labels, mut chunks) = long.chunks_for_step::<f32>(0, 0, 2, usize::MAX).unwrap();
        assert_eq!(labels.len(), 2);
        assert_too_large(chunks.next().unwrap(), "SyntheticChunks::next");
        assert!(chunks.next().is_none());
    }
}
