//! One-hot inputs as an index lookup.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Ix2};

use crate::init::Initializer;
use crate::param::{ParamVisitor, ParamVisitorMut};
use crate::workspace::Workspace;
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

    /// The equivalent dense `(T, B, vocab)` array (for tests and dense-input models).
    pub fn to_dense(&self) -> Array3<E> {
        let (n_steps, n_batch) = self.dim();
        let mut dense = Array3::zeros((n_steps, n_batch, self.vocab));
        for ((t, b), &i) in self.index.indexed_iter() {
            dense[[t, b, i as usize]] = self.value[[t, b]];
        }
        dense
    }
}

/// Maps scaled one-hot inputs to dense vectors by row lookup: `y_{t,b} = value·W[index]`,
/// `W` of shape `(vocab, d)` — the product `x·W` without ever forming `x`.
///
/// Backward: `∂W[index_{t,b}] += value_{t,b}·∂y_{t,b}` (a scatter-add, run serially so
/// results are deterministic); no input gradient (indices are not differentiable).
#[derive(Clone, Debug)]
pub struct Embedding<E: Real> {
    /// `W`, shape `(vocab, d)`.
    pub table: Param<E, Ix2>,
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

    /// Looks up `(T, B)` one-hot inputs, returning `(T, B, d)`.
    pub fn forward(&self, input: &OneHotSequence<E>) -> Result<Array3<E>, ModelError> {
        self.forward_with(input, &Workspace::unpooled())
    }

    /// [`Embedding::forward`] with its output taken from `ws`.
    pub(crate) fn forward_with(
        &self,
        input: &OneHotSequence<E>,
        ws: &Workspace<E>,
    ) -> Result<Array3<E>, ModelError> {
        self.check("Embedding::forward", input)?;
        let (n_steps, n_batch) = input.dim();
        // Every row is written below.
        let mut out = ws.scratch((n_steps, n_batch, self.output_size()));
        for (mut row, (&i, &v)) in out
            .rows_mut()
            .into_iter()
            .zip(input.index.iter().zip(input.value.iter()))
        {
            let source = self.table.value.row(i as usize);
            row.zip_mut_with(&source, |y, &w| *y = v * w);
        }
        Ok(out)
    }

    /// Accumulates `∂W` from ∂L/∂output `(T, B, d)`.
    pub fn backward(
        &mut self,
        input: &OneHotSequence<E>,
        grad_output: ArrayView3<'_, E>,
    ) -> Result<(), ModelError> {
        self.check("Embedding::backward", input)?;
        let (n_steps, n_batch) = input.dim();
        crate::error::check_shape(
            "Embedding::backward",
            "grad_output",
            &[n_steps, n_batch, self.output_size()],
            grad_output.shape(),
        )?;
        for (row, (&i, &v)) in grad_output
            .rows()
            .into_iter()
            .zip(input.index.iter().zip(input.value.iter()))
        {
            let mut target = self.table.grad.row_mut(i as usize);
            target.zip_mut_with(&row, |g, &d| *g = *g + v * d);
        }
        Ok(())
    }
}

params_from_fields!(Embedding: table);
