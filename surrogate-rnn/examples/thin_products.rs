//! Why products with two short sides bypass the `gemm` crate: each shape timed through
//! the `gemm` crate on both threads and through `CpuBackend::matmul` (whose thin route
//! takes `k, n ≤ 8` with `k·n ≤ 32` or `k ≤ 8` with `n ≥ 64`, and weight gradients with
//! `m, n ≤ 8` and `k ≥ 1024`), in one run.
//! Prints the median of 15 calls per shape and the ratio. (The backend's general route
//! also splits a weight gradient's long inner dimension over both threads, which the
//! plain `gemm` call here does not: that is the ratio of the `Xᵀ·∂P` rows not on the thin
//! route.)
//!
//! `cargo run --release -p surrogate-rnn --example thin_products [-- rows]`
//! (default 1,048,576 rows: Table 3 at n = 2²⁰ runs a 1 × 4 layer on 8 inputs, batch 8,
//! in chunks of 2¹⁷ steps.)

use std::time::Instant;

use ndarray::Array2;
use scan_cpu::Serial;
use surrogate_rnn::backend::Transpose;
use surrogate_rnn::{Backend, CpuBackend};

#[path = "common/gemm_call.rs"]
mod gemm_call;
use gemm_call::{filled, gemm_product};

/// The `gemm` crate on rayon's pool.
const BOTH: gemm::Parallelism = gemm::Parallelism::Rayon(0);

/// Median milliseconds of 15 calls of `work`, after one warm-up call.
fn median_ms(mut work: impl FnMut()) -> f64 {
    work();
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[7]
}

fn main() {
    let rows = std::env::args()
        .nth(1)
        .map(|r| r.parse().expect("rows: a number"))
        .unwrap_or(1 << 20);
    let scan = Serial::default();
    let backend = CpuBackend::<f32>::new(&scan);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split(':').nth(1)?.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "# c += op(a)·op(b), f32, {rows} rows, {cpu}, {} threads",
        rayon::current_num_threads()
    );
    println!(
        "| product | m × k × n | backend route | gemm crate ms | backend ms | backend / gemm |"
    );
    println!("|---|---|---|---:|---:|---:|");
    for (k, n) in [
        (4, 4),
        (8, 4),
        (4, 8),
        (8, 8),
        (4, 16),
        (16, 16),
        (4, 64),
        (8, 64),
        (4, 256),
        (8, 256),
        (2, 512),
    ] {
        let (x, w) = (filled(rows, k, 1), filled(k, n, 2));
        let (mut p, mut grad_x, mut grad_w) = (
            Array2::zeros((rows, n)),
            Array2::zeros((rows, k)),
            Array2::zeros((k, n)),
        );
        let cases: [(&str, [usize; 3], f64, f64); 3] = [
            (
                "X·W",
                [rows, k, n],
                median_ms(|| gemm_product(x.view(), w.view(), p.view_mut(), true, BOTH)),
                median_ms(|| {
                    let c = p.view_mut();
                    backend
                        .matmul(x.view(), Transpose::No, w.view(), Transpose::No, c, true)
                        .expect("shapes fit")
                }),
            ),
            (
                "∂P·Wᵀ",
                [rows, n, k],
                median_ms(|| gemm_product(p.view(), w.t(), grad_x.view_mut(), true, BOTH)),
                median_ms(|| {
                    let c = grad_x.view_mut();
                    backend
                        .matmul(p.view(), Transpose::No, w.view(), Transpose::Yes, c, true)
                        .expect("shapes fit")
                }),
            ),
            (
                "Xᵀ·∂P",
                [k, rows, n],
                median_ms(|| gemm_product(x.t(), p.view(), grad_w.view_mut(), true, BOTH)),
                median_ms(|| {
                    let c = grad_w.view_mut();
                    backend
                        .matmul(x.view(), Transpose::Yes, p.view(), Transpose::No, c, true)
                        .expect("shapes fit")
                }),
            ),
        ];
        for (name, [m, k, n], gemm, ours) in cases {
            // The backend's rule (`backend::thin`), restated for the table.
            let thin =
                (k <= 8 && (n <= 8 && k * n <= 32 || n >= 64)) || (m <= 8 && n <= 8 && k >= 1024);
            let route = if thin { "thin" } else { "gemm crate" };
            println!(
                "| {name} | {m} × {k} × {n} | {route} | {gemm:.3} | {ours:.3} | {:.2} |",
                ours / gemm
            );
        }
    }
}
