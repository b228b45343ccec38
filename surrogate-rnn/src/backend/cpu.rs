//! The CPU backend the models train on: `gemm`-crate products, rayon-parallel fused
//! passes, pooled buffers, subnormals flushed to zero (see [`Subnormals`]).

use gemm::Parallelism;
use ndarray::parallel::prelude::*;
use ndarray::{Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use scan_core::LinearScan;

use super::gate_kernels as kernels;
use super::host::{self, host_storage};
use super::isa::{self, Isa};
use super::packed::{self, PackedMatrix};
use super::product;
use super::rowwise::{self, bias_slice, unit_rows, RowBlocks, UnitRowsMut};
use super::subnormal::{self, Subnormals};
use super::thin::{self, Thin};
use super::{Backend, Candidate, Transpose};
use crate::ops::PAR_MIN_ELEMENTS;
use crate::workspace::Workspace;
use crate::{ModelError, Real};

/// The fast CPU backend: products by the `gemm` crate (split over both cores on the
/// backend's pool when large, on the calling thread when small), fused elementwise
/// passes split over rayon's pool (bit-for-bit the serial results for any thread count),
/// the recurrence on the [`LinearScan`] it was built with, and buffers from the pool of the
/// model that built it (a standalone backend allocates and frees).
///
/// By default it computes with values below the smallest normal number flushed to zero
/// ([`Subnormals::FlushToZero`], on x86-64): every other result is the IEEE one, and
/// training does not slow down 3–14× when gradients or decay products underflow. The mode
/// holds only for the backend's own work: serial work runs on the calling thread under a
/// guard that restores the thread's mode on return, parallel passes and the scan run on a
/// private rayon pool whose threads compute that way (so the scan it was built with runs
/// there too; a `Classifier` runs its whole passes there). [`CpuBackend::with_subnormals`]
/// chooses IEEE gradual underflow instead.
#[derive(Clone, Copy)]
pub struct CpuBackend<'a, E: Real> {
    scan: &'a dyn LinearScan<E>,
    pool: Option<&'a Workspace<E>>,
    subnormals: Subnormals,
}

impl<E: Real> std::fmt::Debug for CpuBackend<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("scan", &self.scan.name())
            .field("pooled", &self.pool.is_some())
            .field("subnormals", &self.subnormals)
            .finish()
    }
}

impl<'a, E: Real> CpuBackend<'a, E> {
    /// A backend whose recurrences run on `scan`, allocating its buffers afresh.
    pub fn new(scan: &'a dyn LinearScan<E>) -> Self {
        Self {
            scan,
            pool: None,
            subnormals: Subnormals::default(),
        }
    }

    /// The same backend computing with `subnormals` (flushed to zero by default).
    pub fn with_subnormals(self, subnormals: Subnormals) -> Self {
        Self { subnormals, ..self }
    }

    /// How this backend computes with subnormal values.
    pub fn subnormals(&self) -> Subnormals {
        self.subnormals
    }

