//! The compute backend of one rank's part of a sequence split over time.

use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use scan_core::{
    BackwardInputs, BackwardOutputs, BackwardProblem, ChunkMap, Direction, Element, ForwardInputs,
    ForwardProblem, LinearScan, ScanError,
};
use scan_mpi::{DistributedScan, MpiElement};
use surrogate_rnn::backend::{
    check_scan_backward_views, check_scan_views, Candidate, PackedMatrix, ScanEnds, Transpose,
};
use surrogate_rnn::{Backend, CpuBackend, ModelError, Real, Subnormals};

/// [`CpuBackend`] for everything a layer computes on its own rows; the scans run as
/// [`DistributedScan`]s over the ranks that hold steps (`chain`, in time order), and the
/// states and gradients that pass between neighbouring parts outside the scans travel
/// point to point along `chain`.
pub(crate) struct SplitBackend<'a, E: Real, S> {
    cpu: CpuBackend<'a, E>,
    scan: &'a DistributedScan<S>,
    chain: &'a SimpleCommunicator,
}

impl<'a, E: Real + MpiElement, S: LinearScan<E>> SplitBackend<'a, E, S> {
    /// The backend of this rank's part: `cpu` for its own rows, `scan` (built on `chain`)
    /// for the recurrences.
    pub(crate) fn new(
        cpu: CpuBackend<'a, E>,
        scan: &'a DistributedScan<S>,
        chain: &'a SimpleCommunicator,
    ) -> Self {
        Self { cpu, scan, chain }
    }

    fn position(&self) -> (usize, usize) {
        // Ranks and sizes of a communicator are non-negative.
        (self.chain.rank() as usize, self.chain.size() as usize)
    }

    /// Receives a `dims` matrix from `rank` of the chain.
    fn receive(&self, rank: usize, dims: (usize, usize)) -> Array2<E> {
        let mut buffer = Array2::zeros(dims);
        if let Some(slice) = buffer.as_slice_mut() {
            self.chain.process_at_rank(rank as i32).receive_into(slice);
        }
        buffer
    }

    /// Sends `sent` (or, after a local failure, NaNs of `dims`, so that the receiver does
    /// not wait forever) to `rank` of the chain.
    fn send(&self, rank: usize, sent: Option<ArrayView2<'_, E>>, dims: (usize, usize)) {
        let message = match sent {
            Some(view) if view.dim() == dims => view.as_standard_layout().into_owned(),
            _ => Array2::from_elem(dims, E::nan()),
        };
        if let Some(slice) = message.as_slice() {
            self.chain.process_at_rank(rank as i32).send(slice);
        }
    }
}

fn failed(operation: &'static str, error: impl std::fmt::Display) -> ModelError {
    ModelError::InvalidInput {
        operation,
        reason: error.to_string(),
    }
}

/// A contiguous `(T·B, n)` block as the `(T, B·n)` rows of a scan.
fn as_steps<'v, E>(
    view: ArrayView2<'v, E>,
    n_steps: usize,
) -> Result<ArrayView2<'v, E>, ModelError> {
    let (rows, n) = view.dim();
    let width = rows.checked_div(n_steps).map(|b| b * n);
    match (width, view.is_standard_layout()) {
        (Some(width), true) if rows % n_steps == 0 => view
            .into_shape_with_order((n_steps, width))
            .map_err(|e| failed("SplitBackend::scan", e)),
        _ => Err(not_steps(rows, n_steps)),
    }
}

fn as_steps_mut<'v, E>(
    view: ArrayViewMut2<'v, E>,
    n_steps: usize,
) -> Result<ArrayViewMut2<'v, E>, ModelError> {
    let (rows, n) = view.dim();
    let width = rows.checked_div(n_steps).map(|b| b * n);
    match (width, view.is_standard_layout()) {
        (Some(width), true) if rows % n_steps == 0 => view
            .into_shape_with_order((n_steps, width))
            .map_err(|e| failed("SplitBackend::scan", e)),
        _ => Err(not_steps(rows, n_steps)),
    }
}

