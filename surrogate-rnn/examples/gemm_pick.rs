//! Which matrix-product library the CPU backend uses, chosen with numbers: the products
//! the layers compute, at their real shapes, timed with ndarray/matrixmultiply, with the
//! `gemm` crate on one thread and on both, and through `CpuBackend::matmul` (the path the
//! layers take), once per gate block (`G` products into separate `(rows, n)` buffers) and
//! once as one product into a `(rows, G·n)` buffer, and through `CpuBackend::matmul_packed`
//! on the weight packed once (the LSTM's per-step products); with the feature `openblas`,
//! also OpenBLAS's `sgemm` (the system library, its own threads). Prints one table measured
//! in one run, with a large square product as the machine's reference rate.
//!
//! `cargo run --release -p surrogate-rnn --example gemm_pick [--features openblas] [-- --quick]`
//! (`-- --check` only checks the OpenBLAS call against matrixmultiply, for CI.)
//!
//! Shapes (`rows = T·B`): GILR-LSTM at (T, n, B) = (1024, 512, 8) and (8192, 64, 8) with a
//! one-hot p = 128 input, Table 2's GILR-LSTM (2 × 256, input 4, B·T = 65,536), and the
//! LSTM baseline's per-step products `(B, n)·(n, 4n)` and their backward `(B, 4n)·(4n, n)`.

use std::time::Instant;

use gemm::Parallelism;
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};
use scan_cpu::Serial;
use surrogate_rnn::backend::{PackedMatrix, Transpose};
use surrogate_rnn::{Backend, CpuBackend};

#[path = "common/gemm_call.rs"]
mod gemm_call;
use gemm_call::{filled, gemm_product};

/// Which product a group times: the layers' forward projection, the weight gradient and
/// the input gradient of its backward.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// `P(rows, G·n) = X(rows, m)·W(m, G·n)`.
    Forward,
    /// `∂W(m, G·n) += Xᵀ·∂P(rows, G·n)`.
    WeightGrad,
    /// `∂X(rows, m) += ∂P(rows, G·n)·Wᵀ`.
    InputGrad,
    /// [`Kind::InputGrad`] from a row-major copy of `Wᵀ` (made once, outside the timing).
    InputGradCopied,
}

struct Group {
    label: &'static str,
    kind: Kind,
    rows: usize,
    m: usize,
    n: usize,
    gates: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Library {
    Matrixmultiply,
    GemmOneThread,
    GemmBothThreads,
    Backend,
    /// `CpuBackend::matmul_packed` on the weight packed once (outside the timing), as the
    /// LSTM's per-step products run.
    BackendPacked,
    /// OpenBLAS's `cblas_sgemm`, threaded by OpenBLAS itself.
    #[cfg(feature = "openblas")]
    OpenBlas,
}

/// `c (+)= a·b` through OpenBLAS.
#[cfg(feature = "openblas")]
mod openblas {
    use cblas_sys::{cblas_sgemm, CblasNoTrans, CblasRowMajor, CblasTrans, CBLAS_TRANSPOSE};
    use ndarray::{ArrayView2, ArrayViewMut2};

    #[link(name = "openblas")]
    extern "C" {
        /// The kernel family OpenBLAS chose (or was told by `OPENBLAS_CORETYPE`).
        fn openblas_get_corename() -> *const std::ffi::c_char;
    }

    /// OpenBLAS's kernel family, for the table's header.
    pub fn core_name() -> String {
        // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(openblas_get_corename()) }
            .to_string_lossy()
            .into_owned()
    }

    /// How CBLAS reads `a` as a row-major operand: `(transpose, leading dimension)`, or
    /// `None` unless one axis is contiguous and the other's stride is at least the
    /// contiguous extent (so CBLAS addresses exactly the view's elements).
    fn layout(a: &ArrayView2<'_, f32>) -> Option<(CBLAS_TRANSPOSE, i32)> {
        let [rows, cols] = [a.nrows() as isize, a.ncols() as isize];
        let [row_stride, col_stride] = [a.strides()[0], a.strides()[1]];
        let (transpose, ld, extent) = match (row_stride, col_stride) {
            (ld, 1) => (CblasNoTrans, ld, cols),
            (1, ld) => (CblasTrans, ld, rows),
            _ => return None,
        };
        (ld >= extent.max(1)).then_some(())?;
        Some((transpose, i32::try_from(ld).ok()?))
    }