    /// Runs serial `work` (no rayon call, no user code) on this thread in this backend's
    /// subnormal mode.
    fn serial<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        subnormal::run(self.subnormals, false, work)
    }

    /// Runs an elementwise pass over `elements` values: on the flushing pool from
    /// `2·PAR_MIN_ELEMENTS` elements on (where [`CpuBackend::rowwise`] splits it), else like
    /// [`CpuBackend::serial`].
    fn within<R: Send>(&self, elements: usize, work: impl FnOnce() -> R + Send) -> R {
        subnormal::run(self.subnormals, elements >= 2 * PAR_MIN_ELEMENTS, work)
    }

    /// Runs an elementwise pass over `operands` of `dims` on blocks of rows (split over
    /// the flushing pool when large, see [`rowwise::for_row_blocks`]).
    /// `work` gets the instruction set of the kernels with each block.
    fn rowwise<T: RowBlocks>(
        &self,
        dims: (usize, usize),
        operands: T,
        work: impl Fn(Isa, T) + Sync,
    ) {
        let (isa, min_rows) = (isa::widest(), rowwise::min_rows(PAR_MIN_ELEMENTS, dims.1));
        self.within(dims.0.saturating_mul(dims.1), || {
            rowwise::for_row_blocks(operands, min_rows, &|block| work(isa, block))
        });
    }

    /// Runs an LSTM cell pass over `operands` of `n_batch` rows of `n` states: split over
    /// the pool when there are enough rows (see [`cell_rows_per_task`]), else serially;
    /// `work` gets the instruction set as in [`CpuBackend::rowwise`].
    fn lstm_rows<T: RowBlocks>(
        &self,
        n_batch: usize,
        n: usize,
        operands: T,
        work: impl Fn(Isa, T) + Sync,
    ) {
        let (isa, min_rows) = (isa::widest(), cell_rows_per_task(n));
        let work = |block| work(isa, block);
        match n_batch >= 2 * min_rows {
            true => self.on_pool(|| rowwise::for_row_blocks(operands, min_rows, &work)),
            false => self.serial(|| work(operands)),
        }
    }

    /// Runs `work`, which may use rayon or code that is not this backend's, on the
    /// flushing pool.
    fn on_pool<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        subnormal::run(self.subnormals, true, work)
    }

    /// `c (+)= a·b` through the `gemm` crate (split over `k` for a small result of a long
    /// inner dimension) or, for a result of a few rows, [`product::few_rows`].
    fn general_product(
        &self,
        a: ArrayView2<'_, E>,
        b: ArrayView2<'_, E>,
        mut c: ArrayViewMut2<'_, E>,
        accumulate: bool,
    ) -> Result<(), ModelError> {
        let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
        let parallel = m.saturating_mul(k).saturating_mul(n) >= PAR_MIN_PRODUCT;
        let split = product::k_parts(m, k, n).filter(|_| parallel);
        let mut partials = match split.and_then(|parts| Some((parts, parts.checked_mul(m)?))) {
            Some((parts, rows)) => Some((parts, self.scratch(rows, n)?)),
            None => None,
        };
        let run = |c: &mut ArrayViewMut2<'_, E>, partials: Option<&mut (usize, Array2<E>)>| {
            if let Some((parts, partials)) = partials {
                let partials = partials.view_mut();
                product::gemm_split_k(a, b, c.view_mut(), accumulate, *parts, partials);
                return;
            }
            if !product::few_rows(a, b, c.view_mut(), accumulate, parallel) {
                let threads = match parallel {
                    true => Parallelism::Rayon(0),
                    false => Parallelism::None,
                };
                product::gemm(a, b, c.view_mut(), accumulate, threads);
            }
        };
        // Large products are split over the flushing pool, so every thread that computes
        // them does so in this backend's subnormal mode.
        match parallel {
            true => self.on_pool(|| run(&mut c, partials.as_mut())),
            false => self.serial(|| run(&mut c, partials.as_mut())),
        }
        if let Some((_, partials)) = partials {
            self.recycle(partials);
        }
        Ok(())
    }

    /// `c (+)= a·b` for a product with two short sides ([`thin`]), split over the pool
    /// when it streams at least `2·PAR_MIN_ELEMENTS` values. `false` when the operands'
    /// layouts do not fit the thin kernels (nothing was touched).
    fn thin_product(
        &self,
        route: Thin,
        a: ArrayView2<'_, E>,
        b: ArrayView2<'_, E>,
        c: ArrayViewMut2<'_, E>,
        accumulate: bool,
    ) -> Result<bool, ModelError> {
        let (isa, (m, k), n) = (isa::widest(), a.dim(), b.ncols());
        match route {
            Thin::Tall => {
                let elements = m.saturating_mul(k + n);
                let min_rows = rowwise::min_rows(PAR_MIN_ELEMENTS, k + n);
                Ok(self.within(elements, || thin::tall(isa, a, b, c, accumulate, min_rows)))
            }
            Thin::LongInner { parts } => {
                let Some(rows) = parts.checked_mul(m) else {
                    return Ok(false);
                };
                let mut partials = self.scratch(rows, n)?;
                let elements = k.saturating_mul(m + n);
                let parallel = elements >= 2 * PAR_MIN_ELEMENTS;
                let done = self.within(elements, || {
                    let partials = partials.view_mut();
                    thin::long_inner(isa, a, b, c, accumulate, partials, parallel)
                });
                self.recycle(partials);
                Ok(done)
            }
        }
    }

    /// The scan backend the recurrences run on.
    fn linear_scan(&self) -> &dyn LinearScan<E> {
        self.scan
    }

    /// A backend that takes its buffers from (and gives them back to) `pool`.
    pub(crate) fn pooled(scan: &'a dyn LinearScan<E>, pool: &'a Workspace<E>) -> Self {
        Self {
            scan,
            pool: Some(pool),
            subnormals: Subnormals::default(),
        }
    }
}

