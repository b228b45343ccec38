//! The affine-map operator is associative with identity (1, 0), and composing steps equals
//! applying them in turn.

use proptest::prelude::*;
use scan_core::AffineStep;

fn step() -> impl Strategy<Value = AffineStep<f64>> {
    (-2.0..2.0f64, -10.0..10.0f64).prop_map(|(a, x)| AffineStep::new(a, x))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
}

proptest! {
    #[test]
    fn composition_is_associative(p in step(), q in step(), r in step()) {
        let left = p.then(q).then(r);
        let right = p.then(q.then(r));
        prop_assert!(close(left.decay, right.decay), "{left:?} vs {right:?}");
        prop_assert!(close(left.impulse, right.impulse), "{left:?} vs {right:?}");
    }

    #[test]
    fn identity_is_neutral(p in step()) {
        prop_assert_eq!(AffineStep::identity().then(p), p);
        prop_assert_eq!(p.then(AffineStep::identity()), p);
    }

    #[test]
    fn composition_applies_in_order(p in step(), q in step(), h in -5.0..5.0f64) {
        prop_assert!(close(p.then(q).apply(h), q.apply(p.apply(h))));
    }

    #[test]
    fn composition_is_not_commutative_in_general(x1 in 1.0..2.0f64, x2 in 3.0..4.0f64) {
        // (0.5, x1) then (2, x2) vs the other order: differ unless special values.
        let p = AffineStep::new(0.5, x1);
        let q = AffineStep::new(2.0, x2);
        prop_assert!(!close(p.then(q).impulse, q.then(p).impulse));
    }
}
