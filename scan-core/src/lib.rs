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
//! * **Non-finite values** follow IEEE arithmetic: a NaN or infinity in an input makes the
//!   states that depend on it non-finite. Backends that reassociate (the parallel ones) may
//!   produce NaN where the serial loop produces ±∞ (e.g. `∞·0` inside a combine), and a
//!   non-finite input may make later states of the same feature non-finite even across a
//!   decay of 0. With decays of magnitude at most 1, finite inputs never produce NaN;
//!   with larger decays, products of decays over a chunk can overflow to ∞ (and then NaN)
//!   in a parallel backend even where the serial loop's states stay finite.
//! * **Determinism.** Every backend in this workspace returns bit-identical results from
//!   run to run for the same inputs, machine, build and thread count. Different backends
//!   (or thread counts) agree up to rounding, with the tolerances of [`tolerance`].
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod backend;
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