/// Products with fewer multiply-adds than this run on the calling thread: handing them to
/// the pool (waking its threads, putting the caller to sleep) costs more than the second
/// core saves. At 2²⁰ the default trainer run spent 1.0–1.2 s of system time against
/// 5.7–6.7 s of user time in such wake-ups; at 2²² 0.6–0.7 s with the same wall time (idle
/// Xeon, 2 vCPUs). Once the elementwise passes were vectorized (user time 5.4 → 2.9 s),
/// 2²² left 0.30–0.41 s of system time (11–12 % of user time); 2²⁴ gives 0.25–0.27 s
/// (8–9 %) with the same wall time.
const PAR_MIN_PRODUCT: usize = 1 << 24;

/// [`Backend::matmul_packed`]'s threshold: the LSTM's per-step product at `n = 512` and
/// batch 8 (8.4 million multiply-adds, once per time step) gains from both cores.
const PAR_MIN_PACKED_PRODUCT: usize = 1 << 22;

/// Elements of one block of rows that [`Backend::add_column_sums`] sums into one partial
/// sum (at least a row).
const SUM_BLOCK_ELEMENTS: usize = 1 << 17;

/// Column sums of fewer elements run on the calling thread: they take a fraction of a
/// millisecond, less than waking the other thread costs the default trainer run in
/// system time (idle Xeon VM, 2 vCPUs).
const PAR_MIN_COLUMN_SUMS: usize = 1 << 21;

/// A packed product streams its whole right operand once per row tile, so one with fewer
/// rows costs about as much as one with this many (the LSTM at batch 1 and `n = 512`:
/// `U` is 4 MiB, more than one core's L2, and gains from both cores reading half).
const PACKED_MIN_ROWS: usize = 8;

