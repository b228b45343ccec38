//! The CPU backend's elementwise passes accept every view the `Backend` trait allows: a
//! column block of a wider matrix (the rows strided) and a transposed view (the columns
//! strided, which the passes copy into contiguous rows and write back; with it, a bias
//! whose columns are strided). Each gives the same bits as contiguous operands and writes
//! nothing outside its block.

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};
use scan_cpu::Serial;
use surrogate_rnn::backend::Candidate;
use surrogate_rnn::{Backend, CpuBackend, ReferenceBackend};

/// How an operand is laid out in memory.
#[derive(Clone, Copy, Debug)]
enum Layout {
    Contiguous,
    /// Columns `3..3 + n` of a matrix 7 columns wider.
    ColumnBlock,
    /// The transpose of a column-major copy.
    Transposed,
}

/// Storage holding `values` in `layout`, from which [`Stored::view`] and
/// [`Stored::view_mut`] give the `(rows, n)` operand.
struct Stored {
    data: Array2<f32>,
    layout: Layout,
    n: usize,
}

impl Stored {
    fn new(values: &Array2<f32>, layout: Layout) -> Self {
        let (rows, n) = values.dim();
        let data = match layout {
            Layout::Contiguous => values.clone(),
            Layout::ColumnBlock => {
                let mut wide = Array2::from_elem((rows, n + 7), f32::NAN);
                wide.slice_mut(s![.., 3..3 + n]).assign(values);
                wide
            }
            Layout::Transposed => {
                let mut columns = Array2::zeros((n, rows));
                columns.assign(&values.t());
                columns
            }
        };
        Self { data, layout, n }
    }

    fn view(&self) -> ArrayView2<'_, f32> {
        match self.layout {
            Layout::Contiguous => self.data.view(),
            Layout::ColumnBlock => self.data.slice(s![.., 3..3 + self.n]),
            Layout::Transposed => self.data.t(),
        }
    }

    fn view_mut(&mut self) -> ArrayViewMut2<'_, f32> {
        match self.layout {
            Layout::Contiguous => self.data.view_mut(),
            Layout::ColumnBlock => self.data.slice_mut(s![.., 3..3 + self.n]),
            Layout::Transposed => self.data.view_mut().reversed_axes(),
        }
    }

    fn values(&self) -> Array2<f32> {
        if let Layout::ColumnBlock = self.layout {
            let outside = [s![.., ..3], s![.., 3 + self.n..]];
            let untouched = outside
                .iter()
                .all(|&o| self.data.slice(o).iter().all(|v| v.is_nan()));
            assert!(untouched, "a pass wrote outside its column block");
        }
        self.view().to_owned()
    }
}

/// A `(1, n)` bias stored in `layout`; for [`Layout::Transposed`], every second value of
/// a row (its columns strided).
fn bias(values: &Array2<f32>, layout: Layout) -> (Array2<f32>, Layout) {
    match layout {
        Layout::Transposed => {
            let mut wide = Array2::from_elem((1, 2 * values.ncols()), f32::NAN);
            wide.slice_mut(s![.., ..;2]).assign(values);
            (wide, layout)
        }
        _ => (Stored::new(values, layout).data, layout),
    }
}

fn bias_view(data: &Array2<f32>, layout: Layout, n: usize) -> ArrayView2<'_, f32> {
    match layout {
        Layout::Contiguous => data.view(),
        Layout::ColumnBlock => data.slice(s![.., 3..3 + n]),
        Layout::Transposed => data.slice(s![.., ..;2]),
    }
}

fn values(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        let k = (r * 131 + c * 71 + seed * 29) % 211;
        (k as f32 - 105.0) / 40.0
    })
}

