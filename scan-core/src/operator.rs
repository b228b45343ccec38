//! The associative operator of the linear recurrence.

use crate::Element;

/// One step of the recurrence as an affine map `h ↦ decay · h + impulse`.
///
/// Composition ([`AffineStep::then`]) is associative with identity
/// [`AffineStep::identity`], which is what lets any prefix-scan algorithm evaluate the
/// recurrence: the state after steps `1..=t` is the composition of those steps
/// applied to the initial state.
///
/// ```
/// use scan_core::AffineStep;
/// let first = AffineStep::new(0.5_f64, 1.0);
/// let second = AffineStep::new(2.0, 3.0);
/// let both = first.then(second);
/// assert_eq!(both.apply(4.0), second.apply(first.apply(4.0)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineStep<E> {
    /// The multiplicative decay `a`.
    pub decay: E,
    /// The additive impulse `x`.
    pub impulse: E,
}

impl<E: Element> AffineStep<E> {
    /// The step `h ↦ decay · h + impulse`.
    pub fn new(decay: E, impulse: E) -> Self {
        Self { decay, impulse }
    }

    /// The identity map `(1, 0)`.
    pub fn identity() -> Self {
        Self::new(E::one(), E::zero())
    }

    /// "First `self`, then `next`": `(a1, x1) ∘ (a2, x2) = (a1·a2, a2·x1 + x2)`.
    #[must_use]
    pub fn then(self, next: Self) -> Self {
        Self::new(
            self.decay * next.decay,
            next.decay * self.impulse + next.impulse,
        )
    }

    /// Applies the map to a state: `decay · state + impulse`.
    pub fn apply(self, state: E) -> E {
        self.decay * state + self.impulse
    }
}