/// Checks that every operand has the shape `dims`.
fn all_same(
    operation: &'static str,
    dims: (usize, usize),
    operands: &[(&'static str, (usize, usize))],
) -> Result<(), ModelError> {
    operands
        .iter()
        .try_for_each(|&(argument, actual)| host::same(operation, argument, dims, actual))
}

impl<E: Real> Backend<E> for CpuBackend<'_, E> {
    host_storage!();
    type Packed = PackedMatrix<E>;

    fn zeros(&self, rows: usize, cols: usize) -> Result<Self::Matrix, ModelError> {
        match self.pool {
            Some(pool) => pool.zeros(rows, cols),
            None => host::try_zeros(rows, cols),
        }
    }

    fn scratch(&self, rows: usize, cols: usize) -> Result<Self::Matrix, ModelError> {
        match self.pool {
            Some(pool) => pool.scratch(rows, cols),
            None => host::try_zeros(rows, cols),
        }
    }

    fn recycle(&self, matrix: Self::Matrix) {
        if let Some(pool) = self.pool {
            pool.give_back(matrix);
        }
    }

    fn matmul(
        &self,
        a: ArrayView2<'_, E>,
        transpose_a: Transpose,
        b: ArrayView2<'_, E>,
        transpose_b: Transpose,
        mut c: ArrayViewMut2<'_, E>,
        accumulate: bool,
    ) -> Result<(), ModelError> {
        host::matmul_dims(
            "Backend::matmul",
            a.dim(),
            transpose_a,
            b.dim(),
            transpose_b,
            c.dim(),
        )?;
        let (a, b) = (
            host::oriented(a, transpose_a),
            host::oriented(b, transpose_b),
        );
        #[cfg(feature = "product-stats")]
        let start = std::time::Instant::now();
        let streamed = match Thin::of(&a, &b) {
            Some(route) => self.thin_product(route, a, b, c.view_mut(), accumulate)?,
            None => false,
        };
        if !streamed {
            self.general_product(a, b, c.view_mut(), accumulate)?;
        }
        #[cfg(feature = "product-stats")]
        super::product_stats::record(
            a.nrows(),
            a.ncols(),
            b.ncols(),
            match (streamed, transpose_a, transpose_b) {
                (true, _, _) => "thin",
                (false, Transpose::No, Transpose::No) => "A·B",
                (false, Transpose::Yes, Transpose::No) => "Aᵀ·B",
                (false, Transpose::No, Transpose::Yes) => "A·Bᵀ",
                (false, Transpose::Yes, Transpose::Yes) => "Aᵀ·Bᵀ",
            },
            start.elapsed(),
        );
        Ok(())
    }

    fn pack(
        &self,
        b: ArrayView2<'_, E>,
        transpose: Transpose,
    ) -> Result<PackedMatrix<E>, ModelError> {
        let b = host::oriented(b, transpose);
        let isa = isa::widest();
        let (rows, cols) = packed::buffer_dims::<E>(isa, b.nrows(), b.ncols())?;
        let buffer = self.scratch(rows, cols)?;
        Ok(self.serial(|| packed::pack(isa, b, buffer)))
    }

    fn matmul_packed(
        &self,
        a: ArrayView2<'_, E>,
        b: &PackedMatrix<E>,
        mut c: ArrayViewMut2<'_, E>,
        accumulate: bool,
    ) -> Result<(), ModelError> {
        let (m, k, n) = host::matmul_dims(
            "Backend::matmul_packed",
            a.dim(),
            Transpose::No,
            b.dims(),
            Transpose::No,
            c.dim(),
        )?;
        let parallel =
            m.max(PACKED_MIN_ROWS).saturating_mul(k).saturating_mul(n) >= PAR_MIN_PACKED_PRODUCT;
        #[cfg(feature = "product-stats")]
        let start = std::time::Instant::now();
        match parallel {
            true => self.on_pool(|| packed::matmul(a, b, c.view_mut(), accumulate, true)),
            false => self.serial(|| packed::matmul(a, b, c.view_mut(), accumulate, false)),
        }
        #[cfg(feature = "product-stats")]
        super::product_stats::record(m, k, n, "A·packed", start.elapsed());
        Ok(())
    }

    fn recycle_packed(&self, packed: PackedMatrix<E>) {
        self.recycle(packed.into_buffer());
    }

    fn add_column_sums(
        &self,
        src: ArrayView2<'_, E>,
        dst: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        host::bias_row("Backend::add_column_sums", &dst.view(), src.ncols())?;
        // Blocks of rows summed from their first row down, then the blocks' sums added in
        // order: the order depends on the shape only, whatever the number of threads.
        let src = unit_rows(src);
        let (rows, n) = src.dim();
        let isa = isa::widest();
        let block_rows = rowwise::min_rows(SUM_BLOCK_ELEMENTS, n);
        let blocks = rows.div_ceil(block_rows);
        if n == 0 {
            return Ok(());
        }
        if blocks <= 1 {
            self.serial(|| kernels::add_column_sums(isa, src.view(), dst));
            return Ok(());
        }
        let mut partials = self.zeros(blocks, n)?;
        let sum_block = |(block, partial): (ArrayView2<'_, E>, ArrayViewMut1<'_, E>)| {
            kernels::add_column_sums(isa, block, partial.insert_axis(Axis(0)))
        };
        let pairs = src.axis_chunks_iter(Axis(0), block_rows);
        match src.len() >= PAR_MIN_COLUMN_SUMS {
            true => self.on_pool(|| {
                let rows_of_partials = partials.axis_iter_mut(Axis(0)).into_par_iter();
                pairs
                    .into_par_iter()
                    .zip(rows_of_partials)
                    .for_each(sum_block)
            }),
            false => self.serial(|| {
                pairs
                    .zip(partials.axis_iter_mut(Axis(0)))
                    .for_each(sum_block)
            }),
        }
        self.serial(|| kernels::add_column_sums(isa, partials.view(), dst));
        self.recycle(partials);
        Ok(())
    }

    fn embed(
        &self,
        table: ArrayView2<'_, E>,
        index: &[u32],
        scale: ArrayView2<'_, E>,
        mut out: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        host::embed_dims(table.dim(), index, &scale, out.dim())?;
        self.serial(|| {
            for ((mut row, &i), &v) in out.rows_mut().into_iter().zip(index).zip(scale.iter()) {
                row.zip_mut_with(&table.row(i as usize), |y, &w| *y = v * w);
            }
        });
        Ok(())
    }

    fn embed_backward(
        &self,
        grad_out: ArrayView2<'_, E>,
        index: &[u32],
        scale: ArrayView2<'_, E>,
        mut grad_table: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        host::embed_dims(grad_table.dim(), index, &scale, grad_out.dim())?;
        self.serial(|| {
            for ((row, &i), &v) in grad_out.rows().into_iter().zip(index).zip(scale.iter()) {
                let mut target = grad_table.row_mut(i as usize);
                target.zip_mut_with(&row, |g, &d| *g = *g + v * d);
            }
        });
        Ok(())
    }

    fn decay_gates(
        &self,
        decay: ArrayViewMut2<'_, E>,
        decay_bias: ArrayView2<'_, E>,
        candidate: ArrayViewMut2<'_, E>,
        candidate_bias: ArrayView2<'_, E>,
        activation: Candidate,
        impulse: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        const OP: &str = "Backend::decay_gates";
        let dims = decay.dim();
        all_same(
            OP,
            dims,
            &[("candidate", candidate.dim()), ("impulse", impulse.dim())],
        )?;
        let b_f = bias_slice(OP, decay_bias, dims.1)?;
        let b_v = bias_slice(OP, candidate_bias, dims.1)?;
        let squash = activation == Candidate::Tanh;
        let mut f = UnitRowsMut::new(decay);
        let mut v = UnitRowsMut::new(candidate);
        let mut x = UnitRowsMut::new(impulse);
        let operands = (f.view_mut(), v.view_mut(), x.view_mut());
        self.rowwise(dims, operands, |isa, (f, v, x)| {
            kernels::decay_gates(isa, f, v, x, &b_f, &b_v, squash)
        });
        Ok(())
    }

    fn decay_gates_backward(
        &self,
        decay: ArrayViewMut2<'_, E>,
        candidate: ArrayViewMut2<'_, E>,
        activation: Candidate,
        grad_decay: ArrayView2<'_, E>,
        grad_impulse: ArrayView2<'_, E>,
    ) -> Result<(), ModelError> {
        let dims = decay.dim();
        all_same(
            "Backend::decay_gates_backward",
            dims,
            &[
                ("candidate", candidate.dim()),
                ("grad_decay", grad_decay.dim()),
                ("grad_impulse", grad_impulse.dim()),
            ],
        )?;
        let squash = activation == Candidate::Tanh;
        let (mut f, mut v) = (UnitRowsMut::new(decay), UnitRowsMut::new(candidate));
        let (da, dx) = (unit_rows(grad_decay), unit_rows(grad_impulse));
        let operands = (f.view_mut(), v.view_mut(), da.view(), dx.view());
        self.rowwise(dims, operands, |isa, (f, v, da, dx)| {
            kernels::decay_gates_backward(isa, f, v, da, dx, squash)
        });
        Ok(())
    }

    fn input_gates(
        &self,
        forget: ArrayViewMut2<'_, E>,
        forget_bias: ArrayView2<'_, E>,
        input: ArrayViewMut2<'_, E>,
        input_bias: ArrayView2<'_, E>,
        candidate: ArrayViewMut2<'_, E>,
        candidate_bias: ArrayView2<'_, E>,
        impulse: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        const OP: &str = "Backend::input_gates";
        let dims = forget.dim();
        all_same(
            OP,
            dims,
            &[
                ("input", input.dim()),
                ("candidate", candidate.dim()),
                ("impulse", impulse.dim()),
            ],
        )?;
        let b_f = bias_slice(OP, forget_bias, dims.1)?;
        let b_i = bias_slice(OP, input_bias, dims.1)?;
        let b_z = bias_slice(OP, candidate_bias, dims.1)?;
        let (mut f, mut i) = (UnitRowsMut::new(forget), UnitRowsMut::new(input));
        let (mut z, mut x) = (UnitRowsMut::new(candidate), UnitRowsMut::new(impulse));
        let operands = (f.view_mut(), i.view_mut(), z.view_mut(), x.view_mut());
        self.rowwise(dims, operands, |isa, (f, i, z, x)| {
            kernels::input_gates(isa, f, i, z, x, &b_f, &b_i, &b_z)
        });
        Ok(())
    }

    fn input_gates_backward(
        &self,
        forget: ArrayViewMut2<'_, E>,
        input: ArrayViewMut2<'_, E>,
        candidate: ArrayViewMut2<'_, E>,
        grad_decay: ArrayView2<'_, E>,
        grad_impulse: ArrayView2<'_, E>,
    ) -> Result<(), ModelError> {
        let dims = forget.dim();
        all_same(
            "Backend::input_gates_backward",
            dims,
            &[
                ("input", input.dim()),
                ("candidate", candidate.dim()),
                ("grad_decay", grad_decay.dim()),
                ("grad_impulse", grad_impulse.dim()),
            ],
        )?;
        let (mut f, mut i) = (UnitRowsMut::new(forget), UnitRowsMut::new(input));
        let mut z = UnitRowsMut::new(candidate);
        let (da, dx) = (unit_rows(grad_decay), unit_rows(grad_impulse));
        let operands = (
            f.view_mut(),
            i.view_mut(),
            z.view_mut(),
            da.view(),
            dx.view(),
        );
        self.rowwise(dims, operands, |isa, (f, i, z, da, dx)| {
            kernels::input_gates_backward(isa, f, i, z, da, dx)
        });
        Ok(())
    }

    fn output_gate(
        &self,
        gate: ArrayViewMut2<'_, E>,
        bias: ArrayView2<'_, E>,
        cell: ArrayView2<'_, E>,
        skip: Option<ArrayView2<'_, E>>,
        out: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        const OP: &str = "Backend::output_gate";
        let dims = gate.dim();
        all_same(OP, dims, &[("cell", cell.dim()), ("out", out.dim())])?;
        let b_o = bias_slice(OP, bias, dims.1)?;
        if let Some(x) = &skip {
            host::same(OP, "skip", dims, x.dim())?;
        }
        let (mut h, mut o, c) = (
            UnitRowsMut::new(out),
            UnitRowsMut::new(gate),
            unit_rows(cell),
        );
        match skip.map(unit_rows) {
            None => self.rowwise(
                dims,
                (h.view_mut(), o.view_mut(), c.view()),
                |isa, (h, o, c)| kernels::output_gate(isa, h, o, &b_o, c),
            ),
            Some(x) => {
                let operands = (h.view_mut(), o.view_mut(), c.view(), x.view());
                self.rowwise(dims, operands, |isa, (h, r, c, x)| {
                    kernels::highway_gate(isa, h, r, &b_o, c, x)
                })
            }
        }
        Ok(())
    }

    fn output_gate_backward(
        &self,
        gate: ArrayViewMut2<'_, E>,
        cell: ArrayView2<'_, E>,
        skip: Option<ArrayView2<'_, E>>,
        grad_out: ArrayView2<'_, E>,
        grad_cell: ArrayViewMut2<'_, E>,
        grad_skip: Option<ArrayViewMut2<'_, E>>,
    ) -> Result<(), ModelError> {
        const OP: &str = "Backend::output_gate_backward";
        let dims = gate.dim();
        all_same(
            OP,
            dims,
            &[
                ("cell", cell.dim()),
                ("grad_out", grad_out.dim()),
                ("grad_cell", grad_cell.dim()),
            ],
        )?;
        match (&skip, &grad_skip) {
            (None, None) => {}
            (Some(x), Some(dx)) => {
                all_same(OP, dims, &[("skip", x.dim()), ("grad_skip", dx.dim())])?
            }
            _ => return Err(skip_mismatch(OP)),
        }
        let (mut dc, mut o) = (UnitRowsMut::new(grad_cell), UnitRowsMut::new(gate));
        let (dh, c) = (unit_rows(grad_out), unit_rows(cell));
        match (skip, grad_skip) {
            (Some(x), Some(dx)) => {
                let (x, mut dx) = (unit_rows(x), UnitRowsMut::new(dx));
                let operands = (
                    dc.view_mut(),
                    dx.view_mut(),
                    o.view_mut(),
                    dh.view(),
                    c.view(),
                    x.view(),
                );
                self.rowwise(dims, operands, |isa, (dc, dx, r, dh, c, x)| {
                    kernels::highway_gate_backward(isa, dc, dx, r, dh, c, x)
                })
            }
            _ => {
                let operands = (dc.view_mut(), o.view_mut(), dh.view(), c.view());
                self.rowwise(dims, operands, |isa, (dc, o, dh, c)| {
                    kernels::output_gate_backward(isa, dc, o, dh, c)
                })
            }
        }
        Ok(())
    }

    fn lstm_cell(
        &self,
        gates: ArrayViewMut2<'_, E>,
        cell_prev: Option<ArrayView2<'_, E>>,
        cell: ArrayViewMut2<'_, E>,
        out: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        let (n_batch, n) = lstm_dims(
            "Backend::lstm_cell",
            gates.dim(),
            cell_prev.map(|c| c.dim()),
            &[cell.dim(), out.dim()],
        )?;
        let (mut g, mut c, mut h) = (
            UnitRowsMut::new(gates),
            UnitRowsMut::new(cell),
            UnitRowsMut::new(out),
        );
        match cell_prev.map(unit_rows) {
            Some(p) => {
                let operands = (g.view_mut(), c.view_mut(), h.view_mut(), p.view());
                self.lstm_rows(n_batch, n, operands, |isa, (g, c, h, p)| {
                    kernels::lstm_cell(isa, g, c, h, Some(p))
                })
            }
            None => {
                let operands = (g.view_mut(), c.view_mut(), h.view_mut());
                self.lstm_rows(n_batch, n, operands, |isa, (g, c, h)| {
                    kernels::lstm_cell(isa, g, c, h, None)
                })
            }
        }
        Ok(())
    }

    fn lstm_cell_backward(
        &self,
        gates: ArrayViewMut2<'_, E>,
        cell: ArrayView2<'_, E>,
        cell_prev: Option<ArrayView2<'_, E>>,
        grad_out: ArrayView2<'_, E>,
        grad_recurrent: ArrayView2<'_, E>,
        grad_cell: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        let (n_batch, n) = lstm_dims(
            "Backend::lstm_cell_backward",
            gates.dim(),
            cell_prev.map(|c| c.dim()),
            &[
                cell.dim(),
                grad_out.dim(),
                grad_recurrent.dim(),
                grad_cell.dim(),
            ],
        )?;
        let (mut g, mut carry) = (UnitRowsMut::new(gates), UnitRowsMut::new(grad_cell));
        let (c, a, b) = (
            unit_rows(cell),
            unit_rows(grad_out),
            unit_rows(grad_recurrent),
        );
        let operands = (g.view_mut(), carry.view_mut(), c.view(), a.view(), b.view());
        match cell_prev.map(unit_rows) {
            Some(p) => {
                let (g, carry, c, a, b) = operands;
                let operands = (g, carry, c, a, b, p.view());
                self.lstm_rows(n_batch, n, operands, |isa, (g, carry, c, a, b, p)| {
                    kernels::lstm_cell_backward(isa, g, carry, c, Some(p), a, b)
                })
            }
            None => self.lstm_rows(n_batch, n, operands, |isa, (g, carry, c, a, b)| {
                kernels::lstm_cell_backward(isa, g, carry, c, None, a, b)
            }),
        }
        Ok(())
    }

    fn tanh(&self, x: ArrayView2<'_, E>, out: ArrayViewMut2<'_, E>) -> Result<(), ModelError> {
        host::same("Backend::tanh", "out", x.dim(), out.dim())?;
        let (x, mut y) = (unit_rows(x), UnitRowsMut::new(out));
        self.rowwise(x.dim(), (y.view_mut(), x.view()), |isa, (y, x)| {
            kernels::tanh_rows(isa, y, x)
        });
        Ok(())
    }

    fn tanh_backward(
        &self,
        y: ArrayView2<'_, E>,
        grad: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        host::same("Backend::tanh_backward", "grad", y.dim(), grad.dim())?;
        let (y, mut g) = (unit_rows(y), UnitRowsMut::new(grad));
        self.rowwise(y.dim(), (g.view_mut(), y.view()), |isa, (g, y)| {
            kernels::tanh_backward_rows(isa, g, y)
        });
        Ok(())
    }
}

/// Batch rows per parallel task of an LSTM cell pass: at least 2 Ki elements, as each
/// costs five transcendental functions (≈ 10× a plain gate pass); the LSTM at `n = 512`,
/// batch 8 splits every step's cell over both threads.
fn cell_rows_per_task(n: usize) -> usize {
    CELL_MIN_ELEMENTS.div_ceil(n.max(1))
}

/// The fewest elements one task of an LSTM cell pass gets (see [`cell_rows_per_task`]).
const CELL_MIN_ELEMENTS: usize = 1 << 11;

/// The error for a skip input without its gradient (or the reverse).
pub(super) fn skip_mismatch(operation: &'static str) -> ModelError {
    ModelError::InvalidInput {
        operation,
        reason: "`skip` and `grad_skip` must both be given or both be absent".into(),
    }
}

/// Checks the operands of an LSTM step: gates `(B, 4n)`, every other `(B, n)`.
pub(super) fn lstm_dims(
    operation: &'static str,
    gates: (usize, usize),
    cell_prev: Option<(usize, usize)>,
    others: &[(usize, usize)],
) -> Result<(usize, usize), ModelError> {
    let (n_batch, n) = (gates.0, gates.1 / 4);
    crate::error::check_shape(operation, "gates", &[n_batch, 4 * n], &[gates.0, gates.1])?;
    for &dims in others.iter().chain(cell_prev.as_ref()) {
        host::same(operation, "state", (n_batch, n), dims)?;
    }
    Ok((n_batch, n))
}
