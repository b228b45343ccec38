//! How the CPU backend's elementwise passes meet their operands: split into blocks of
//! rows for the pool, every row a contiguous slice, biases as plain slices.
//!
//! A pass hands each block to one kernel call (see `gate_kernels`), which runs its loops
//! over the rows' slices in code compiled for the CPU's widest vector instructions.

use std::borrow::Cow;

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, CowArray, Ix2};

use crate::ModelError;

/// Operands that split at a row together (all have the same number of rows).
pub(super) trait RowBlocks: Sized + Send {
    /// The number of rows.
    fn n_rows(&self) -> usize;
    /// Rows `..at` and rows `at..`.
    fn split_rows(self, at: usize) -> (Self, Self);
}

impl<E: Send> RowBlocks for ArrayViewMut2<'_, E> {
    fn n_rows(&self) -> usize {
        self.nrows()
    }

    fn split_rows(self, at: usize) -> (Self, Self) {
        self.split_at(Axis(0), at)
    }
}

impl<E: Sync> RowBlocks for ArrayView2<'_, E> {
    fn n_rows(&self) -> usize {
        self.nrows()
    }

    fn split_rows(self, at: usize) -> (Self, Self) {
        self.split_at(Axis(0), at)
    }
}

/// `RowBlocks` for tuples of operands: every member splits at the same row.
macro_rules! row_blocks_tuple {
    ($first:ident $(, $rest:ident)*) => {
        impl<$first: RowBlocks $(, $rest: RowBlocks)*> RowBlocks for ($first, $($rest,)*) {
            fn n_rows(&self) -> usize {
                self.0.n_rows()
            }

            #[allow(non_snake_case)]
            fn split_rows(self, at: usize) -> (Self, Self) {
                let ($first, $($rest,)*) = self;
                $(debug_assert_eq!($rest.n_rows(), $first.n_rows(), "operands' rows differ");)*
                let $first = $first.split_rows(at);
                $(let $rest = $rest.split_rows(at);)*
                (($first.0, $($rest.0,)*), ($first.1, $($rest.1,)*))
            }
        }
    };
}

row_blocks_tuple!(A, B);
row_blocks_tuple!(A, B, C);
row_blocks_tuple!(A, B, C, D);
row_blocks_tuple!(A, B, C, D, F);
row_blocks_tuple!(A, B, C, D, F, G);

/// Runs `work` on `operands`, split in halves on rayon's pool (`rayon::join`) down to blocks
/// of fewer than `2·min_rows` rows; fewer rows than that run as one block on this thread.
/// Elementwise work gives the same numbers however it is split.
pub(super) fn for_row_blocks<T: RowBlocks>(
    operands: T,
    min_rows: usize,
    work: &(impl Fn(T) + Sync),
) {
    let rows = operands.n_rows();
    if rows >= min_rows.max(1).saturating_mul(2) {
        let (top, bottom) = operands.split_rows(rows / 2);
        rayon::join(
            || for_row_blocks(top, min_rows, work),
            || for_row_blocks(bottom, min_rows, work),
        );
    } else {
        work(operands);
    }
}

/// Whether every row of a `dims` view with these strides is one contiguous slice.
fn has_unit_rows(dims: (usize, usize), strides: &[isize]) -> bool {
    dims.1 <= 1 || strides.get(1) == Some(&1)
}

/// A read operand whose rows are contiguous slices: `view` itself, or (for a view whose
/// columns are strided, such as a transpose) a copy in standard layout.
pub(super) fn unit_rows<E: Clone>(view: ArrayView2<'_, E>) -> CowArray<'_, E, Ix2> {
    if has_unit_rows(view.dim(), view.strides()) {
        CowArray::from(view)
    } else {
        CowArray::from(view.as_standard_layout().into_owned())
    }
}

/// A written operand whose rows are contiguous slices: `view` itself, or a copy in
/// standard layout that is written back to `view` when this guard is dropped.
pub(super) struct UnitRowsMut<'a, E: Clone> {
    target: ArrayViewMut2<'a, E>,
    copy: Option<Array2<E>>,
}

impl<'a, E: Clone> UnitRowsMut<'a, E> {
    /// `view` with contiguous rows (copied if its columns are strided).
    pub(super) fn new(view: ArrayViewMut2<'a, E>) -> Self {
        let copy = (!has_unit_rows(view.dim(), view.strides()))
            .then(|| view.as_standard_layout().into_owned());
        Self { target: view, copy }
    }

    /// The operand to write.
    pub(super) fn view_mut(&mut self) -> ArrayViewMut2<'_, E> {
        match &mut self.copy {
            Some(copy) => copy.view_mut(),
            None => self.target.view_mut(),
        }
    }
}

impl<E: Clone> Drop for UnitRowsMut<'_, E> {
    fn drop(&mut self) {
        if let Some(copy) = self.copy.take() {
            self.target.assign(&copy);
        }
    }
}

/// A `(1, n)` bias as a slice of `n` values (copied if its columns are strided).
pub(super) fn bias_slice<'a, E: Clone>(
    operation: &'static str,
    bias: ArrayView2<'a, E>,
    n: usize,
) -> Result<Cow<'a, [E]>, ModelError> {
    super::host::bias_row(operation, &bias, n)?;
    Ok(match bias.to_slice() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(bias.iter().cloned().collect()),
    })
}

/// The fewest rows of `n` values one parallel task of an elementwise pass gets.
pub(super) fn min_rows(elements_per_task: usize, n: usize) -> usize {
    elements_per_task.div_ceil(n.max(1))
}
