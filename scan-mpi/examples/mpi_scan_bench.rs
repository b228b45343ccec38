//! Scaling of the distributed scan from one to all ranks, measured in one `mpirun` job:
//!
//! ```sh
//! cargo build --release -p scan-mpi --features mpi --example mpi_scan_bench
//! mpirun -n 2 target/release/examples/mpi_scan_bench --steps 16777216 --features 4
//! ```
//!
//! In the same job it times (medians over `--repeats`) a memory copy of one rank's share of
//! the bytes on rank 0 alone and on all ranks at once, the scan on rank 0 alone over the
//! whole sequence, and the scan split over all ranks. The ideal speedup follows from the
//! bytes each rank moves (every rank but the last reduces its chunk, reading a and x, then
//! rescans it, reading a and x and writing h: 20 bytes per f32 element against the single
//! process's 12) and from how the
//! copy rate holds up when all ranks copy at once. It also times the chunk reduction alone
//! on rank 0's share, the backend's `forward_map` against scan-core's serial default.

use std::time::Instant;

use mpi::collective::SystemOperation;
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::*;
use ndarray::{s, Array2};
use scan_core::{Direction, ForwardInputs, LinearScan};
use scan_mpi::DistributedScan;

struct Options {
    n_steps: usize,
    n_features: usize,
    repeats: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        n_steps: 1 << 24,
        n_features: 4,
        repeats: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<usize>()
            .map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--steps" => options.n_steps = value,
            "--features" => options.n_features = value,
            "--repeats" => options.repeats = value.max(1),
            _ => {
                return Err(format!(
                    "unknown flag {flag} (--steps, --features, --repeats)"
                ))
            }
        }
    }
    Ok(options)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Median seconds of `work`, started together on every rank of `group` and timed until
