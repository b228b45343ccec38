//! The floating-point types models run on.

use ndarray::{LinalgScalar, ScalarOperand};
use scan_core::Element;

use crate::ModelError;

/// A floating-point type a model runs on: `f32` (training) or `f64` (gradient checks).
///
/// It adds to [`scan_core::Element`] what the models need: ndarray's matrix products and
/// scalar operations, and a fixed little-endian byte encoding for checkpoints.
pub trait Real: Element + LinalgScalar + ScalarOperand {
    /// The safetensors dtype of this type.
    const DTYPE: safetensors::Dtype;

    /// Appends the little-endian bytes of `self` to `out`.
    fn write_le(self, out: &mut Vec<u8>);

    /// Reads one value from its little-endian bytes; an error unless `bytes` holds exactly
    /// `size_of::<Self>()` of them.
    fn read_le(bytes: &[u8]) -> Result<Self, ModelError>;

    /// The logistic sigmoid `1 / (1 + e^{-x})` of the CPU backend's gate passes: inlined
    /// polynomials in f32 (within 3 units of f32's epsilon), the standard library in f64.
    fn sigmoid(self) -> Self;

    /// `tanh` of the CPU backend's gate passes, computed as [`Real::sigmoid`] is.
    fn gate_tanh(self) -> Self;
}

/// The error of [`Real::read_le`] for `len` bytes.
fn wrong_length<E: Real>(len: usize) -> ModelError {
    ModelError::InvalidInput {
        operation: "Real::read_le",
        reason: format!(
            "{len} bytes do not encode one {}, which takes {}",
            E::NAME,
            std::mem::size_of::<E>()
        ),
    }
}

impl Real for f32 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F32;

    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }

    fn read_le(bytes: &[u8]) -> Result<Self, ModelError> {
        let raw = bytes
            .try_into()
            .map_err(|_| wrong_length::<Self>(bytes.len()))?;
        Ok(f32::from_le_bytes(raw))
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

    fn read_le(bytes: &[u8]) -> Result<Self, ModelError> {
        let raw = bytes
            .try_into()
            .map_err(|_| wrong_length::<Self>(bytes.len()))?;
        Ok(f64::from_le_bytes(raw))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_le_round_trips_and_rejects_wrong_lengths() {
        let mut bytes = Vec::new();
        1.5_f32.write_le(&mut bytes);
        (-2.25_f64).write_le(&mut bytes);
        assert_eq!(<f32 as Real>::read_le(&bytes[..4]).unwrap(), 1.5);
        assert_eq!(<f64 as Real>::read_le(&bytes[4..]).unwrap(), -2.25);
        for (len, err) in [
            (3, <f32 as Real>::read_le(&[1, 2, 3]).unwrap_err()),
            (5, <f32 as Real>::read_le(&[0; 5]).unwrap_err()),
            (4, <f64 as Real>::read_le(&bytes[..4]).unwrap_err()),
            (0, <f64 as Real>::read_le(&[]).unwrap_err()),
        ] {
            let message = err.to_string();
            assert!(message.contains(&format!("{len} bytes")), "{message}");
        }
    }
}