/// Runs the passes on operands in `layout` and returns every operand afterwards.
fn run(layout: Layout, rows: usize, n: usize) -> Vec<Array2<f32>> {
    let scan = Serial::default();
    let b = CpuBackend::new(&scan);
    let mut m: Vec<Stored> = (0..6)
        .map(|k| Stored::new(&values(rows, n, k), layout))
        .collect();
    let mut gates = Stored::new(&values(rows, 4 * n, 6), layout);
    let (bias_data, bias_layout) = bias(&values(1, n, 7), layout);
    let bias = Biased {
        data: &bias_data,
        layout: bias_layout,
        n,
    };
    let [p, q, r, u, v, w] = &mut m[..] else {
        unreachable!()
    };
    let tanh = Candidate::Tanh;
    b.decay_gates(
        p.view_mut(),
        bias.view(),
        q.view_mut(),
        bias.view(),
        tanh,
        r.view_mut(),
    )
    .unwrap();
    b.decay_gates_backward(p.view_mut(), q.view_mut(), tanh, u.view(), v.view())
        .unwrap();
    b.input_gates(
        p.view_mut(),
        bias.view(),
        q.view_mut(),
        bias.view(),
        r.view_mut(),
        bias.view(),
        u.view_mut(),
    )
    .unwrap();
    b.input_gates_backward(p.view_mut(), q.view_mut(), r.view_mut(), v.view(), w.view())
        .unwrap();
    b.output_gate(
        p.view_mut(),
        bias.view(),
        q.view(),
        Some(r.view()),
        u.view_mut(),
    )
    .unwrap();
    b.output_gate_backward(
        p.view_mut(),
        q.view(),
        Some(r.view()),
        u.view(),
        v.view_mut(),
        Some(w.view_mut()),
    )
    .unwrap();
    b.output_gate(p.view_mut(), bias.view(), q.view(), None, r.view_mut())
        .unwrap();
    b.output_gate_backward(p.view_mut(), q.view(), None, r.view(), u.view_mut(), None)
        .unwrap();
    b.tanh(p.view(), q.view_mut()).unwrap();
    b.tanh_backward(q.view(), r.view_mut()).unwrap();
    b.lstm_cell(gates.view_mut(), Some(p.view()), q.view_mut(), r.view_mut())
        .unwrap();
    b.lstm_cell_backward(
        gates.view_mut(),
        q.view(),
        Some(p.view()),
        r.view(),
        u.view(),
        v.view_mut(),
    )
    .unwrap();
    let mut sums = Stored::new(&values(1, n, 8), layout);
    b.add_column_sums(v.view(), sums.view_mut()).unwrap();
    m.iter()
        .chain([&gates, &sums])
        .map(Stored::values)
        .collect()
}

/// The bias operand of [`run`].
struct Biased<'a> {
    data: &'a Array2<f32>,
    layout: Layout,
    n: usize,
}

impl Biased<'_> {
    fn view(&self) -> ArrayView2<'_, f32> {
        bias_view(self.data, self.layout, self.n)
    }
}

#[test]
fn strided_operands_give_the_contiguous_bits() {
    // 37 columns: not a multiple of any vector width; 3000 rows: split over the pool.
    for (rows, n) in [(5, 37), (3000, 37), (1, 1)] {
        let expected = run(Layout::Contiguous, rows, n);
        for layout in [Layout::ColumnBlock, Layout::Transposed] {
            let got = run(layout, rows, n);
            for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
                let same = g.iter().zip(e).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{layout:?}, {rows} × {n}, operand {k} differs");
            }
        }
    }
}

/// Column sums large enough to be split over the pool (blocks of rows), in every layout.
#[test]
fn large_column_sums_give_the_contiguous_bits() {
    let scan = Serial::default();
    let b = CpuBackend::new(&scan);
    let (rows, n) = (60_000, 37);
    let sums = |layout| {
        let src = Stored::new(&values(rows, n, 1), layout);
        let mut dst = Stored::new(&values(1, n, 2), layout);
        b.add_column_sums(src.view(), dst.view_mut()).unwrap();
        dst.values()
    };
    let expected = sums(Layout::Contiguous);
    for layout in [Layout::ColumnBlock, Layout::Transposed] {
        let same = sums(layout)
            .iter()
            .zip(&expected)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{layout:?} column sums differ");
    }
}

/// Column sums over many blocks of rows, on the calling thread (fewer than 2 Mi elements)
/// and on the pool, with a last block shorter than the others, are the sums (to f32
/// rounding of `rows` additions, against the reference backend's f64 sums).
#[test]
fn column_sums_over_many_blocks_are_the_sums() {
    let scan = Serial::default();
    let b = CpuBackend::new(&scan);
    for (rows, n) in [(10_000, 37), (60_001, 37), (300_001, 1), (5, 0)] {
        let src = values(rows, n, 3);
        let start = values(1, n, 4);
        let (mut got, mut want) = (start.clone(), start.clone());
        b.add_column_sums(src.view(), got.view_mut()).unwrap();
        ReferenceBackend
            .add_column_sums(src.view(), want.view_mut())
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            let tolerance = 1e-6 * rows as f32 * (1.0 + w.abs());
            assert!((g - w).abs() <= tolerance, "{rows} × {n}: {g} vs {w}");
        }
    }
}
