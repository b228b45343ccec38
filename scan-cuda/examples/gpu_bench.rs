//! GPU benchmark of the CUDA scan kernels (feature `cuda`): µs per call, effective GB/s and
//! the fraction of a device-to-device copy measured in the same process, for the paper's
//! Table 1 shapes (batch 1, F = 4, 32, 128) and for large shapes, serial vs parallel kernel.
//!
//! ```text
//! cargo run --release -p scan-cuda --features cuda --example gpu_bench
//! ```
//!
//! Bytes counted are the minimum an f32 scan must move: 12 per element forward (read a and
//! x, write h), 20 backward (read a, h, ∂L/∂h, write ∂L/∂a, ∂L/∂x). Every call synchronises,
//! so small shapes include the launch and synchronisation latency. Large shapes use working
//! sets of at least 100 MB, beyond the 50 MB L2 of an H100.

use std::time::Instant;

use cust::memory::{CopyDestination, DeviceBuffer};
use scan_core::{Direction, ScanShape};
use scan_cuda::{Cuda, CudaScanError, DeviceBackward, DeviceForward, DeviceLayout, Kernel};

struct Buffers {
    decay: DeviceBuffer<f32>,
    impulse: DeviceBuffer<f32>,
    state: DeviceBuffer<f32>,
    grad_decay: DeviceBuffer<f32>,
    grad_impulse: DeviceBuffer<f32>,
}

fn buffers(len: usize) -> Result<Buffers, CudaScanError> {
    let decay: Vec<f32> = (0..len)
        .map(|i| 0.9 + 0.1 * ((i % 97) as f32 / 97.0))
        .collect();
    let impulse: Vec<f32> = (0..len).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
    Ok(Buffers {
        decay: DeviceBuffer::from_slice(&decay)?,
        impulse: DeviceBuffer::from_slice(&impulse)?,
        state: DeviceBuffer::zeroed(len)?,
        grad_decay: DeviceBuffer::zeroed(len)?,
        grad_impulse: DeviceBuffer::zeroed(len)?,
    })
}

/// Median seconds per call of `f` over `reps` calls after one warm-up call.
fn time(
    reps: usize,
    mut f: impl FnMut() -> Result<(), CudaScanError>,
) -> Result<f64, CudaScanError> {
    f()?;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

fn forward(
    backend: &Cuda,
    shape: ScanShape,
    layout: DeviceLayout,
    b: &mut Buffers,
) -> Result<(), CudaScanError> {
    // SAFETY: `main` allocates every buffer after `activate` made the device's primary
    // context current on this thread; they live until `main` returns.
    unsafe {
        backend.forward_device(DeviceForward {
            shape,
            layout,
            direction: Direction::Forward,
            decay: &b.decay,
            impulse: &b.impulse,
            initial: None,
            state: &mut b.state,
        })
    }
}

fn backward(
    backend: &Cuda,
    shape: ScanShape,
    layout: DeviceLayout,
    b: &mut Buffers,
) -> Result<(), CudaScanError> {
    // SAFETY: as in `forward`.
    unsafe {
        backend.backward_device(DeviceBackward {
            shape,
            layout,
            direction: Direction::Forward,
            decay: &b.decay,
            state: &b.state,
            initial: None,
            grad_state: &b.impulse,
            grad_last: None,
            grad_decay: &mut b.grad_decay,
            grad_impulse: &mut b.grad_impulse,
            grad_initial: None,
        })
    }
}

/// Device-to-device copy bandwidth in GB/s (bytes read + written) on a 1 GiB buffer.
fn copy_bandwidth() -> Result<f64, CudaScanError> {
    let len = 1 << 28;
    let source = DeviceBuffer::<f32>::zeroed(len)?;
    let mut target = DeviceBuffer::<f32>::zeroed(len)?;
    let seconds = time(10, || Ok(target.copy_from(&source)?))?;
    Ok(2.0 * (len * 4) as f64 / seconds / 1e9)
}

fn main() -> Result<(), CudaScanError> {
    let parallel = Cuda::default();
    let serial = parallel.with_kernel(Kernel::Serial);
    parallel.activate()?;
    let copy = copy_bandwidth()?;
    println!(
        "device 0: {} SMs; device-to-device copy {copy:.0} GB/s\n",
        parallel.multiprocessor_count()?
    );

    println!("Table 1 shapes (batch 1, f32, time-major, forward): serial vs parallel kernel");
    println!(
        "{:>8} {:>5} {:>12} {:>12} {:>9}",
        "T", "F", "serial µs", "parallel µs", "speedup"
    );
    for n_steps in [16usize, 256, 4096, 65_536] {
        for n_features in [4usize, 32, 128] {
            let shape = ScanShape {
                n_steps,
                n_features,
            };
            let mut b = buffers(n_steps * n_features)?;
            let layout = DeviceLayout::TimeMajor;
            let s = time(50, || forward(&serial, shape, layout, &mut b))?;
            let p = time(200, || forward(&parallel, shape, layout, &mut b))?;
            println!(
                "{n_steps:>8} {n_features:>5} {:>12.1} {:>12.1} {:>8.1}x",
                s * 1e6,
                p * 1e6,
                s / p
            );
        }
    }

    println!("\nLarge shapes (f32, parallel kernel; serial for comparison where it finishes)");
    println!(
        "{:>9} {:>6} {:>15} {:>9} {:>11} {:>8} {:>8} {:>11}",
        "T", "F", "layout", "pass", "µs/call", "GB/s", "of copy", "serial µs"
    );
    for (n_steps, n_features) in [
        (1usize << 20, 1usize),
        (1 << 20, 4),
        (1 << 23, 4),
        (65_536, 12_288),
        (2048, 65_536),
    ] {
        for layout in [DeviceLayout::TimeMajor, DeviceLayout::TimeContiguous] {
            let shape = ScanShape {
                n_steps,
                n_features,
            };
            let mut b = buffers(n_steps * n_features)?;
            for (pass, bytes) in [("forward", 12.0), ("backward", 20.0)] {
                let run = |backend: &Cuda, b: &mut Buffers| match pass {
                    "forward" => forward(backend, shape, layout, b),
                    _ => backward(backend, shape, layout, b),
                };
                let p = time(20, || run(&parallel, &mut b))?;
                let gbs = bytes * (n_steps * n_features) as f64 / p / 1e9;
                let serial_us = if n_features >= 1024 {
                    format!("{:.0}", time(3, || run(&serial, &mut b))? * 1e6)
                } else {
                    "-".to_string()
                };
                println!(
                    "{n_steps:>9} {n_features:>6} {:>15} {pass:>9} {:>11.1} {gbs:>8.0} {:>7.0}% {serial_us:>11}",
                    format!("{layout:?}"),
                    p * 1e6,
                    100.0 * gbs / copy
                );
            }
        }
    }
    Ok(())
}
