//! # scan-core
//!
//! The linear recurrence `h_t = a_t ⊙ h_{t-1} + x_t` over `T` time steps and `F`
//! independent features: its associative operator ([`AffineStep`]), the problem description
//! ([`ForwardInputs`], [`BackwardInputs`], [`Direction`]), the trait every backend implements
//! ([`LinearScan`]), the serial [`Reference`] that every test compares against, and the
//! error type ([`ScanError`]).
//!
//! Design decision: this crate is the cheap-to-depend-on contract between models and
//! backends. It holds no unsafe code and depends on neither rayon nor cust, so a model
//! crate can be generic over backends without pulling any of them in.
//!
//! ```
//! use ndarray::array;
//! use scan_core::{Direction, ForwardInputs, LinearScan, Reference};
//!
//! let decay = array![[0.9_f32, 0.0], [0.9, 1.0]];
//! let impulse = array![[1.0_f32, 2.0], [1.0, 0.0]];
//! let initial = array![10.0_f32, 5.0];
//! let h = Reference.forward(ForwardInputs {
//!     decay: decay.view(),
//!     impulse: impulse.view(),
//!     initial: Some(initial.view()),
//!     direction: Direction::Forward,
//! })?;
//! // Feature 0 decays from 10; feature 1 is reset by its decay of 0, then held by a decay of 1.
//! assert_eq!(h, array![[10.0, 2.0], [10.0, 2.0]]);
//! # Ok::<(), scan_core::ScanError>(())
//! ```
//!
//! ## Semantics users rely on
//!
//! * **State carrying.** Running a sequence in pieces, each piece's `initial` being the
//!   previous piece's last state, gives the same states as one run (up to rounding). For
//!   gradients, pass the next piece's ∂L/∂h0 as this piece's `grad_last` and process the
//!   pieces last to first.
//!
//!   ```
//!   use ndarray::{s, Array2};
//!   use scan_core::{BackwardInputs, Direction, ForwardInputs, LinearScan, Reference};
//!
//!   let decay = Array2::from_shape_fn((10, 3), |(t, f)| 0.5 + 0.04 * (t + f) as f64);
//!   let impulse = Array2::from_shape_fn((10, 3), |(t, f)| (t as f64 - f as f64).sin());
//!   let forward = |decay, impulse, initial| {
//!       Reference.forward(ForwardInputs { decay, impulse, initial, direction: Direction::Forward })
//!   };
//!   let whole = forward(decay.view(), impulse.view(), None)?;
//!   let first = forward(decay.slice(s![..4, ..]), impulse.slice(s![..4, ..]), None)?;
//!   let second = forward(decay.slice(s![4.., ..]), impulse.slice(s![4.., ..]), Some(first.row(3)))?;
//!   assert!((&second - &whole.slice(s![4.., ..])).iter().all(|d| d.abs() < 1e-12));
//!
//!   // Gradients: the later piece first; its ∂L/∂h0 is the earlier piece's `grad_last`.
//!   let dh = Array2::<f64>::ones((10, 3));
//!   let backward = |decay, state, grad_state, initial, grad_last| {
//!       Reference.backward(BackwardInputs {
//!           decay, state, initial, grad_state, grad_last, direction: Direction::Forward,
//!       })
//!   };
//!   let all = backward(decay.view(), whole.view(), dh.view(), None, None)?;
//!   let (late, early) = (s![4.., ..], s![..4, ..]);
//!   let later = backward(decay.slice(late), whole.slice(late), dh.slice(late), Some(whole.row(3)), None)?;
//!   let earlier = backward(
//!       decay.slice(early), whole.slice(early), dh.slice(early), None, Some(later.initial.view()),
//!   )?;
//!   assert!((&earlier.impulse - &all.impulse.slice(early)).iter().all(|d| d.abs() < 1e-12));
//!   # Ok::<(), scan_core::ScanError>(())
//!   ```
//! * **Sequence boundaries.** A decay of exactly 0 at step t makes `h_t = x_t`: the state
//!   is reset there, so several sequences can be packed into one. A step with decay 1 and
//!   impulse 0 leaves the state unchanged, so padding never alters a result.
//!
//!   ```
//!   use ndarray::array;
//!   use scan_core::{Direction, ForwardInputs, LinearScan, Reference};
//!
//!   // Two sequences [1, 2] and [3] packed into one, then one padding step.
//!   let decay = array![[0.5_f32], [0.5], [0.0], [1.0]];
//!   let impulse = array![[1.0_f32], [2.0], [3.0], [0.0]];
//!   let h = Reference.forward(ForwardInputs {
//!       decay: decay.view(),
//!       impulse: impulse.view(),
//!       initial: None,
//!       direction: Direction::Forward,
//!   })?;
//!   assert_eq!(h, array![[1.0], [2.5], [3.0], [3.0]]);
//!   # Ok::<(), scan_core::ScanError>(())
//!   ```
//! * **Empty problems.** T = 0 or F = 0 is a valid no-op (with T = 0 the gradient on the
//!   initial state is `grad_last`).
//! * **Non-finite values: the serial recurrence's IEEE result is the contract.** The loop
//!   `h = a·h + x`, run step by step in the element type (with or without a fused
//!   multiply-add), defines every result. Each backend returns, at every position, a value
//!   of the same IEEE class as that loop: NaN exactly where it gives NaN, +∞ or −∞ exactly
//!   where it gives that infinity, a finite value (within [`tolerance`]) where it is finite.
//!   The same holds backward for ∂L/∂x and ∂L/∂h0 (the same recurrence run the other way);
//!   ∂L/∂a is the product `h_{t−1}·g_t` of the given state and the backend's `g_t`.
//!
//!   *What is promised, and when.* The classes above are guaranteed whenever every decay
//!   is finite with `|a| ≤ 1` (the gates of the models in this workspace) and the finite
//!   values cannot overflow (e.g. `Σ|x_t| + |h0|` below the type's maximum); impulses,
//!   initial states and gradients may hold any values, ±∞ and NaN included. Under those
//!   conditions a non-finite value can only come from a non-finite input, and the serial
//!   loop's rules carry over exactly to any reassociation: an infinity times a nonzero
//!   decay stays infinite, so a state never returns from ±∞ or NaN to a finite value; an
//!   exact decay of 0 turns ±∞ into NaN (`0·∞`), never back into a reset; infinities of
//!   opposite sign meeting give NaN in any association, of equal sign ±∞. The one trap of a
//!   parallel composition is a product of decays that underflows to 0 (two decays of
//!   1e-30 in f32) and then multiplies an infinity: that gives NaN where the serial loop
//!   keeps ∞. Backends avoid it — `scan-cpu` continues with the serial loop from the first
//!   non-finite state it meets, and `scan-cuda` forms products of decays that never
//!   underflow to 0 from nonzero factors — and the conformance suite checks it
//!   (`conformance::check_ieee_forward` and the fixed cases of `check_ieee_cases`).
//!
//!   *Outside those conditions* (decays above 1 in magnitude or infinite) no association
//!   but the serial one gives the serial result: a product of decays over a chunk can
//!   overflow where the serial states stay finite, and the reverse (`1e20·1e-20` composes
//!   to 1 while the serial state overflows first). Backends then agree with the serial loop
//!   only where no intermediate overflows, and never panic. For ∂L/∂a, a `g_t` that is 0
//!   in one backend and a rounding-sized nonzero in another gives NaN against ±∞ where
//!   `h_{t−1}` is infinite.
//! * **Determinism.** Every backend in this workspace returns bit-identical results from
//!   run to run for the same inputs, machine, build and thread count. Different backends
//!   (or thread counts) agree up to rounding, with the tolerances of [`tolerance`].
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod backend;
mod buffer;
mod chunk_map;
mod element;
mod error;
pub mod layout;
mod operator;
mod problem;
mod reference;
pub mod tolerance;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backend::{Gradients, LinearScan};
pub use chunk_map::{backward_chunk_map, forward_chunk_map, ChunkMap};
pub use element::Element;
pub use error::ScanError;
pub use operator::AffineStep;
pub use problem::{
    BackwardInputs, BackwardOutputs, BackwardProblem, Direction, ForwardInputs, ForwardProblem,
    ScanShape,
};
pub use reference::{copy_or_zero, Reference};
