//! The gate activations in f32 without library calls: `e^x`, the logistic sigmoid and
//! `tanh` as branch-free polynomial evaluations that the compiler inlines into the gate
//! passes and vectorizes. A libm call per element was most of the LSTM cell's time and a
//! sixth of a GILR-LSTM training step (issue 12). Each is within a few units in the last
//! place of the exact value (tested against f64 below); f64 keeps the standard library's
//! functions, which the gradient checks compare against finite differences.

/// `ln 2` split so that `n · LN2_HI` is exact for the `n` that [`exp`] meets.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Rounds to the nearest integer when added and subtracted (`1.5 · 2²³`).
const ROUND: f32 = 12_582_912.0;
/// Inputs beyond these bounds are clamped: `e^x` stays a normal, finite number.
const EXP_MIN: f32 = -87.3;
const EXP_MAX: f32 = 88.3;

/// `e^x`, clamped to `[e^-87.3, e^88.3]`; NaN gives NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    // x = n·ln 2 + r with |r| ≤ ln 2 / 2, then e^x = 2^n · e^r.
    let rounded = x * std::f32::consts::LOG2_E + ROUND;
    let n = rounded - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r = 1 + r + r²·q(r), fitted for relative error on |r| ≤ ln 2 / 2.
    let q = 1.381_463e-3;
    let q = q * r + 8.368_711e-3;
    let q = q * r + 4.166_839e-2;
    let q = q * r + 1.666_652_1e-1;
    let q = q * r + 4.999_999_4e-1;
    let e_r = 1.0 + r + r * r * q;
    // 2^n built from its exponent bits; the clamp keeps n in [-126, 127]. `rounded` holds
    // n in its low mantissa bits (its bits are those of ROUND plus n), which gives n as an
    // integer without a float-to-int conversion: Rust's saturating `as` has no vector
    // instruction, so it kept the gate passes scalar.
    let n_bits = rounded.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    e_r * scale
}

/// The logistic sigmoid `1 / (1 + e^{-x})`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Below this magnitude `tanh` is a polynomial, above it `1 − 2 / (e^{2|x|} + 1)` (which
/// would lose accuracy to cancellation near 0).
const TANH_SMALL: f32 = 0.55;

/// The hyperbolic tangent; `tanh(±0) = ±0`, NaN gives NaN.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    // tanh(x) = x·(1 + x²·p(x²)) for |x| < 0.55, fitted for relative error (and ±0 kept).
    let z = x * x;
    let p = -6.274_240_6e-3;
    let p = p * z + 2.107_168e-2;
    let p = p * z - 5.385_231_2e-2;
    let p = p * z + 1.333_258_6e-1;
    let p = p * z - 3.333_331_6e-1;
    let small = x * (1.0 + z * p);
    let large = (1.0 - 2.0 / (exp(2.0 * x.abs()) + 1.0)).copysign(x);
    if x.abs() < TANH_SMALL {
        small
    } else {
        large
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error of `ours` against the exact `exact`, in units of f32's epsilon.
    fn epsilons(ours: f32, exact: f64) -> f64 {
        if exact == 0.0 {
            return f64::from(ours).abs() / f64::from(f32::MIN_POSITIVE);
        }
        ((f64::from(ours) - exact) / exact).abs() / f64::from(f32::EPSILON)
    }

    /// Every 1009th f32 between `lo` and `hi` (both signs of zero, subnormals and all).
    fn sweep(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        let key = |x: f32| {
            let bits = x.to_bits() as i64;
            if bits < 0x8000_0000 {
                bits
            } else {
                0x8000_0000 - bits
            }
        };
        let unkey = |k: i64| {
            if k >= 0 {
                f32::from_bits(k as u32)
            } else {
                f32::from_bits((0x8000_0000 - k) as u32)
            }
        };
        (key(lo)..=key(hi)).step_by(1009).map(unkey).chain([lo, hi])
    }

    #[test]
    fn exp_is_within_two_epsilons() {
        let worst = sweep(-87.0, 88.0)
            .map(|x| epsilons(exp(x), f64::from(x).exp()))
            .fold(0.0, f64::max);
        assert!(worst <= 2.0, "{worst}");
    }

    #[test]
    fn sigmoid_is_within_three_epsilons() {
        let worst = sweep(-87.0, 30.0)
            .map(|x| epsilons(sigmoid(x), 1.0 / (1.0 + (-f64::from(x)).exp())))
            .fold(0.0, f64::max);
        assert!(worst <= 3.0, "{worst}");
    }

    #[test]
    fn tanh_is_within_three_epsilons() {
        let worst = sweep(-30.0, 30.0)
            .map(|x| epsilons(tanh(x), f64::from(x).tanh()))
            .fold(0.0, f64::max);
        assert!(worst <= 3.0, "{worst}");
    }

    #[test]
    fn special_values() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert!(sigmoid(f32::NEG_INFINITY) < 1e-37);
        assert!(sigmoid(f32::NAN).is_nan());
        assert_eq!(tanh(0.0).to_bits(), 0.0_f32.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0_f32).to_bits());
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(1000.0).is_finite() && exp(-1000.0) > 0.0);
    }
}
