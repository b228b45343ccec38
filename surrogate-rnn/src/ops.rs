//! Small numeric helpers of the CPU backend: the gate activations and the size of a
//! parallel task.

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

/// The fewest elements one task of a parallel elementwise pass gets: about 5–20 µs of
/// vectorized work, well above rayon's cost of splitting off a task (≈ 1 µs), so small
/// arrays (tests, short sequences) run serially and large ones are split into tasks that
/// balance across busy cores. 2¹⁴ woke the other thread so often that the default trainer
/// run spent 17–19 % of its user time in the kernel (Xeon VM, 2 vCPUs).
pub(crate) const PAR_MIN_ELEMENTS: usize = 1 << 15;