fn not_steps(rows: usize, n_steps: usize) -> ModelError {
    ModelError::InvalidInput {
        operation: "SplitBackend::scan",
        reason: format!("{rows} contiguous rows do not split into {n_steps} steps"),
    }
}

/// A `(B, n)` state as the one row of `B·n` features a scan carries.
fn as_row<E>(view: ArrayView2<'_, E>) -> Result<ArrayView1<'_, E>, ModelError> {
    let len = view.len();
    view.into_shape_with_order(len)
        .map_err(|e| failed("SplitBackend::scan", e))
}

fn as_row_mut<E>(view: ArrayViewMut2<'_, E>) -> Result<ArrayViewMut1<'_, E>, ModelError> {
    let len = view.len();
    view.into_shape_with_order(len)
        .map_err(|e| failed("SplitBackend::scan", e))
}

impl<E: Real + MpiElement, S: LinearScan<E>> Backend<E> for SplitBackend<'_, E, S> {
    type Matrix = Array2<E>;
    type View<'v> = ArrayView2<'v, E>;
    type ViewMut<'v> = ArrayViewMut2<'v, E>;
    type Packed = PackedMatrix<E>;

    fn zeros(&self, rows: usize, cols: usize) -> Result<Array2<E>, ModelError> {
        self.cpu.zeros(rows, cols)
    }
    fn scratch(&self, rows: usize, cols: usize) -> Result<Array2<E>, ModelError> {
        self.cpu.scratch(rows, cols)
    }
    fn recycle(&self, matrix: Array2<E>) {
        self.cpu.recycle(matrix)
    }
    fn view<'v>(&self, matrix: &'v Array2<E>) -> ArrayView2<'v, E> {
        matrix.view()
    }
    fn view_mut<'v>(&self, matrix: &'v mut Array2<E>) -> ArrayViewMut2<'v, E> {
        matrix.view_mut()
    }
    fn reborrow<'b>(&self, view: &'b mut ArrayViewMut2<'_, E>) -> ArrayViewMut2<'b, E> {
        view.view_mut()
    }
    fn shorten<'b>(&self, view: &'b ArrayView2<'_, E>) -> ArrayView2<'b, E> {
        view.view()
    }
    fn dims(&self, view: ArrayView2<'_, E>) -> (usize, usize) {
        view.dim()
    }
    fn matrix_dims(&self, matrix: &Array2<E>) -> (usize, usize) {
        matrix.dim()
    }
    fn rows<'v>(
        &self,
        view: Self::View<'v>,
        start: usize,
        len: usize,
    ) -> Result<Self::View<'v>, ModelError> {
        self.cpu.rows(view, start, len)
    }
    fn rows_mut<'v>(
        &self,
        view: Self::ViewMut<'v>,
        start: usize,
        len: usize,
    ) -> Result<Self::ViewMut<'v>, ModelError> {
        self.cpu.rows_mut(view, start, len)
    }
    fn columns<'v>(
        &self,
        view: Self::View<'v>,
        start: usize,
        len: usize,
    ) -> Result<Self::View<'v>, ModelError> {
        self.cpu.columns(view, start, len)
    }
    fn columns_mut<'v>(
        &self,
        view: Self::ViewMut<'v>,
        start: usize,
        len: usize,
    ) -> Result<Self::ViewMut<'v>, ModelError> {
        self.cpu.columns_mut(view, start, len)
    }
    fn host<'v>(&self, array: ArrayView2<'v, E>) -> ArrayView2<'v, E> {
        array
    }
    fn host_mut<'v>(&self, array: ArrayViewMut2<'v, E>) -> ArrayViewMut2<'v, E> {
        array
    }
    fn upload(&self, array: Array2<E>) -> Array2<E> {
        array
    }
    fn download(&self, view: ArrayView2<'_, E>) -> Array2<E> {
        view.to_owned()
    }
    fn copy(&self, src: ArrayView2<'_, E>, dst: ArrayViewMut2<'_, E>) -> Result<(), ModelError> {
        self.cpu.copy(src, dst)
    }
    fn add_assign(
        &self,
        src: ArrayView2<'_, E>,
        dst: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        self.cpu.add_assign(src, dst)
    }
    fn fill_rows(
        &self,
        row: ArrayView2<'_, E>,
        dst: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        self.cpu.fill_rows(row, dst)
    }
    fn matmul(
        &self,
        a: ArrayView2<'_, E>,
        transpose_a: Transpose,
        b: ArrayView2<'_, E>,
        transpose_b: Transpose,
        c: ArrayViewMut2<'_, E>,
        accumulate: bool,
    ) -> Result<(), ModelError> {
        self.cpu
            .matmul(a, transpose_a, b, transpose_b, c, accumulate)
    }
    fn pack(
        &self,
        b: ArrayView2<'_, E>,
        transpose: Transpose,
    ) -> Result<PackedMatrix<E>, ModelError> {
        self.cpu.pack(b, transpose)
    }
    fn matmul_packed(
        &self,
        a: ArrayView2<'_, E>,
        b: &PackedMatrix<E>,
        c: ArrayViewMut2<'_, E>,
        accumulate: bool,
    ) -> Result<(), ModelError> {
        self.cpu.matmul_packed(a, b, c, accumulate)
    }
    fn recycle_packed(&self, packed: PackedMatrix<E>) {
        self.cpu.recycle_packed(packed)
    }
    fn add_column_sums(
        &self,
        src: ArrayView2<'_, E>,
        dst: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        self.cpu.add_column_sums(src, dst)
    }
    fn embed(
        &self,
        table: ArrayView2<'_, E>,
        index: &[u32],
        scale: ArrayView2<'_, E>,
        out: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        self.cpu.embed(table, index, scale, out)
    }
    fn embed_backward(
        &self,
        grad_out: ArrayView2<'_, E>,
        index: &[u32],
        scale: ArrayView2<'_, E>,
        grad_table: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        self.cpu.embed_backward(grad_out, index, scale, grad_table)
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
        self.cpu.decay_gates(
            decay,
            decay_bias,
            candidate,
            candidate_bias,
            activation,
            impulse,
        )
    }
    fn decay_gates_backward(
        &self,
        decay: ArrayViewMut2<'_, E>,
        candidate: ArrayViewMut2<'_, E>,
        activation: Candidate,
        grad_decay: ArrayView2<'_, E>,
        grad_impulse: ArrayView2<'_, E>,
    ) -> Result<(), ModelError> {
        self.cpu
            .decay_gates_backward(decay, candidate, activation, grad_decay, grad_impulse)
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
        self.cpu.input_gates(
            forget,
            forget_bias,
            input,
            input_bias,
            candidate,
            candidate_bias,
            impulse,
        )
    }
    fn input_gates_backward(
        &self,
        forget: ArrayViewMut2<'_, E>,
        input: ArrayViewMut2<'_, E>,
        candidate: ArrayViewMut2<'_, E>,
        grad_decay: ArrayView2<'_, E>,
        grad_impulse: ArrayView2<'_, E>,
    ) -> Result<(), ModelError> {
        self.cpu
            .input_gates_backward(forget, input, candidate, grad_decay, grad_impulse)
    }
    fn output_gate(
        &self,
        gate: ArrayViewMut2<'_, E>,
        bias: ArrayView2<'_, E>,
        cell: ArrayView2<'_, E>,
        skip: Option<ArrayView2<'_, E>>,
        out: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        self.cpu.output_gate(gate, bias, cell, skip, out)
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
        self.cpu
            .output_gate_backward(gate, cell, skip, grad_out, grad_cell, grad_skip)
    }
    fn lstm_cell(
        &self,
        gates: ArrayViewMut2<'_, E>,
        cell_prev: Option<ArrayView2<'_, E>>,
        cell: ArrayViewMut2<'_, E>,
        out: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        self.cpu.lstm_cell(gates, cell_prev, cell, out)
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
        self.cpu
            .lstm_cell_backward(gates, cell, cell_prev, grad_out, grad_recurrent, grad_cell)
    }
    fn tanh(&self, x: ArrayView2<'_, E>, out: ArrayViewMut2<'_, E>) -> Result<(), ModelError> {
        self.cpu.tanh(x, out)
    }
    fn tanh_backward(
        &self,
        y: ArrayView2<'_, E>,
        grad: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        self.cpu.tanh_backward(y, grad)
    }

    fn scan(
        &self,
        n_steps: usize,
        decay: ArrayView2<'_, E>,
        impulse: ArrayView2<'_, E>,
        ends: ScanEnds<ArrayView2<'_, E>>,
        state: ArrayViewMut2<'_, E>,
    ) -> Result<(), ModelError> {
        self.scan_part(n_steps, decay, impulse, ends, state)
            .map(drop)
    }

    /// The distributed scan; on every rank but the first, the state entering its part is
    /// the carry from the ranks before it.
    fn scan_part(
        &self,
        n_steps: usize,
        decay: ArrayView2<'_, E>,
        impulse: ArrayView2<'_, E>,
        ends: ScanEnds<ArrayView2<'_, E>>,
        state: ArrayViewMut2<'_, E>,
    ) -> Result<Option<Array2<E>>, ModelError> {
        check_scan_views("SplitBackend::scan", n_steps, decay, impulse, ends, &state)?;
        let state_dims = (decay.nrows() / n_steps.max(1), decay.ncols());
        let inputs = ForwardInputs {
            decay: as_steps(decay.view(), n_steps)?,
            impulse: as_steps(impulse.view(), n_steps)?,
            initial: ends
                .initial
                .as_ref()
                .map(|v| as_row(v.view()))
                .transpose()?,
            direction: Direction::Forward,
        };
        let entering = self
            .scan
            .forward_into(inputs, as_steps_mut(state, n_steps)?)
            .map_err(|e| failed("DistributedScan::forward", e))?;
        if self.position().0 == 0 {
            return Ok(None);
        }
        entering
            .into_shape_with_order(state_dims)
            .map(Some)
            .map_err(|e| failed("SplitBackend::scan", e))
    }

    /// The distributed backward scan: `ends.initial` is the state that entered this part
    /// (what [`SplitBackend::scan_part`] returned, or h0 on the first rank), `ends.grad_last`
    /// belongs to the last rank.
    fn scan_backward(
        &self,
        n_steps: usize,
        decay: ArrayView2<'_, E>,
        state: ArrayView2<'_, E>,
        ends: ScanEnds<ArrayView2<'_, E>>,
        grad_state: ArrayView2<'_, E>,
        grad_decay: ArrayViewMut2<'_, E>,
        grad_impulse: ArrayViewMut2<'_, E>,
        grad_initial: Option<ArrayViewMut2<'_, E>>,
    ) -> Result<(), ModelError> {
        check_scan_backward_views(
            "SplitBackend::scan_backward",
            n_steps,
            decay,
            state,
            ends,
            grad_state,
            &grad_decay,
            &grad_impulse,
            grad_initial.as_ref(),
        )?;
        let inputs = BackwardInputs {
            decay: as_steps(decay.view(), n_steps)?,
            state: as_steps(state.view(), n_steps)?,
            initial: ends
                .initial
                .as_ref()
                .map(|v| as_row(v.view()))
                .transpose()?,
            grad_state: as_steps(grad_state.view(), n_steps)?,
            grad_last: ends
                .grad_last
                .as_ref()
                .map(|v| as_row(v.view()))
                .transpose()?,
            direction: Direction::Forward,
        };
        let (mut grad_decay, mut grad_impulse, mut grad_initial) =
            (grad_decay, grad_impulse, grad_initial);
        let outputs = BackwardOutputs {
            grad_decay: as_steps_mut(grad_decay.view_mut(), n_steps)?,
            grad_impulse: as_steps_mut(grad_impulse.view_mut(), n_steps)?,
            grad_initial: grad_initial
                .as_mut()
                .map(|v| as_row_mut(v.view_mut()))
                .transpose()?,
        };
        self.scan
            .backward_into(inputs, outputs)
            .map_err(|e| failed("DistributedScan::backward", e))
    }

    /// Every rank but the first receives the state entering its part from the rank
    /// before; every rank but the last sends the state leaving its part to the rank after.
    fn carry<F>(
        &self,
        given: Option<ArrayView2<'_, E>>,
        dims: (usize, usize),
        leaving: F,
    ) -> Result<(Option<Array2<E>>, Array2<E>), ModelError>
    where
        F: for<'v> FnOnce(Option<ArrayView2<'v, E>>) -> Result<Array2<E>, ModelError>,
    {
        let (rank, size) = self.position();
        let entered = (rank > 0).then(|| self.receive(rank - 1, dims));
        let result = match (&entered, given) {
            (Some(_), Some(_)) => Err(misplaced("an incoming state")),
            (Some(entered), None) => leaving(Some(entered.view())),
            (None, given) => leaving(given),
        };
        if rank + 1 < size {
            self.send(rank + 1, result.as_ref().ok().map(|m| m.view()), dims);
        }
        Ok((entered, result?))
    }

    /// Every rank but the last receives ∂L/∂(state leaving its part) from the rank after;
    /// every rank but the first sends ∂L/∂(state entering its part) to the rank before.
    fn carry_backward<F>(
        &self,
        given: Option<ArrayView2<'_, E>>,
        dims: (usize, usize),
        grad_entering: F,
    ) -> Result<Option<Array2<E>>, ModelError>
    where
        F: for<'v> FnOnce(Option<ArrayView2<'v, E>>) -> Result<Option<Array2<E>>, ModelError>,
    {
        let (rank, size) = self.position();
        let from_next = (rank + 1 < size).then(|| self.receive(rank + 1, dims));
        let result = match (&from_next, given) {
            (Some(_), Some(_)) => Err(misplaced("a final-state gradient")),
            (Some(from_next), None) => grad_entering(Some(from_next.view())),
            (None, given) => grad_entering(given),
        };
        if rank > 0 {
            let zeros = Array2::zeros(dims);
            let sent = match &result {
                Ok(Some(grad)) => Some(grad.view()),
                Ok(None) => Some(zeros.view()),
                Err(_) => None,
            };
            self.send(rank - 1, sent, dims);
        }
        result
    }
}

