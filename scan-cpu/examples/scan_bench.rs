//! Prints one table: for each shape and direction, Serial and Parallel ns per element,
//! their ratio, and each one's throughput as a fraction of this machine's memory-copy
//! bandwidth measured in the same run (12 bytes per element forward: read a, read x,
//! write h; 20 backward: read a, h, ∂L/∂h, write ∂L/∂x, ∂L/∂a).
//!
//! `cargo run --release -p scan-cpu --example scan_bench [-- --quick] [-- --json]
//! [-- --isa avx2|avx512|baseline] [-- --shape T,F ...]`
//!
//! Buffers are allocated once per shape (with transparent huge pages requested) and
//! reused across repetitions, so setting them up faults pages outside the timed calls; the
//! minor page faults that do occur inside the timed calls (getrusage around each timed
//! sample) are reported per row (`timed_page_faults`). Times are medians; Serial and
//! Parallel runs alternate so slow drift of the machine affects both alike. The header
//! (and every JSON row) names the instruction set and the cache sizes.

use std::time::{Duration, Instant};

use clap::Parser;
use ndarray::{Array1, Array2};
use rayon::prelude::*;
use scan_core::{BackwardInputs, BackwardOutputs, Direction, ForwardInputs, LinearScan};
use scan_cpu::{CacheSizes, InstructionSet, Parallel, Serial};
use serde::Serialize;

/// Serial vs Parallel scan throughput against memory-copy bandwidth.
#[derive(Parser)]
struct Args {
    /// Print JSON (one object per shape and direction) instead of a table.
    #[arg(long)]
    json: bool,
    /// A subset of shapes that runs in under a minute.
    #[arg(long)]
    quick: bool,
    /// Time budget per shape, direction and backend, in milliseconds.
    #[arg(long, default_value_t = 400)]
    budget_ms: u64,
    /// The kernels' instruction set for both backends (default: the best this CPU has).
    #[arg(long)]
    isa: Option<InstructionSet>,
    /// Only these shapes, as `T,F` (repeatable), instead of the standard list.
    #[arg(long, value_parser = parse_shape)]
    shape: Vec<(usize, usize)>,
}

fn parse_shape(text: &str) -> Result<(usize, usize), String> {
    let (t, f) = text.split_once(',').ok_or("expected T,F")?;
    let number = |s: &str| s.trim().parse::<usize>().map_err(|e| format!("{s}: {e}"));
    Ok((number(t)?, number(f)?))
}

#[derive(Serialize)]
struct Row {
    t: usize,
    f: usize,
    direction: &'static str,
    serial_ns_per_elem: f64,
    parallel_ns_per_elem: f64,
    speedup: f64,
    serial_copy_fraction: f64,
    parallel_copy_fraction: f64,
    /// Minor page faults inside the timed calls of both backends.
    timed_page_faults: u64,
    isa: &'static str,
    l1d_bytes: Option<usize>,
    l2_bytes: Option<usize>,
    l3_bytes: Option<usize>,
}

/// Minor page faults of this process so far (all threads).
fn minor_faults() -> u64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage.ru_minflt as u64
    }
}

/// Median times of two alternating closures and the page faults inside their timed calls.
struct Timing {
    a: Duration,
    b: Duration,
    faults: u64,
}

/// A zero-initialised f32 buffer, with huge pages requested and every page touched.
fn buffer(len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    let bytes = len * 4;
    if bytes >= 8 << 20 {
        let start = v.as_mut_ptr() as usize;
        let aligned = start.next_multiple_of(2 << 20);
        let end = (start + bytes) & !((2 << 20) - 1);
        if end > aligned {
            // SAFETY: the range lies inside the vector's allocation; madvise only changes
            // how the kernel backs those pages and cannot invalidate the memory.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    v.resize(len, 0.0);
    v
}

fn array(dim: (usize, usize), fill: impl Fn(usize) -> f32 + Sync) -> Array2<f32> {
    let mut data = buffer(dim.0 * dim.1);
    data.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (i, v) in chunk.iter_mut().enumerate() {
                *v = fill(c * (1 << 16) + i);
            }
        });
    Array2::from_shape_vec(dim, data).expect("shape")
}

