//! Why `Parallel` does not split narrow rows over time on two threads: on one thread, the
//! chunk reduction that Algorithm 1's first phase runs on the second core
//! (`LinearScan::forward_map`) against the scan the first core runs directly. Medians of
//! 200 interleaved calls, ns per element.
//!
//! `cargo run --release -p scan-cpu --example reduce_vs_scan`

use std::time::Instant;

use ndarray::Array2;
use scan_core::{Direction, ForwardInputs, LinearScan, ScanError};
use scan_cpu::{Parallel, Parallelism};

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() -> Result<(), ScanError> {
    let one_thread = Parallel {
        parallelism: Parallelism::None,
        ..Parallel::default()
    };
    println!("| T | F | scan (ns/element) | reduction (ns/element) |");
    println!("|---:|---:|---:|---:|");
    for (t, f) in [(32768, 4), (65536, 4), (1 << 20, 4), (65536, 1)] {
        let decay = Array2::<f32>::from_elem((t, f), 0.99);
        let impulse = Array2::<f32>::from_elem((t, f), 0.1);
        let mut out = Array2::<f32>::zeros((t, f));
        let (mut scans, mut reductions) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            let start = Instant::now();
            let inputs = ForwardInputs {
                decay: decay.view(),
                impulse: impulse.view(),
                initial: None,
                direction: Direction::Forward,
            };
            one_thread.forward_into(inputs, out.view_mut())?;
            scans.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            let map = one_thread.forward_map(decay.view(), impulse.view(), Direction::Forward)?;
            reductions.push(start.elapsed().as_secs_f64());
            std::hint::black_box(map);
        }
        let per_element = 1e9 / (t * f) as f64;
        let (scan, reduction) = (median(scans), median(reductions));
        println!(
            "| {t} | {f} | {:.3} | {:.3} |",
            scan * per_element,
            reduction * per_element
        );
    }
    Ok(())
}
