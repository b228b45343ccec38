//! The layers and the contract they share.
//!
//! Activations are time-major `(T, B, features)` arrays. A layer's `forward` returns its
//! output and a cache of what its hand-derived `backward` needs; `backward` takes the
//! input and output again (the caller keeps them anyway, as the next layer's input and
//! this layer's output), consumes the cache (its buffers are reused for gradients),
//! accumulates ∂L/∂parameters into the layers' [`crate::Param::grad`]s and returns
//! ∂L/∂input.
//!
//! Recurrent layers keep their gates in a gate-major `(G, T·B, n)` array: each gate block
//! is one contiguous `(T·B, n)` matrix — the output of one matrix product — and, seen as
//! `(T, B·n)`, exactly the `(T, F)` problem of the scan backend, with no copy.

/// `Parameters` for a layer whose parameters are the listed `Param` fields, each visited
/// under its field name.
macro_rules! params_from_fields {
    ($layer:ident: $($field:ident),+) => {
        impl<E: Real> Parameters<E> for $layer<E> {
            fn visit_params(&self, visitor: &mut ParamVisitor<'_, E>) {
                $(
                    let (value, grad) = self.$field.views();
                    visitor(stringify!($field), value, grad);
                )+
            }

            fn visit_params_mut(&mut self, visitor: &mut ParamVisitorMut<'_, E>) {
                $(visitor(stringify!($field), self.$field.views_mut());)+
            }
        }
    };
}

/// The `Layer::forward` and `Layer::backward` of a layer whose real work is in
/// `forward_with` / `backward_with` (which draw buffers from a [`crate::workspace`]
/// pool): standalone calls use an unpooled workspace.
macro_rules! unpooled_layer_entry_points {
    ($cache:ty) => {
        fn forward(
            &self,
            scan: &dyn LinearScan<E>,
            input: ArrayView3<'_, E>,
        ) -> Result<(Array3<E>, $cache), ModelError> {
            self.forward_with(scan, input, &Workspace::unpooled())
        }

        fn backward(
            &mut self,
            scan: &dyn LinearScan<E>,
            input: ArrayView3<'_, E>,
            output: ArrayView3<'_, E>,
            cache: $cache,
            grad_output: ArrayView3<'_, E>,
        ) -> Result<Array3<E>, ModelError> {
            let ws = Workspace::unpooled();
            self.backward_with(scan, input, output, cache, grad_output, &ws)
        }
    };
}

mod dense;
mod embedding;
mod gilr;
mod gilr_lstm;
mod lstm;
mod qrnn;
mod sru;

pub use dense::Dense;
pub use embedding::{Embedding, OneHotSequence};
pub use gilr::{Gilr, GilrCache};
pub use gilr_lstm::{GilrLstm, GilrLstmCache};
pub use lstm::{Lstm, LstmCache};
pub use qrnn::{Qrnn, QrnnCache};
pub use sru::{Sru, SruCache};

use ndarray::{Array3, ArrayView3};
use scan_core::LinearScan;

use crate::{ModelError, Parameters, Real};

/// A layer mapping `(T, B, input_size)` sequences to `(T, B, output_size)` sequences.
pub trait Layer<E: Real>: Parameters<E> {
    /// What `forward` saves for `backward`.
    type Cache;

    /// The number of input features m.
    fn input_size(&self) -> usize;

    /// The number of output features n.
    fn output_size(&self) -> usize;

    /// Computes the output for `input` `(T, B, m)`; linear recurrences run on `scan`.
    fn forward(
        &self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
    ) -> Result<(Array3<E>, Self::Cache), ModelError>;

    /// Given the `input` and `output` of the matching `forward` call, its `cache` and
    /// ∂L/∂output, accumulates the parameter gradients and returns ∂L/∂input.
    fn backward(
        &mut self,
        scan: &dyn LinearScan<E>,
        input: ArrayView3<'_, E>,
        output: ArrayView3<'_, E>,
        cache: Self::Cache,
        grad_output: ArrayView3<'_, E>,
    ) -> Result<Array3<E>, ModelError>;
}

/// Checks a layer input's feature count, returning `(T, B)`.
pub(crate) fn check_input<E>(
    operation: &'static str,
    input: &ArrayView3<'_, E>,
    input_size: usize,
) -> Result<(usize, usize), ModelError> {
    let (n_steps, n_batch, m) = input.dim();
    crate::error::check_shape(
        operation,
        "input",
        &[n_steps, n_batch, input_size],
        &[n_steps, n_batch, m],
    )?;
    Ok((n_steps, n_batch))
}

/// Checks that `(input, output, grad_output)` of a backward call fit together.
pub(crate) fn check_backward<E>(
    operation: &'static str,
    input: &ArrayView3<'_, E>,
    input_size: usize,
    output: &ArrayView3<'_, E>,
    grad_output: &ArrayView3<'_, E>,
    output_size: usize,
) -> Result<(usize, usize), ModelError> {
    let (n_steps, n_batch) = check_input(operation, input, input_size)?;
    let expected = [n_steps, n_batch, output_size];
    crate::error::check_shape(operation, "output", &expected, output.shape())?;
    crate::error::check_shape(operation, "grad_output", &expected, grad_output.shape())?;
    Ok((n_steps, n_batch))
}