    pub fn product(
        a: ArrayView2<'_, f32>,
        b: ArrayView2<'_, f32>,
        mut c: ArrayViewMut2<'_, f32>,
        accumulate: bool,
    ) {
        let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
        assert!(b.nrows() == k && c.dim() == (m, n));
        let layouts = (layout(&a), layout(&b), layout(&c.view()));
        let (Some((ta, lda)), Some((tb, ldb)), Some((CblasNoTrans, ldc))) = layouts else {
            panic!("OpenBLAS takes contiguous rows or columns, and a row-major result");
        };
        let dim = |x: usize| i32::try_from(x).unwrap();
        let beta = if accumulate { 1.0 } else { 0.0 };
        // SAFETY: the shapes are checked above and each leading dimension is the stride of
        // the view's rows (or, transposed, columns), so OpenBLAS reads and writes only
        // elements of the views; `c` is a unique borrow.
        unsafe {
            cblas_sgemm(
                CblasRowMajor,
                ta,
                tb,
                dim(m),
                dim(n),
                dim(k),
                1.0,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                beta,
                c.as_mut_ptr(),
                ldc,
            );
        }
    }

    /// Checks the strides' mapping once: OpenBLAS against matrixmultiply on column blocks
    /// and transposed views, as the table uses them.
    pub fn check() {
        let (a, b) = (super::filled(37, 21, 1), super::filled(21, 50, 2));
        let b_block = b.slice(ndarray::s![.., 3..20]);
        let a_t = a.t().as_standard_layout().into_owned();
        for (a, b) in [
            (a.view(), b_block),
            (a_t.t(), b_block),
            (
                a.view(),
                b_block
                    .t()
                    .as_standard_layout()
                    .into_owned()
                    .reversed_axes()
                    .view(),
            ),
        ] {
            let mut expected = super::filled(37, 17, 3);
            let mut actual = expected.clone();
            ndarray::linalg::general_mat_mul(1.0, &a, &b, 1.0, &mut expected);
            product(a, b, actual.view_mut(), true);
            let diff = (&expected - &actual).fold(0.0_f32, |m, d| m.max(d.abs()));
            assert!(diff < 1e-4, "OpenBLAS differs by {diff}");
        }
    }
}

fn product(
    library: Library,
    backend: &CpuBackend<'_, f32>,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    mut c: ArrayViewMut2<'_, f32>,
    accumulate: bool,
) {
    match library {
        Library::Matrixmultiply => {
            general_mat_mul(1.0, &a, &b, if accumulate { 1.0 } else { 0.0 }, &mut c)
        }
        Library::GemmOneThread => gemm_product(a, b, c, accumulate, Parallelism::None),
        Library::GemmBothThreads => gemm_product(a, b, c, accumulate, Parallelism::Rayon(0)),
        Library::Backend => backend
            .matmul(a, Transpose::No, b, Transpose::No, c, accumulate)
            .expect("shapes fit"),
        // Run through `Operands::packed_product`, which holds the packed weight.
        Library::BackendPacked => unreachable!("packed products take a packed weight"),
        #[cfg(feature = "openblas")]
        Library::OpenBlas => openblas::product(a, b, c, accumulate),
    }
}

/// The operands of one group, merged (`(rows, G·n)` gate matrix) and per gate.
struct Operands {
    x: Array2<f32>,
    w: Array2<f32>,
    merged: Array2<f32>,
    per_gate: Vec<Array2<f32>>,
    grad_x: Array2<f32>,
    grad_w: Array2<f32>,
    w_t: Array2<f32>,
    /// `W` and `Wᵀ` packed by the backend.
    packed: [PackedMatrix<f32>; 2],
}

impl Operands {
    fn new(g: &Group, backend: &CpuBackend<'_, f32>) -> Self {
        let width = g.gates * g.n;
        let w = filled(g.m, width, 2);
        let pack = |t| backend.pack(w.view(), t).expect("packable");
        let packed = [pack(Transpose::No), pack(Transpose::Yes)];
        Self {
            packed,
            x: filled(g.rows, g.m, 1),
            w: filled(g.m, width, 2),
            merged: filled(g.rows, width, 3),
            per_gate: (0..g.gates)
                .map(|k| filled(g.rows, g.n, 4 + k as u64))
                .collect(),
            grad_x: Array2::zeros((g.rows, g.m)),
            grad_w: Array2::zeros((g.m, width)),
            w_t: filled(g.m, width, 2).t().as_standard_layout().into_owned(),
        }
    }

