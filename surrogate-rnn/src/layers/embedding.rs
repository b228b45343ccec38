//! One-hot inputs as an index lookup.

use ndarray::{s, Array2, Array3, ArrayView2, Ix2};

use crate::backend::host::try_filled;
use crate::backend::Backend;
use crate::init::Initializer;
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::{ModelError, Param, Parameters, Real};

/// A `(T, B)` batch of scaled one-hot vectors: `x_{t,b} = value[t,b] · e_{index[t,b]}` in
/// `vocab` dimensions. The paper's task is exactly this: `x_0 = ±e_1` (value ±1), then
/// plain one-hot vectors (value 1).
#[derive(Clone, Debug, PartialEq)]
pub struct OneHotSequence<E> {
    index: Array2<u32>,
    value: Array2<E>,
    vocab: usize,
}

impl<E: Real> OneHotSequence<E> {
    /// Validates that `index` and `value` are both `(T, B)` and every index is `< vocab`.
    pub fn new(index: Array2<u32>, value: Array2<E>, vocab: usize) -> Result<Self, ModelError> {
        crate::error::check_shape("OneHotSequence::new", "value", index.shape(), value.shape())?;
        // Row-major storage, so that each step is a contiguous run of B entries; arrays
        // already stored so are kept rather than copied.
        let index = standard_layout(index);
        let value = standard_layout(value);
        if let Some(bad) = index.iter().find(|&&i| i as usize >= vocab) {
            return Err(ModelError::InvalidInput {
                operation: "OneHotSequence::new",
                reason: format!("index {bad} is out of range for a vocabulary of {vocab}"),
            });
        }
        Ok(Self {
            index,
            value,
            vocab,
        })
    }

    /// The hot positions, `(T, B)`.
    pub fn index(&self) -> ArrayView2<'_, u32> {
        self.index.view()
    }

    /// The scale of each one-hot vector, `(T, B)`.
    pub fn value(&self) -> ArrayView2<'_, E> {
        self.value.view()
    }

    /// The dimension of the one-hot vectors.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// `(T, B)`.
    pub fn dim(&self) -> (usize, usize) {
        self.index.dim()
    }

    /// Steps `start..start + len`, copied (a chunk of a longer sequence).
    pub fn steps(&self, start: usize, len: usize) -> Result<Self, ModelError> {
        let n_steps = self.dim().0;
        if start.checked_add(len).is_none_or(|end| end > n_steps) {
            return Err(ModelError::InvalidInput {
                operation: "OneHotSequence::steps",
                reason: format!("steps {start}..{start}+{len} of a sequence of {n_steps}"),
            });
        }
        Ok(Self {
            index: self.index.slice(s![start..start + len, ..]).to_owned(),
            value: self.value.slice(s![start..start + len, ..]).to_owned(),
            vocab: self.vocab,
        })
    }

    /// The indices in time-major order and the scales as a `(T·B, 1)` column.
    fn flat(&self, operation: &'static str) -> Result<(&[u32], ArrayView2<'_, E>), ModelError> {
        let not_contiguous = || ModelError::InvalidInput {
            operation,
            reason: "the one-hot arrays are not contiguous".into(),
        };
        let index = self.index.as_slice().ok_or_else(not_contiguous)?;
        let value = self.value.as_slice().ok_or_else(not_contiguous)?;
        let value =
            ArrayView2::from_shape((value.len(), 1), value).map_err(|_| not_contiguous())?;
        Ok((index, value))
    }

    /// The equivalent dense `(T, B, vocab)` array (for tests and dense-input models); an
    /// error when it is too large to allocate.
    pub fn to_dense(&self) -> Result<Array3<E>, ModelError> {
        let (n_steps, n_batch) = self.dim();
        let shape = (n_steps, n_batch, self.vocab);
        let mut dense = try_filled(shape, E::zero()).ok_or_else(|| ModelError::InvalidInput {
            operation: "OneHotSequence::to_dense",
            reason: format!("a dense {shape:?} array is too large to allocate"),
        })?;
        for ((t, b), &i) in self.index.indexed_iter() {
            dense[[t, b, i as usize]] = self.value[[t, b]];
        }
        Ok(dense)
    }
}

