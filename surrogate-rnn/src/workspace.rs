//! Reuse of the large activation and gradient buffers from one training step to the next.
//!
//! A training step allocates tens of `T·B·n` buffers. Fresh allocations of that size come
//! straight from `mmap`, so every step paid a page fault (and the kernel's zeroing) per
//! 4 KiB page, and `munmap` on drop: about a fifth of the step time at `T·B = 2¹⁶`. A
//! [`Workspace`] keeps the buffers a step gave back and hands them out again: with the
//! same shapes from step to step, every request after the first step is served from the
//! pool and touches memory that is already mapped.
//!
//! Buffers are plain `Vec<E>`s turned into ndarray arrays and back, so the public API
//! keeps returning ordinary owned arrays.

use std::sync::Mutex;

use ndarray::{Array, Array2, Dimension};

use crate::backend::host::{checked_len, try_zeros};
use crate::{ModelError, Real};

/// A buffer of exactly `rows·cols` elements as a matrix.
fn shaped<E>(buffer: Vec<E>, rows: usize, cols: usize) -> Result<Array2<E>, ModelError> {
    Array2::from_shape_vec((rows, cols), buffer).map_err(|_| ModelError::InvalidConfig {
        reason: format!("a {rows} × {cols} matrix has no valid layout"),
    })
}

/// A buffer and how many pool generations it has sat unused.
#[derive(Debug)]
struct Pooled<E> {
    buffer: Vec<E>,
    idle: u32,
}

/// A pool of buffers, or no pool at all (every request allocates, every give-back frees).
///
/// Memory bound: a buffer that stays in the pool through two whole generations (see
/// [`Workspace::next_generation`]) without being taken is freed, so a change of shapes
/// (another batch size, an evaluation pass) cannot make the pool grow without bound; in
/// steady state it holds exactly what one step uses at its peak.
#[derive(Debug, Default)]
pub(crate) struct Workspace<E> {
    pool: Option<Mutex<Vec<Pooled<E>>>>,
}

impl<E> Clone for Workspace<E> {
    /// A clone gets an empty pool of the same kind (buffers are never shared).
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.as_ref().map(|_| Mutex::new(Vec::new())),
        }
    }
}

impl<E: Real> Workspace<E> {
    /// A workspace that keeps nothing: requests allocate, give-backs free.
    #[cfg(test)]
    pub(crate) fn unpooled() -> Self {
        Self { pool: None }
    }

    /// A workspace that keeps given-back buffers for later requests.
    pub(crate) fn pooled() -> Self {
        Self {
            pool: Some(Mutex::new(Vec::new())),
        }
    }

    /// Starts a new generation: frees the buffers that were not taken during the previous
    /// two generations. Call once per training step or inference pass.
    pub(crate) fn next_generation(&self) {
        if let Some(pool) = &self.pool {
            let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.retain_mut(|p| {
                p.idle += 1;
                p.idle <= 2
            });
        }
    }

    /// The smallest pooled buffer that can hold `len` elements (contents unspecified), or
    /// `None`.
    fn take(&self, len: usize) -> Option<Vec<E>> {
        let pool = self.pool.as_ref()?;
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        let best = pool
            .iter()
            .enumerate()
            // A buffer more than twice too large is left for a larger request.
            .filter(|(_, p)| (len..=2 * len.max(1)).contains(&p.buffer.capacity()))
            .min_by_key(|(_, p)| p.buffer.capacity())
            .map(|(k, _)| k)?;
        Some(pool.swap_remove(best).buffer)
    }

    /// A `(rows, cols)` matrix filled with zeros.
    pub(crate) fn zeros(&self, rows: usize, cols: usize) -> Result<Array2<E>, ModelError> {
        let len = checked_len::<E>(rows, cols)?;
        match self.take(len) {
            Some(mut buffer) => {
                buffer.clear();
                buffer.resize(len, E::zero());
                shaped(buffer, rows, cols)
            }
            None => try_zeros(rows, cols),
        }
    }

    /// A `(rows, cols)` matrix whose contents are unspecified (stale values from an
    /// earlier use, or zeros): the caller must write every element before reading any.
    pub(crate) fn scratch(&self, rows: usize, cols: usize) -> Result<Array2<E>, ModelError> {
        let len = checked_len::<E>(rows, cols)?;
        match self.take(len) {
            Some(mut buffer) => {
                if buffer.len() >= len {
                    buffer.truncate(len);
                } else {
                    buffer.resize(len, E::zero());
                }
                shaped(buffer, rows, cols)
            }
            None => try_zeros(rows, cols),
        }
    }

    /// Gives `array`'s buffer back for later requests (or frees it without a pool).
    pub(crate) fn give_back<D: Dimension>(&self, array: Array<E, D>) {
        let Some(pool) = &self.pool else { return };
        let (buffer, _offset) = array.into_raw_vec_and_offset();
        if buffer.capacity() == 0 {
            return;
        }
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.push(Pooled { buffer, idle: 0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_buffers_are_reused_and_zeroed_on_request() {
        let ws = Workspace::<f32>::pooled();
        let mut a = ws.scratch(4, 8).unwrap();
        a.fill(3.0);
        let pointer = a.as_ptr();
        ws.give_back(a);
        let b = ws.zeros(2, 8).unwrap();
        assert_eq!(b.as_ptr(), pointer, "the pooled buffer is reused");
        assert!(b.iter().all(|&v| v == 0.0));
        ws.give_back(b);
        let c = ws.scratch(5, 8).unwrap();
        assert_ne!(c.as_ptr(), pointer, "a too-small buffer is not used");
        assert_eq!(c.dim(), (5, 8));
    }

    #[test]
    fn idle_buffers_are_freed_after_two_generations() {
        let ws = Workspace::<f64>::pooled();
        ws.give_back(ws.scratch(1, 16).unwrap());
        ws.next_generation();
        ws.next_generation();
        assert!(ws.take(16).is_some());
        ws.give_back(ws.scratch(1, 16).unwrap());
        for _ in 0..3 {
            ws.next_generation();
        }
        assert!(ws.take(16).is_none());
    }

    #[test]
    fn unpooled_keeps_nothing() {
        let ws = Workspace::<f32>::unpooled();
        ws.give_back(ws.zeros(1, 8).unwrap());
        assert!(ws.take(8).is_none());
    }
}
