//! Small numeric helpers of the CPU backend: the gate activations and the parallel zip.

/// The logistic sigmoid `1 / (1 + e^{-x})` (see [`crate::Real::sigmoid`]).
#[inline(always)]
pub(crate) fn sigmoid<E: crate::Real>(x: E) -> E {
    x.sigmoid()
}

/// `tanh(x)` (see [`crate::Real::gate_tanh`]).
#[inline(always)]
pub(crate) fn tanh<E: crate::Real>(x: E) -> E {
    x.gate_tanh()
}

/// The fewest elements one task of a parallel elementwise pass gets: about 10–50 µs of
/// work, well above rayon's cost of splitting off a task (≈ 1 µs), so small arrays (tests,
/// short sequences) run serially and large ones are split into many tasks that balance
/// across busy cores.
pub(crate) const PAR_MIN_ELEMENTS: usize = 1 << 14;

/// `Zip::from(a).and(b)…` run in parallel on rayon's pool: the arrays are split along their
/// rows into tasks of at least [`PAR_MIN_ELEMENTS`] elements, and `body` runs once per
/// element with the same expression as a serial `for_each`, so every result is bit-for-bit
/// the serial one whatever the number of threads.
///
/// `par_zip!((&mut out, &x, &y), |o, &x, &y| *o = x * y)`.
macro_rules! par_zip {
    (($first:expr $(, $rest:expr)* $(,)?), |$($p:pat_param),+ $(,)?| $body:expr) => {{
        use ::ndarray::parallel::prelude::*;
        ::ndarray::Zip::from($first)
            $(.and($rest))*
            .into_par_iter()
            .with_min_len($crate::ops::PAR_MIN_ELEMENTS)
            .for_each(|($($p,)+)| $body)
    }};
}
pub(crate) use par_zip;