fn misplaced(what: &str) -> ModelError {
    ModelError::InvalidInput {
        operation: "SplitBackend::carry",
        reason: format!(
            "{what} was passed to a part of a split sequence that receives it from a neighbour"
        ),
    }
}

/// A local scan whose every call runs in the subnormal mode of `CpuBackend` (on its
/// flushing pool), so that a split pass computes as a one-process pass does. The chunk
/// passes hold no MPI call, so moving them to a pool thread is safe.
pub(crate) struct Flushed<S> {
    pub(crate) local: S,
    pub(crate) mode: Subnormals,
}

impl<E: Element, S: LinearScan<E>> LinearScan<E> for Flushed<S> {
    fn name(&self) -> &'static str {
        self.local.name()
    }

    fn forward_checked(&self, problem: ForwardProblem<'_, '_, E>) -> Result<(), ScanError> {
        self.mode.install(|| self.local.forward_checked(problem))
    }

    fn backward_checked(&self, problem: BackwardProblem<'_, '_, E>) -> Result<(), ScanError> {
        self.mode.install(|| self.local.backward_checked(problem))
    }

    fn forward_map(
        &self,
        decay: ArrayView2<'_, E>,
        impulse: ArrayView2<'_, E>,
        direction: Direction,
    ) -> Result<ChunkMap<E>, ScanError> {
        self.mode
            .install(|| self.local.forward_map(decay, impulse, direction))
    }

    fn backward_map(
        &self,
        decay: ArrayView2<'_, E>,
        grad_state: ArrayView2<'_, E>,
        direction: Direction,
    ) -> Result<ChunkMap<E>, ScanError> {
        self.mode
            .install(|| self.local.backward_map(decay, grad_state, direction))
    }
}