/// `array` in row-major storage, copied only if it is not already.
fn standard_layout<T: Clone>(array: Array2<T>) -> Array2<T> {
    if array.is_standard_layout() {
        array
    } else {
        array.as_standard_layout().into_owned()
    }
}

/// Maps scaled one-hot inputs to dense vectors by row lookup: `y_{t,b} = value·W[index]`,
/// `W` of shape `(vocab, d)` — the product `x·W` without ever forming `x`.
///
/// Backward: `∂W[index_{t,b}] += value_{t,b}·∂y_{t,b}` (a scatter-add, run serially so
/// results are deterministic); no input gradient (indices are not differentiable).
#[derive(Clone, Debug)]
pub struct Embedding<E: Real> {
    table: Param<E, Ix2>,
}

impl<E: Real> Embedding<E> {
    pub(crate) fn init(init: &mut Initializer, vocab: usize, dim: usize) -> Self {
        Self {
            table: Param::new(init.glorot(vocab, dim)),
        }
    }

    /// The vocabulary size.
    pub fn vocab(&self) -> usize {
        self.table.value.nrows()
    }

    /// The output dimension d.
    pub fn output_size(&self) -> usize {
        self.table.value.ncols()
    }

    fn check(&self, operation: &'static str, input: &OneHotSequence<E>) -> Result<(), ModelError> {
        crate::error::check_shape(operation, "vocabulary", &[self.vocab()], &[input.vocab])
    }

    /// Looks up `(T, B)` one-hot inputs, returning `(T·B, d)` rows.
    pub fn forward<B: Backend<E>>(
        &self,
        backend: &B,
        input: &OneHotSequence<E>,
    ) -> Result<B::Matrix, ModelError> {
        const OP: &str = "Embedding::forward";
        self.check(OP, input)?;
        let (index, scale) = input.flat(OP)?;
        // Every row is written.
        let mut out = backend.scratch(index.len(), self.output_size())?;
        let table = backend.host(self.table.value.view());
        backend.embed(
            table,
            index,
            backend.host(scale),
            backend.view_mut(&mut out),
        )?;
        Ok(out)
    }

    /// Accumulates `∂W` from ∂L/∂output `(T·B, d)`.
    pub fn backward<B: Backend<E>>(
        &mut self,
        backend: &B,
        input: &OneHotSequence<E>,
        grad_output: B::View<'_>,
    ) -> Result<(), ModelError> {
        const OP: &str = "Embedding::backward";
        self.check(OP, input)?;
        let (index, scale) = input.flat(OP)?;
        let grad_table = backend.host_mut(self.table.grad.view_mut());
        backend.embed_backward(grad_output, index, backend.host(scale), grad_table)
    }
}

params_from_fields!(Embedding: table);

#[cfg(test)]
mod tests {
    use ndarray::{arr2, Array2};

    use super::*;

    #[test]
    fn to_dense_places_the_scaled_one_hot_vectors() {
        let input = OneHotSequence::new(arr2(&[[0, 2]]), arr2(&[[-1.0_f32, 0.5]]), 3).unwrap();
        let dense = input.to_dense().unwrap();
        assert_eq!(dense.dim(), (1, 2, 3));
        assert_eq!(
            dense.into_raw_vec_and_offset().0,
            [-1.0, 0.0, 0.0, 0.0, 0.0, 0.5]
        );
    }

    #[test]
    fn to_dense_of_a_huge_vocabulary_is_an_error() {
        // The element count overflows, then the byte count, then the allocation fails.
        for vocab in [usize::MAX, usize::MAX / 2, isize::MAX as usize / 4 - 1] {
            let input =
                OneHotSequence::<f32>::new(Array2::zeros((1, 1)), Array2::ones((1, 1)), vocab)
                    .unwrap();
            let err = input.to_dense().unwrap_err();
            assert!(err.to_string().contains("too large to allocate"), "{err}");
        }
    }
}