/// the slowest rank finishes.
fn timed(group: &SimpleCommunicator, repeats: usize, mut work: impl FnMut()) -> f64 {
    let samples = (0..repeats)
        .map(|_| {
            group.barrier();
            let start = Instant::now();
            work();
            let local = start.elapsed().as_secs_f64();
            let mut slowest = 0.0_f64;
            group.all_reduce_into(&local, &mut slowest, SystemOperation::max());
            slowest
        })
        .collect();
    median(samples)
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("mpi_scan_bench: {message}");
            std::process::exit(2);
        }
    };
    let Some(universe) = mpi::initialize() else {
        eprintln!("mpi_scan_bench: MPI could not be initialized");
        std::process::exit(2);
    };
    let world = universe.world();
    let (rank, n_ranks) = (world.rank() as usize, world.size() as usize);
    let (n_steps, n_features) = (options.n_steps, options.n_features);
    let share = n_steps / n_ranks;
    let my_rows = if rank + 1 == n_ranks {
        n_steps - share * (n_ranks - 1)
    } else {
        share
    };
    let alone = world.split_by_color(if rank == 0 {
        Color::with_value(0)
    } else {
        Color::undefined()
    });

    // Rank 0 holds the whole sequence for the one-rank runs; the others their share.
    let rows_held = if rank == 0 { n_steps } else { my_rows };
    let decay = Array2::from_shape_fn((rows_held, n_features), |(t, f)| {
        0.999_f32 - 1e-4 * ((t + f) % 7) as f32
    });
    let impulse = Array2::from_shape_fn((rows_held, n_features), |(t, f)| {
        ((t * 31 + f) % 17) as f32 * 0.01
    });
    let mut state = Array2::<f32>::zeros((rows_held, n_features));
    let mut copy_target = Array2::<f32>::zeros((my_rows, n_features));

    let copy_share = |target: &mut Array2<f32>| {
        target.assign(&impulse.slice(s![..my_rows, ..]));
    };
    let mut copy_alone = 0.0;
    if let Some(group) = &alone {
        copy_alone = timed(group, options.repeats, || copy_share(&mut copy_target));
    }
    world.barrier();
    let copy_all = timed(&world, options.repeats, || copy_share(&mut copy_target));

    let local = scan_cpu::Parallel::default();
    let mut scan_alone = 0.0;
    if let Some(group) = &alone {
        // The single-process baseline: the local backend itself, one pass.
        scan_alone = timed(group, options.repeats, || {
            local
                .forward_into(
                    ForwardInputs {
                        decay: decay.view(),
                        impulse: impulse.view(),
                        initial: None,
                        direction: Direction::Forward,
                    },
                    state.view_mut(),
                )
                .unwrap_or_else(|e| eprintln!("rank 0 alone: {e}"));
        });
    }
    world.barrier();
    let scan = DistributedScan::new(&world, &local);
    let rows = s![..my_rows, ..];
    let scan_all = timed(&world, options.repeats, || {
        scan.forward_into(
            ForwardInputs {
                decay: decay.slice(rows),
                impulse: impulse.slice(rows),
                initial: None,
                direction: Direction::Forward,
            },
            state.slice_mut(rows),
        )
        .map(drop)
        .unwrap_or_else(|e| eprintln!("rank {rank}: {e}"));
    });

    // The chunk reduction alone on rank 0's share: the backend's `forward_map` against
    // scan-core's serial default (`forward_chunk_map`), so the gain of the override is
    // measured in the same run whatever else the machine is doing.
    let (mut map_backend, mut map_default) = (0.0, 0.0);
    if let Some(group) = &alone {
        let (a, x) = (decay.slice(rows), impulse.slice(rows));
        map_backend = timed(group, options.repeats, || {
            let _ = std::hint::black_box(local.forward_map(a, x, Direction::Forward));
        });
        map_default = timed(group, options.repeats, || {
            let _ = std::hint::black_box(scan_core::forward_chunk_map(a, x, Direction::Forward));
        });
    }

    if rank == 0 {
        let share_bytes = (my_rows * n_features * 4) as f64;
        let whole_bytes = (n_steps * n_features * 4) as f64;
        // A copy moves 2 bytes per byte copied (read + write).
        let copy_rate_alone = 2.0 * share_bytes / copy_alone / 1e9;
        let copy_rate_each = 2.0 * share_bytes / copy_all / 1e9;
        let speedup = scan_alone / scan_all;
        let ideal = n_ranks as f64 * (12.0 / 20.0) * (copy_rate_each / copy_rate_alone);
        println!(
            "# distributed scan, f32, T = {n_steps}, F = {n_features}, {n_ranks} rank(s), one \
             rayon pool per rank, medians of {}",
            options.repeats
        );
        println!("| measurement | value |");
        println!("|---|---:|");
        println!("| copy rate, rank 0 alone (GB/s) | {copy_rate_alone:.1} |");
        println!("| copy rate per rank, all ranks at once (GB/s) | {copy_rate_each:.1} |");
        println!(
            "| scan, rank 0 alone over all T (ms; GB/s at 12 B/elem) | {:.1}; {:.1} |",
            scan_alone * 1e3,
            3.0 * whole_bytes / scan_alone / 1e9
        );
        println!("| scan over {n_ranks} ranks (ms) | {:.1} |", scan_all * 1e3);
        println!("| speedup | {speedup:.2} |");
        println!("| ideal speedup from bytes and copy rates | {ideal:.2} |");
        println!("| speedup / ideal | {:.0} % |", 100.0 * speedup / ideal);
        println!(
            "| bytes exchanged per rank per call | {} |",
            2 * n_features * 4
        );
        // The reduction reads a and x: 8 bytes per element.
        println!(
            "| chunk reduction of rank 0's share, backend / scan-core default (GB/s at 8 B/elem) | {:.1} / {:.1} |",
            2.0 * share_bytes / map_backend / 1e9,
            2.0 * share_bytes / map_default / 1e9
        );
    }
}