    /// Runs the group's products once, merged or per gate.
    fn run(&mut self, g: &Group, library: Library, merged: bool, backend: &CpuBackend<'_, f32>) {
        let n = g.n;
        if library == Library::BackendPacked {
            let (a, packed, c, accumulate) = match g.kind {
                Kind::Forward => (&self.x, &self.packed[0], self.merged.view_mut(), false),
                _ => (&self.merged, &self.packed[1], self.grad_x.view_mut(), true),
            };
            backend
                .matmul_packed(a.view(), packed, c, accumulate)
                .expect("shapes fit");
            return;
        }
        match (g.kind, merged) {
            (Kind::Forward, true) => product(
                library,
                backend,
                self.x.view(),
                self.w.view(),
                self.merged.view_mut(),
                false,
            ),
            (Kind::Forward, false) => {
                for (k, p) in self.per_gate.iter_mut().enumerate() {
                    let w_k = self.w.slice(s![.., k * n..(k + 1) * n]);
                    product(library, backend, self.x.view(), w_k, p.view_mut(), false);
                }
            }
            (Kind::WeightGrad, true) => product(
                library,
                backend,
                self.x.t(),
                self.merged.view(),
                self.grad_w.view_mut(),
                true,
            ),
            (Kind::WeightGrad, false) => {
                for (k, p) in self.per_gate.iter().enumerate() {
                    let gw = self.grad_w.slice_mut(s![.., k * n..(k + 1) * n]);
                    product(library, backend, self.x.t(), p.view(), gw, true);
                }
            }
            (Kind::InputGrad, true) => product(
                library,
                backend,
                self.merged.view(),
                self.w.t(),
                self.grad_x.view_mut(),
                true,
            ),
            (Kind::InputGradCopied, _) => product(
                library,
                backend,
                self.merged.view(),
                self.w_t.view(),
                self.grad_x.view_mut(),
                true,
            ),
            (Kind::InputGrad, false) => {
                for (k, p) in self.per_gate.iter().enumerate() {
                    let w_k = self.w.slice(s![.., k * n..(k + 1) * n]);
                    product(
                        library,
                        backend,
                        p.view(),
                        w_k.t(),
                        self.grad_x.view_mut(),
                        true,
                    );
                }
            }
        }
    }
}

/// How many calls of `work` make one sample of at least 2 ms.
fn batch_size(mut work: impl FnMut()) -> usize {
    work();
    let start = Instant::now();
    work();
    let once = start.elapsed().as_secs_f64().max(1e-7);
    ((2e-3 / once).ceil() as usize).max(1)
}

/// Seconds per call of `work`, one sample of `batch` calls.
fn sample(batch: usize, mut work: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..batch {
        work();
    }
    start.elapsed().as_secs_f64() / batch as f64
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn groups(quick: bool) -> Vec<Group> {
    let g = |label, kind, rows, m, n, gates| Group {
        label,
        kind,
        rows,
        m,
        n,
        gates,
    };
    use Kind::*;
    let mut all = vec![
        g("n=512 layer 2 input gates", Forward, 8192, 512, 512, 6),
        g("n=512 recurrent gates", Forward, 8184, 512, 512, 4),
        g("n=512 layer 2 ∂V", WeightGrad, 8192, 512, 512, 6),
        g("n=512 layer 2 ∂x", InputGrad, 8192, 512, 512, 6),
        g("n=64 layer 1 input gates", Forward, 65536, 128, 64, 6),
        g("n=64 recurrent gates", Forward, 65528, 64, 64, 4),
        g("n=64 layer 2 ∂V", WeightGrad, 65536, 64, 64, 6),
        g("Table 2 layer 2 input gates", Forward, 65536, 256, 256, 6),
        g("Table 2 layer 2 ∂V", WeightGrad, 65536, 256, 256, 6),
        g("Table 2 layer 2 ∂x", InputGrad, 65536, 256, 256, 6),
        g("LSTM n=512 B=8 step", Forward, 8, 512, 512, 4),
        g("LSTM n=512 B=8 step ∂h", InputGrad, 8, 512, 512, 4),
        g(
            "LSTM n=512 B=8 step ∂h, Uᵀ copied",
            InputGradCopied,
            8,
            512,
            512,
            4,
        ),
        g("LSTM n=64 B=8 step", Forward, 8, 64, 64, 4),
        g("LSTM n=64 B=8 step ∂h", InputGrad, 8, 64, 64, 4),
        g("LSTM n=64 B=1 step", Forward, 1, 64, 64, 4),
        g("LSTM n=64 B=1 step ∂h", InputGrad, 1, 64, 64, 4),
        g(
            "LSTM n=64 B=1 step ∂h, Uᵀ copied",
            InputGradCopied,
            1,
            64,
            64,
            4,
        ),
    ];
    if quick {
        all.retain(|g| g.rows <= 8192);
    }
    all
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 2 } else { 5 };
    let scan = Serial::default();
    let backend = CpuBackend::new(&scan);
    println!(
        "# f32 products, GFLOP/s (best of {rounds} interleaved samples); {} threads in rayon's pool; load at start {}",
        rayon::current_num_threads(),
        load()
    );
    #[cfg(feature = "openblas")]
    {
        openblas::check();
        println!("OpenBLAS kernels: {}", openblas::core_name());
    }
    if std::env::args().any(|a| a == "--check") {
        #[cfg(not(feature = "openblas"))]
        {
            eprintln!("--check checks the OpenBLAS call: build with --features openblas");
            std::process::exit(2);
        }
        #[cfg(feature = "openblas")]
        return;
    }
    let side = if quick { 1024 } else { 2048 };
    let (a, b) = (filled(side, side, 7), filled(side, side, 8));
    let mut c = Array2::zeros((side, side));
    let flops = 2.0 * (side as f64).powi(3);
    #[cfg_attr(not(feature = "openblas"), allow(unused_mut))]
    let mut plain = vec![
        ("matrixmultiply", Library::Matrixmultiply),
        ("gemm (2 threads)", Library::GemmBothThreads),
    ];
    #[cfg(feature = "openblas")]
    plain.push(("OpenBLAS", Library::OpenBlas));
    let mut best = vec![f64::INFINITY; plain.len()];
    for _ in 0..rounds {
        for (best, &(_, library)) in best.iter_mut().zip(&plain) {
            let t = sample(1, || {
                product(library, &backend, a.view(), b.view(), c.view_mut(), false)
            });
            *best = best.min(t);
        }
    }
    let rates: Vec<String> = plain
        .iter()
        .zip(&best)
        .map(|((name, _), t)| format!("{name} {:.0}", flops / t / 1e9))
        .collect();
    println!("plain {side}³ product: {}\n", rates.join(", "));
    println!(
        "| product | M × K × N (G gate blocks) | matrixmultiply per gate | matrixmultiply one \
         | gemm 1 thread one | gemm 2 threads one | backend per gate | backend one \
         | backend packed one |{}",
        if cfg!(feature = "openblas") {
            " OpenBLAS per gate | OpenBLAS one |"
        } else {
            ""
        }
    );
    let extra = if cfg!(feature = "openblas") {
        "---:|---:|"
    } else {
        ""
    };
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|{extra}");
    for group in groups(quick) {
        let mut ops = Operands::new(&group, &backend);
        let (rows, width) = (group.rows, group.gates * group.n);
        let dims = match group.kind {
            Kind::Forward => (rows, group.m, width),
            Kind::WeightGrad => (group.m, rows, width),
            Kind::InputGrad | Kind::InputGradCopied => (rows, width, group.m),
        };
        let flops = 2.0 * (dims.0 * dims.1 * dims.2) as f64;
        let all = [
            (Library::Matrixmultiply, false),
            (Library::Matrixmultiply, true),
            (Library::GemmOneThread, true),
            (Library::GemmBothThreads, true),
            (Library::Backend, false),
            (Library::Backend, true),
            (Library::BackendPacked, true),
        ];
        // A weight gradient has no fixed right operand to pack: its column shows "—".
        let packable = group.kind != Kind::WeightGrad;
        let packed_column = all.iter().position(|&(l, _)| l == Library::BackendPacked);
        #[cfg_attr(not(feature = "openblas"), allow(unused_mut))]
        let mut runs: Vec<_> = all
            .into_iter()
            .filter(|&(l, _)| packable || l != Library::BackendPacked)
            .collect();
        #[cfg(feature = "openblas")]
        runs.extend([(Library::OpenBlas, false), (Library::OpenBlas, true)]);
        let runs = &runs[..];
        let batches: Vec<usize> = runs
            .iter()
            .map(|&(library, merged)| batch_size(|| ops.run(&group, library, merged, &backend)))
            .collect();
        // Interleaved rounds, best sample per column: load from other processes hits every
        // column alike and the minimum is the least disturbed sample.
        let mut best = vec![f64::INFINITY; runs.len()];
        for _ in 0..rounds {
            for ((best, &(library, merged)), &batch) in best.iter_mut().zip(runs).zip(&batches) {
                let t = sample(batch, || ops.run(&group, library, merged, &backend));
                *best = best.min(t);
            }
        }
        let mut rates: Vec<String> = best
            .iter()
            .map(|t| format!("{:.1}", flops / t / 1e9))
            .collect();
        if let (false, Some(column)) = (packable, packed_column) {
            rates.insert(column, "—".into());
        }
        println!(
            "| {} | {} × {} × {} ({}) | {} |",
            group.label,
            dims.0,
            dims.1,
            dims.2,
            group.gates,
            rates.join(" | ")
        );
    }
    println!("\nload at end {}", load());
}
