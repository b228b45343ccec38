//! The compute backend the layers run on.
//!
//! A layer asks one [`Backend`] value for everything it computes: matrices from a
//! reusable pool, matrix products with transposes and accumulation, the fused elementwise
//! gate passes (each forward with its backward), bias-gradient reductions, and the linear
//! recurrence (through [`scan_core::LinearScan`]). Layers never touch ndarray's arithmetic
//! themselves, so a faster GEMM, a GPU or another storage type is one new implementation
//! of this trait, not an edit of every layer.
//!
//! Two implementations ship:
//!
//! * [`CpuBackend`]: `gemm`-crate products (and its own kernels for thin, few-row and
//!   packed products), rayon-parallel fused passes, buffers
//!   from a pool that is kept from one training step to the next, values below the
//!   smallest normal number flushed to zero ([`Subnormals`]). What the models use.
//! * [`ReferenceBackend`]: plain serial loops that compute in `f64` whatever `E` is. The
//!   oracle of the conformance suite ([`conformance`]) that every backend must pass.
//!
//! # Data
//!
//! Activations are `(rows, cols)` matrices (`rows = T·B`, time-major: the `B` rows of step
//! `t` are rows `t·B..(t+1)·B`). A backend names its own storage through associated
//! types — [`Backend::Matrix`] (owned), [`Backend::View`] and [`Backend::ViewMut`]
//! (borrowed, possibly strided sub-blocks) — so a device implementation keeps activations
//! on the device from the first layer to the head; the CPU backends use ndarray's
//! `Array2`/`ArrayView2`/`ArrayViewMut2`. Parameters live in host memory (the optimizer and
//! checkpoints read them there) and reach a backend as host views through
//! [`Backend::host`] / [`Backend::host_mut`]: a device backend stages those (they are
//! small next to the activations) or keeps cached device copies.
//!
//! Every operation checks the shapes it is given and answers a mismatch with
//! [`ModelError::ShapeMismatch`]: no call panics.

mod cpu;
mod gate_kernels;
pub(crate) mod host;
mod isa;
mod packed;
mod product;
#[cfg(feature = "product-stats")]
pub mod product_stats;
mod reference;
mod rowwise;
mod subnormal;
#[cfg(test)]
mod test_values;
mod thin;

pub mod conformance;

pub use cpu::CpuBackend;
pub use packed::PackedMatrix;
pub use reference::ReferenceBackend;
pub use subnormal::Subnormals;

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use crate::error::check_shape;
use crate::{ModelError, Real};

/// Runs a whole pass of the CPU backend on its flushing pool (see [`Subnormals::install`]):
/// the caller then sleeps once per pass, and serial work between parallel passes runs on a
/// pool thread while the other one waits for the next pass, instead of the caller's thread
/// competing with two spinning workers for two cores. On the default trainer run (idle
/// Xeon, 2 vCPUs) this cut involuntary context switches from 60–100 thousand to 1.4
/// thousand, system time from 0.55–0.73 s to 0.46–0.48 s and wall time by 10–20 %.
pub(crate) fn on_cpu_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    Subnormals::FlushToZero.install(work)
}

/// Whether a matrix operand of [`Backend::matmul`] is used as is or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    /// `A`.
    No,
    /// `Aᵀ`.
    Yes,
}

/// The activation of a gate's candidate value in a decay-gated pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Candidate {
    /// `tanh` (GILR, GILR-LSTM's `j`, QRNN's `z`).
    Tanh,
    /// No activation (SRU's `x̃`).
    Identity,
}

/// Which state a layer's scan starts from and which gradient its last state receives.
#[derive(Clone, Copy, Debug)]
pub struct ScanEnds<V> {
    /// The state before the first step, `(B, n)`; `None` means zeros.
    pub initial: Option<V>,
    /// An extra gradient on the last step's state, `(B, n)`; `None` means zeros.
    pub grad_last: Option<V>,
}

