//! The floating-point types models run on.

use ndarray::{LinalgScalar, ScalarOperand};
use scan_core::Element;

/// A floating-point type a model runs on: `f32` (training) or `f64` (gradient checks).
///
/// It adds to [`scan_core::Element`] what the models need: ndarray's matrix products and
/// scalar operations, and a fixed little-endian byte encoding for checkpoints.
pub trait Real: Element + LinalgScalar + ScalarOperand {
    /// The safetensors dtype of this type.
    const DTYPE: safetensors::Dtype;

    /// Appends the little-endian bytes of `self` to `out`.
    fn write_le(self, out: &mut Vec<u8>);

    /// Reads one value from exactly `size_of::<Self>()` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;

    /// The logistic sigmoid `1 / (1 + e^{-x})` of the CPU backend's gate passes: inlined
    /// polynomials in f32 (within 3 units of f32's epsilon), the standard library in f64.
    fn sigmoid(self) -> Self;

    /// `tanh` of the CPU backend's gate passes, computed as [`Real::sigmoid`] is.
    fn gate_tanh(self) -> Self;
}

impl Real for f32 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F32;

    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }

    fn read_le(bytes: &[u8]) -> Self {
        let mut raw = [0_u8; 4];
        raw.copy_from_slice(bytes);
        f32::from_le_bytes(raw)
    }

    #[inline(always)]
    fn sigmoid(self) -> Self {
        crate::activation::sigmoid(self)
    }

    #[inline(always)]
    fn gate_tanh(self) -> Self {
        crate::activation::tanh(self)
    }
}

impl Real for f64 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F64;

    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }

    fn read_le(bytes: &[u8]) -> Self {
        let mut raw = [0_u8; 8];
        raw.copy_from_slice(bytes);
        f64::from_le_bytes(raw)
    }

    #[inline(always)]
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + (-self).exp())
    }

    #[inline(always)]
    fn gate_tanh(self) -> Self {
        self.tanh()
    }
}
