//! The floating-point types a scan runs on.

use std::fmt::{Debug, Display};

use num_traits::Float;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element of a scan: `f32` or `f64`.
///
/// The trait is sealed: backends may specialise their kernels for exactly these two
/// types, and the conformance suite states one tolerance per type.
pub trait Element:
    Float + Debug + Display + Default + Send + Sync + 'static + sealed::Sealed
{
    /// The type's name, as used in error messages and benchmark labels.
    const NAME: &'static str;

    /// Converts from `f64`, rounding to nearest.
    fn from_f64(value: f64) -> Self;

    /// Converts to `f64` exactly (named apart from `ToPrimitive::to_f64`, which returns an `Option`).
    fn as_f64(self) -> f64;
}

impl Element for f32 {
    const NAME: &'static str = "f32";

    fn from_f64(value: f64) -> Self {
        value as f32
    }

    fn as_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";

    fn from_f64(value: f64) -> Self {
        value
    }

    fn as_f64(self) -> f64 {
        self
    }
}
