//! Feature blocks cut on cache lines, for rows that lie back to back off the line grid.
//!
//! Large arrays from the system allocator usually start 16 bytes past a 64-byte line, so
//! when rows lie back to back each row shares a line with the next, every vector load and
//! store straddles two lines, and features split across threads make both threads write
//! the lines where their blocks meet (false sharing). On the Xeon of issue 13 that cost
//! 40 % of the out-of-cache rate at (2²⁰, 64).
//!
//! Such a job equals one whose rows are shifted forward by the `s` elements up to the next
//! line boundary of the output: *shifted row* `i` is the `w` elements from row `i`'s
//! element `s` on, which are features `s..w` of one step and features `0..s` of the step
//! next to it in memory. Features are independent, so the shifted job computes every
//! feature's own recurrence with the state vector rotated by `s`, in the same order and
//! with the same roundings (the results are bit-identical); only the first step of the
//! features that run one step ahead and the last step of those that run one step behind
//! fall outside the shifted rows and are scanned on their own.

use std::ops::Range;

use scan_core::Element;

use crate::engine::Engine;
use crate::kernels::{self, Job};

/// Bytes per cache line.
const LINE: usize = 64;

/// How far to shift `job`'s rows so that the output's rows start on a cache line, where
/// that applies: rows back to back (the same signed stride, the width, in every
/// sequence), a whole number of lines per row (so every row has the output's first row's
/// offset), at least two lines per row, two rows or more, and an output off the grid.
fn line_shift<E>(job: &Job<E>) -> Option<usize> {
    let size = std::mem::size_of::<E>();
    let row_bytes = job.width.checked_mul(size)?;
    job.flat_stride()?;
    let offset = job.out.ptr as usize % LINE;
    let shift = (LINE - offset) % LINE / size;
    (job.n_rows >= 2
        && row_bytes >= 2 * LINE
        && row_bytes.is_multiple_of(LINE)
        && offset.is_multiple_of(size))
    .then_some(shift)
    .filter(|&shift| shift > 0)
}

impl Engine {
    /// Runs `job` as feature blocks of about `w / threads` columns, one loop over time each,
    /// on cache-line boundaries where [`line_shift`] applies (see the module doc).
    ///
    /// # Safety
    /// As for [`kernels::scan`].
    pub(crate) unsafe fn feature_split<E: Element>(&self, job: &Job<E>, carry: &mut [E]) {
        let (n, w) = (job.n_rows, job.width);
        let threads = self.plan.threads;
        let Some(shift) = line_shift(job) else {
            let per_thread = w.div_ceil(threads).next_multiple_of(8).min(w);
            // SAFETY: the caller's contract.
            return unsafe { self.feature_blocks(job, carry, per_thread) };
        };
        let per_thread = w
            .div_ceil(threads)
            .next_multiple_of(LINE / std::mem::size_of::<E>())
            .min(w);
        // Walking rows upwards in memory, the step next to row i in memory is i + 1, so
        // features 0..shift run one step ahead; walking downwards it is i − 1, and the
        // features shift..w run ahead.
        let upwards = job.out.row > 0;
        let (ahead, behind, first_shifted_row) = if upwards {
            (0..shift, shift..w, 0)
        } else {
            (shift..w, 0..shift, 1)
        };
        let part = |row: usize, features: &Range<usize>| {
            job.rows(row, 1).cols(features.start, features.len())
        };
        let shifted = job.rows(first_shifted_row, n - 1).cols(shift, w);
        let (isa, kernels) = (self.isa, self.kernels());
        // SAFETY: `line_shift` checked that rows lie back to back with one stride, so the
        // shifted rows (rows `first_shifted_row..` from element `shift` on, `w` elements
        // each) cover elements of rows 0..n of every sequence only; the first and last
        // parts are single rows of the job. They run one after another, the shifted job's
        // blocks on disjoint columns; the caller's contract does the rest.
        unsafe {
            kernels::scan(&part(0, &ahead), &mut carry[ahead.clone()], isa, kernels);
            carry.rotate_left(shift);
            self.feature_blocks(&shifted, carry, per_thread);
            carry.rotate_right(shift);
            kernels::scan(
                &part(n - 1, &behind),
                &mut carry[behind.clone()],
                isa,
                kernels,
            );
        }
    }
}