/// Checks the operands of [`Backend::scan`] or [`Backend::scan_backward`] against the
/// decay block `(T·B, n)`: `n_steps` must split its rows, every block operand must be
/// `(T·B, n)` and every state operand `(B, n)` (`None`: absent). Backends call it before
/// reshaping the blocks into the scan's `(T, B·n)` problem, where a block of another shape
/// but the same size would pass unnoticed; backends on ndarray views call it through
/// [`check_scan_views`] and [`check_scan_backward_views`].
pub fn check_scan_operands(
    operation: &'static str,
    n_steps: usize,
    decay: (usize, usize),
    blocks: &[(&'static str, (usize, usize))],
    states: &[(&'static str, Option<(usize, usize)>)],
) -> Result<(), ModelError> {
    let (rows, n) = decay;
    if n_steps == 0 || !rows.is_multiple_of(n_steps) {
        return Err(ModelError::InvalidInput {
            operation,
            reason: format!("{rows} rows do not split into {n_steps} steps"),
        });
    }
    for &(argument, (r, c)) in blocks {
        check_shape(operation, argument, &[rows, n], &[r, c])?;
    }
    for &(argument, dims) in states {
        if let Some((r, c)) = dims {
            check_shape(operation, argument, &[rows / n_steps, n], &[r, c])?;
        }
    }
    Ok(())
}

/// [`check_scan_operands`] for the operands of [`Backend::scan`] as ndarray views, named
/// `operation` in errors: `impulse` and `state` are blocks, `ends.initial` a state.
pub fn check_scan_views<E>(
    operation: &'static str,
    n_steps: usize,
    decay: ArrayView2<'_, E>,
    impulse: ArrayView2<'_, E>,
    ends: ScanEnds<ArrayView2<'_, E>>,
    state: &ArrayViewMut2<'_, E>,
) -> Result<(), ModelError> {
    check_scan_operands(
        operation,
        n_steps,
        decay.dim(),
        &[("impulse", impulse.dim()), ("state", state.dim())],
        &[("ends.initial", ends.initial.map(|v| v.dim()))],
    )
}

/// [`check_scan_operands`] for the operands of [`Backend::scan_backward`] as ndarray views,
/// named `operation` in errors: `state`, `grad_state`, `grad_decay` and `grad_impulse` are
/// blocks, `ends.initial`, `ends.grad_last` and `grad_initial` states. The arguments are
/// those of [`Backend::scan_backward`], in its order.
#[allow(clippy::too_many_arguments)]
pub fn check_scan_backward_views<E>(
    operation: &'static str,
    n_steps: usize,
    decay: ArrayView2<'_, E>,
    state: ArrayView2<'_, E>,
    ends: ScanEnds<ArrayView2<'_, E>>,
    grad_state: ArrayView2<'_, E>,
    grad_decay: &ArrayViewMut2<'_, E>,
    grad_impulse: &ArrayViewMut2<'_, E>,
    grad_initial: Option<&ArrayViewMut2<'_, E>>,
) -> Result<(), ModelError> {
    check_scan_operands(
        operation,
        n_steps,
        decay.dim(),
        &[
            ("state", state.dim()),
            ("grad_state", grad_state.dim()),
            ("grad_decay", grad_decay.dim()),
            ("grad_impulse", grad_impulse.dim()),
        ],
        &[
            ("ends.initial", ends.initial.map(|v| v.dim())),
            ("ends.grad_last", ends.grad_last.map(|v| v.dim())),
            ("grad_initial", grad_initial.map(|v| v.dim())),
        ],
    )
}

/// What a layer computes with: buffers, products, fused gate passes, reductions, scans.
///
/// Shapes are `(rows, cols)`. Gate passes work elementwise on equally shaped matrices;
/// a bias is a `(1, n)` row added to every row. Every method returns
/// [`ModelError::ShapeMismatch`] for operands that do not fit together.
pub trait Backend<E: Real> {
    /// An owned `(rows, cols)` matrix in this backend's memory.
    type Matrix;
    /// A read-only view of a matrix or of a block of one.
    type View<'a>: Copy;
    /// A mutable view of a matrix or of a block of one.
    type ViewMut<'a>;
    /// A right operand of products laid out once for many calls ([`Backend::pack`]).
    type Packed;

    // --- Buffers and views -------------------------------------------------------------

    /// A matrix of zeros (from the pool where there is one).
    fn zeros(&self, rows: usize, cols: usize) -> Result<Self::Matrix, ModelError>;
    /// A matrix whose contents are unspecified: the caller writes every element first.
    fn scratch(&self, rows: usize, cols: usize) -> Result<Self::Matrix, ModelError>;
    /// Gives a matrix back to the pool (or frees it).
    fn recycle(&self, matrix: Self::Matrix);
    /// A view of a whole matrix.
    fn view<'a>(&self, matrix: &'a Self::Matrix) -> Self::View<'a>;
    /// A mutable view of a whole matrix.
    fn view_mut<'a>(&self, matrix: &'a mut Self::Matrix) -> Self::ViewMut<'a>;
    /// A shorter-lived mutable view of the same block (to pass it on and keep it).
    fn reborrow<'b>(&self, view: &'b mut Self::ViewMut<'_>) -> Self::ViewMut<'b>;
    /// A shorter-lived copy of a view (views are invariant in their lifetime).
    fn shorten<'b>(&self, view: &'b Self::View<'_>) -> Self::View<'b>;
    /// `(rows, cols)` of a view.
    fn dims(&self, view: Self::View<'_>) -> (usize, usize);
    /// `(rows, cols)` of an owned matrix.
    fn matrix_dims(&self, matrix: &Self::Matrix) -> (usize, usize);
    /// Rows `start..start + len` of a view.
    fn rows<'a>(
        &self,
        view: Self::View<'a>,
        start: usize,
        len: usize,
    ) -> Result<Self::View<'a>, ModelError>;
    /// Rows `start..start + len` of a mutable view.
    fn rows_mut<'a>(
        &self,
        view: Self::ViewMut<'a>,
        start: usize,
        len: usize,
    ) -> Result<Self::ViewMut<'a>, ModelError>;
    /// Columns `start..start + len` of a view (a gate block of a weight matrix).
    fn columns<'a>(
        &self,
        view: Self::View<'a>,
        start: usize,
        len: usize,
    ) -> Result<Self::View<'a>, ModelError>;
    /// Columns `start..start + len` of a mutable view.
    fn columns_mut<'a>(
        &self,
        view: Self::ViewMut<'a>,
        start: usize,
        len: usize,
    ) -> Result<Self::ViewMut<'a>, ModelError>;
    // --- Host memory -------------------------------------------------------------------

    /// A host array (a parameter, a dense input) as an operand.
    fn host<'a>(&self, array: ArrayView2<'a, E>) -> Self::View<'a>;
    /// A host array (a parameter gradient) as a destination.
    fn host_mut<'a>(&self, array: ArrayViewMut2<'a, E>) -> Self::ViewMut<'a>;
    /// Moves a host array into this backend's memory (free for host backends).
    fn upload(&self, array: Array2<E>) -> Self::Matrix;
    /// Copies a view to a new host array.
    fn download(&self, view: Self::View<'_>) -> Array2<E>;

    // --- Copies, sums, products --------------------------------------------------------

    /// `dst = src`.
    fn copy(&self, src: Self::View<'_>, dst: Self::ViewMut<'_>) -> Result<(), ModelError>;
    /// `dst += src`.
    fn add_assign(&self, src: Self::View<'_>, dst: Self::ViewMut<'_>) -> Result<(), ModelError>;
    /// Every row of `dst` set to the `(1, n)` row `row`.
    fn fill_rows(&self, row: Self::View<'_>, dst: Self::ViewMut<'_>) -> Result<(), ModelError>;
    /// `c = op(a)·op(b)`, or `c += op(a)·op(b)` when `accumulate`.
    fn matmul(
        &self,
        a: Self::View<'_>,
        transpose_a: Transpose,
        b: Self::View<'_>,
        transpose_b: Transpose,
        c: Self::ViewMut<'_>,
        accumulate: bool,
    ) -> Result<(), ModelError>;
    /// `op(b)` laid out for [`Backend::matmul_packed`]: for a right operand used by many
    /// products with few rows (the LSTM's recurrent weight, once per time step), which the
    /// backend may then read faster than in [`Backend::matmul`]. Give it back with
    /// [`Backend::recycle_packed`].
    fn pack(&self, b: Self::View<'_>, transpose: Transpose) -> Result<Self::Packed, ModelError>;
    /// `c = a·B`, or `c += a·B` when `accumulate`, for a `B` laid out by [`Backend::pack`]:
    /// the same numbers as [`Backend::matmul`] on `B` (to rounding).
    fn matmul_packed(
        &self,
        a: Self::View<'_>,
        b: &Self::Packed,
        c: Self::ViewMut<'_>,
        accumulate: bool,
    ) -> Result<(), ModelError>;
    /// Gives a packed operand's memory back to the pool (or frees it).
    fn recycle_packed(&self, packed: Self::Packed);
    /// `dst += Σ_rows src` into a `(1, n)` row: the gradient of a bias.
    fn add_column_sums(
        &self,
        src: Self::View<'_>,
        dst: Self::ViewMut<'_>,
    ) -> Result<(), ModelError>;
    /// Embedding lookup: row `r` of `out` is `scale[r]·table[index[r]]` (`scale` is
    /// `(rows, 1)`, every index `< table rows`).
    fn embed(
        &self,
        table: Self::View<'_>,
        index: &[u32],
        scale: Self::View<'_>,
        out: Self::ViewMut<'_>,
    ) -> Result<(), ModelError>;
    /// Backward of [`Backend::embed`]: `grad_table[index[r]] += scale[r]·grad_out[r]`, in
    /// row order (deterministic).
    fn embed_backward(
        &self,
        grad_out: Self::View<'_>,
        index: &[u32],
        scale: Self::View<'_>,
        grad_table: Self::ViewMut<'_>,
    ) -> Result<(), ModelError>;

    // --- Fused gate passes -------------------------------------------------------------

    /// The gates of a decay-gated scan, in place: `f = σ(f + b_f)`, `v = act(v + b_v)`,
    /// and `impulse = (1 − f) ⊙ v`.
    #[allow(clippy::too_many_arguments)]
    fn decay_gates(
        &self,
        decay: Self::ViewMut<'_>,
        decay_bias: Self::View<'_>,
        candidate: Self::ViewMut<'_>,
        candidate_bias: Self::View<'_>,
        activation: Candidate,
        impulse: Self::ViewMut<'_>,
    ) -> Result<(), ModelError>;
    /// Backward of [`Backend::decay_gates`]: given the activated `f`, `v` and the scan's
    /// `∂decay`, `∂impulse`, overwrites `f`, `v` with the gradients of their
    /// pre-activations: `∂P_f = (∂decay − ∂impulse ⊙ v)⊙σ'`, `∂P_v = ∂impulse ⊙ (1 − f)⊙act'`.
    fn decay_gates_backward(
        &self,
        decay: Self::ViewMut<'_>,
        candidate: Self::ViewMut<'_>,
        activation: Candidate,
        grad_decay: Self::View<'_>,
        grad_impulse: Self::View<'_>,
    ) -> Result<(), ModelError>;
    /// The gates of an input-gated scan, in place: `f = σ(f + b_f)`, `i = σ(i + b_i)`,
    /// `z = tanh(z + b_z)`, and `impulse = i ⊙ z`.
    #[allow(clippy::too_many_arguments)]
    fn input_gates(
        &self,
        forget: Self::ViewMut<'_>,
        forget_bias: Self::View<'_>,
        input: Self::ViewMut<'_>,
        input_bias: Self::View<'_>,
        candidate: Self::ViewMut<'_>,
        candidate_bias: Self::View<'_>,
        impulse: Self::ViewMut<'_>,
    ) -> Result<(), ModelError>;
    /// Backward of [`Backend::input_gates`]: overwrites `f, i, z` with `∂P_f = ∂decay⊙σ'`,
    /// `∂P_i = ∂impulse ⊙ z ⊙ σ'`, `∂P_z = ∂impulse ⊙ i ⊙ tanh'`.
    fn input_gates_backward(
        &self,
        forget: Self::ViewMut<'_>,
        input: Self::ViewMut<'_>,
        candidate: Self::ViewMut<'_>,
        grad_decay: Self::View<'_>,
        grad_impulse: Self::View<'_>,
    ) -> Result<(), ModelError>;
    /// An output gate, in place: `o = σ(o + b_o)`, `out = o ⊙ c`, or with a highway
    /// `skip` input `x`: `out = o ⊙ c + (1 − o) ⊙ x`.
    fn output_gate(
        &self,
        gate: Self::ViewMut<'_>,
        bias: Self::View<'_>,
        cell: Self::View<'_>,
        skip: Option<Self::View<'_>>,
        out: Self::ViewMut<'_>,
    ) -> Result<(), ModelError>;
    /// Backward of [`Backend::output_gate`]: writes `∂c = ∂out ⊙ o`, `∂x = ∂out ⊙ (1 − o)`
    /// (with a skip) and overwrites `o` with `∂P_o = ∂out ⊙ (c − x) ⊙ σ'`.
    #[allow(clippy::too_many_arguments)]
    fn output_gate_backward(
        &self,
        gate: Self::ViewMut<'_>,
        cell: Self::View<'_>,
        skip: Option<Self::View<'_>>,
        grad_out: Self::View<'_>,
        grad_cell: Self::ViewMut<'_>,
        grad_skip: Option<Self::ViewMut<'_>>,
    ) -> Result<(), ModelError>;
    /// One LSTM step for `(B, 4n)` pre-activations `[f i o z]`, in place: the gates are
    /// activated, `c = f ⊙ c_prev + i ⊙ z` (`c_prev = 0` when `None`), `h = o ⊙ tanh c`.
    fn lstm_cell(
        &self,
        gates: Self::ViewMut<'_>,
        cell_prev: Option<Self::View<'_>>,
        cell: Self::ViewMut<'_>,
        out: Self::ViewMut<'_>,
    ) -> Result<(), ModelError>;
    /// Backward of one LSTM step: `∂h = grad_out + grad_recurrent`; `grad_cell` holds
    /// `∂c_{t+1}⊙f_{t+1}` on entry and `∂c_t⊙f_t` on return; the gates are overwritten with
    /// the gradients of their pre-activations.
    #[allow(clippy::too_many_arguments)]
    fn lstm_cell_backward(
        &self,
        gates: Self::ViewMut<'_>,
        cell: Self::View<'_>,
        cell_prev: Option<Self::View<'_>>,
        grad_out: Self::View<'_>,
        grad_recurrent: Self::View<'_>,
        grad_cell: Self::ViewMut<'_>,
    ) -> Result<(), ModelError>;

    // --- The linear recurrence ---------------------------------------------------------

    /// `state_t = decay_t ⊙ state_{t−1} + impulse_t` over `n_steps` blocks of rows, from
    /// `ends.initial` (the `grad_last` of `ends` is ignored).
    fn scan(
        &self,
        n_steps: usize,
        decay: Self::View<'_>,
        impulse: Self::View<'_>,
        ends: ScanEnds<Self::View<'_>>,
        state: Self::ViewMut<'_>,
    ) -> Result<(), ModelError>;
    /// Backward of [`Backend::scan`]: writes `∂decay`, `∂impulse` and, if asked for,
    /// `∂initial`.
    #[allow(clippy::too_many_arguments)]
    fn scan_backward(
        &self,
        n_steps: usize,
        decay: Self::View<'_>,
        state: Self::View<'_>,
        ends: ScanEnds<Self::View<'_>>,
        grad_state: Self::View<'_>,
        grad_decay: Self::ViewMut<'_>,
        grad_impulse: Self::ViewMut<'_>,
        grad_initial: Option<Self::ViewMut<'_>>,
    ) -> Result<(), ModelError>;

    // --- A sequence split over time ----------------------------------------------------
    //
    // A backend may hold one part of a sequence split over time (a process of a
    // sequence-parallel run) rather than the whole sequence. What enters a part from the
    // part before it, and the gradients that flow back, then come from elsewhere; these
    // three methods are where a layer asks for them. Their defaults are a backend that
    // holds the whole sequence: the entering state is the one the caller passed.

    /// [`Backend::scan`] over this backend's part of the sequence, returning the state that
    /// entered the part if it came from an earlier part instead of from `ends.initial`
    /// (the default: `None`, the entering state is `ends.initial`). Layers that read the
    /// entering state elsewhere (a look-back at the first step) or keep it for their
    /// backward pass use this.
    fn scan_part(
        &self,
        n_steps: usize,
        decay: Self::View<'_>,
        impulse: Self::View<'_>,
        ends: ScanEnds<Self::View<'_>>,
        state: Self::ViewMut<'_>,
    ) -> Result<Option<Self::Matrix>, ModelError> {
        self.scan(n_steps, decay, impulse, ends, state)
            .map(|()| None)
    }

    /// A `dims`-shaped state that passes from one part of the sequence to the next outside
    /// the scan (QRNN's window of its last inputs): `leaving` computes the state leaving
    /// this part from the one entering it. Returns the entering state if it came from an
    /// earlier part instead of `given`, and the leaving state. Default: `given` enters,
    /// `(None, leaving(given))`.
    #[allow(clippy::type_complexity)]
    fn carry<F>(
        &self,
        given: Option<Self::View<'_>>,
        dims: (usize, usize),
        leaving: F,
    ) -> Result<(Option<Self::Matrix>, Self::Matrix), ModelError>
    where
        F: for<'v> FnOnce(Option<Self::View<'v>>) -> Result<Self::Matrix, ModelError>,
    {
        let _ = dims;
        Ok((None, leaving(given)?))
    }

    /// The backward counterpart of [`Backend::carry`], also for gradients that a part's
    /// use of its entering state produced outside the scan (GILR-LSTM's look-back):
    /// `grad_entering` receives ∂L/∂(the `dims`-shaped state leaving this part) — `given`
    /// where this part ends the sequence (the default, which also holds the whole
    /// sequence), else what the next part computed — and returns ∂L/∂(the state entering
    /// this part), which a split backend passes on to the earlier part. Returns it.
    fn carry_backward<F>(
        &self,
        given: Option<Self::View<'_>>,
        dims: (usize, usize),
        grad_entering: F,
    ) -> Result<Option<Self::Matrix>, ModelError>
    where
        F: for<'v> FnOnce(Option<Self::View<'v>>) -> Result<Option<Self::Matrix>, ModelError>,
    {
        let _ = dims;
        grad_entering(given)
    }

    // --- Elementwise (added for GILR-LSTM's bounded output) ----------------------------

    /// `out = tanh(x)` elementwise.
    fn tanh(&self, x: Self::View<'_>, out: Self::ViewMut<'_>) -> Result<(), ModelError>;
    /// Backward of [`Backend::tanh`] from its output `y`: `grad ← grad ⊙ (1 − y²)`.
    fn tanh_backward(&self, y: Self::View<'_>, grad: Self::ViewMut<'_>) -> Result<(), ModelError>;
}