/// Memory-copy bandwidth in bytes per second (read + write), two threads, 256 MiB.
fn copy_bandwidth() -> f64 {
    let len = 64 << 20;
    let src = {
        let mut v = buffer(len);
        v.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
        v
    };
    let mut dst = buffer(len);
    let mut times = Vec::new();
    for _ in 0..9 {
        let start = Instant::now();
        dst.par_chunks_mut(len / 8)
            .zip(src.par_chunks(len / 8))
            .for_each(|(d, s)| d.copy_from_slice(s));
        times.push(start.elapsed());
    }
    std::hint::black_box(&dst);
    (2 * len * 4) as f64 / median(&mut times).as_secs_f64()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Alternates two closures until the budget is spent; returns their median times per
/// call. Short calls are repeated within one sample (at least ~50 µs per sample) so the
/// clock's own cost does not count.
fn time_pair(budget: Duration, mut a: impl FnMut(), mut b: impl FnMut()) -> Timing {
    let start = Instant::now();
    a();
    b();
    let first = start.elapsed() / 2;
    let repeat =
        (Duration::from_micros(50).as_nanos() / first.as_nanos().max(1)).clamp(1, 10_000) as u32;
    // Room for every sample up front: growing these inside the loop would fault pages
    // that are then counted against the scans.
    let (mut ta, mut tb) = (Vec::with_capacity(10_000), Vec::with_capacity(10_000));
    let mut faults = 0;
    let start = Instant::now();
    while (start.elapsed() < budget || ta.len() < 5) && ta.len() < 10_000 {
        let before = minor_faults();
        let t = Instant::now();
        for _ in 0..repeat {
            a();
        }
        let elapsed_a = t.elapsed();
        let t = Instant::now();
        for _ in 0..repeat {
            b();
        }
        let elapsed_b = t.elapsed();
        faults += minor_faults() - before;
        ta.push(elapsed_a / repeat);
        tb.push(elapsed_b / repeat);
    }
    Timing {
        a: median(&mut ta),
        b: median(&mut tb),
        faults,
    }
}

fn forward(backend: &dyn LinearScan<f32>, a: &Array2<f32>, x: &Array2<f32>, h: &mut Array2<f32>) {
    backend
        .forward_into(
            ForwardInputs {
                decay: a.view(),
                impulse: x.view(),
                initial: None,
                direction: Direction::Forward,
            },
            h.view_mut(),
        )
        .expect("shapes match");
}

struct Grads {
    decay: Array2<f32>,
    impulse: Array2<f32>,
    initial: Array1<f32>,
}

fn backward(
    backend: &dyn LinearScan<f32>,
    a: &Array2<f32>,
    h: &Array2<f32>,
    dh: &Array2<f32>,
    g: &mut Grads,
) {
    backend
        .backward_into(
            BackwardInputs {
                decay: a.view(),
                state: h.view(),
                initial: None,
                grad_state: dh.view(),
                grad_last: None,
                direction: Direction::Forward,
            },
            BackwardOutputs {
                grad_decay: g.decay.view_mut(),
                grad_impulse: g.impulse.view_mut(),
                grad_initial: Some(g.initial.view_mut()),
            },
        )
        .expect("shapes match");
}

fn main() {
    let args = Args::parse();
    let table1 = [16, 256, 4096, 65536]
        .into_iter()
        .flat_map(|t| [4, 32, 128].map(|f| (t, f)));
    let large = [
        (1 << 20, 1),
        (1 << 20, 4),
        (1 << 20, 64),
        (65536, 1024),
        (4096, 65536),
    ];
    let shapes: Vec<(usize, usize)> = if !args.shape.is_empty() {
        args.shape.clone()
    } else if args.quick {
        vec![
            (16, 4),
            (4096, 32),
            (65536, 4),
            (65536, 128),
            (1 << 20, 1),
            (1 << 20, 64),
        ]
    } else {
        table1.chain(large).collect()
    };
    let budget = Duration::from_millis(args.budget_ms);
    let copy = copy_bandwidth();
    let isa = args.isa.unwrap_or_else(InstructionSet::detected);
    if !isa.is_supported() {
        eprintln!("this CPU does not support {}", isa.name());
        std::process::exit(2);
    }
    let serial = Serial {
        isa: Some(isa),
        ..Serial::default()
    };
    let parallel = Parallel {
        isa: Some(isa),
        ..Parallel::default()
    };
    let caches = CacheSizes::detect();
    let machine = Machine { isa, caches, copy };
    let mut rows = Vec::new();
    for &(t, f) in &shapes {
        let dim = (t, f);
        let elems = (t * f) as f64;
        let a = array(dim, |i| 0.9 + 0.0999 * ((i * 7919 % 1000) as f32 / 1000.0));
        let x = array(dim, |i| (i * 104_729 % 2001) as f32 / 1000.0 - 1.0);
        let mut h = array(dim, |_| f32::NAN);
        let mut h2 = array(dim, |_| f32::NAN);
        let timing = time_pair(
            budget,
            || forward(&serial, &a, &x, &mut h),
            || forward(&parallel, &a, &x, &mut h2),
        );
        rows.push(row(t, f, "forward", timing, elems, 12.0, &machine));
        drop(h2);
        let mut g1 = Grads {
            decay: array(dim, |_| f32::NAN),
            impulse: array(dim, |_| f32::NAN),
            initial: Array1::zeros(f),
        };
        let mut g2 = Grads {
            decay: array(dim, |_| f32::NAN),
            impulse: array(dim, |_| f32::NAN),
            initial: Array1::zeros(f),
        };
        let dh = x;
        let timing = time_pair(
            budget,
            || backward(&serial, &a, &h, &dh, &mut g1),
            || backward(&parallel, &a, &h, &dh, &mut g2),
        );
        rows.push(row(t, f, "backward", timing, elems, 20.0, &machine));
        if !args.json {
            eprint!(".");
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("serializable")
        );
        return;
    }
    eprintln!();
    println!(
        "memory copy (2 threads, 256 MiB, read + write): {:.1} GB/s; {}",
        copy / 1e9,
        scan_cpu::describe_machine(isa, rayon::current_num_threads())
    );
    println!("| T | F | pass | serial ns/elem | parallel ns/elem | speedup | serial / copy | parallel / copy | timed page faults |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.2}× | {:.0} % | {:.0} % | {} |",
            r.t,
            r.f,
            r.direction,
            r.serial_ns_per_elem,
            r.parallel_ns_per_elem,
            r.speedup,
            100.0 * r.serial_copy_fraction,
            100.0 * r.parallel_copy_fraction,
            r.timed_page_faults
        );
    }
}

/// What every row reports about the machine.
struct Machine {
    isa: InstructionSet,
    caches: CacheSizes,
    /// Memory-copy bandwidth, bytes per second.
    copy: f64,
}

fn row(
    t: usize,
    f: usize,
    direction: &'static str,
    timing: Timing,
    elems: f64,
    bytes_per_elem: f64,
    machine: &Machine,
) -> Row {
    let ns = |d: Duration| d.as_secs_f64() * 1e9 / elems;
    let fraction = |d: Duration| bytes_per_elem * elems / d.as_secs_f64() / machine.copy;
    Row {
        t,
        f,
        direction,
        serial_ns_per_elem: ns(timing.a),
        parallel_ns_per_elem: ns(timing.b),
        speedup: timing.a.as_secs_f64() / timing.b.as_secs_f64(),
        serial_copy_fraction: fraction(timing.a),
        parallel_copy_fraction: fraction(timing.b),
        timed_page_faults: timing.faults,
        isa: machine.isa.name(),
        l1d_bytes: machine.caches.l1d,
        l2_bytes: machine.caches.l2,
        l3_bytes: machine.caches.l3,
    }
}
