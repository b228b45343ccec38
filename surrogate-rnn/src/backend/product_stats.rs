//! Counters of the CPU backend's matrix products, compiled in with the feature
//! `product-stats` only: a benchmark reads how many multiply-adds a training step spent in
//! products, how long they took and which product was the largest, to report the
//! products' share of the step and their rate beside a plain product of that shape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static FLOPS: AtomicU64 = AtomicU64::new(0);
static NANOS: AtomicU64 = AtomicU64::new(0);
static LARGEST: Mutex<(u64, [usize; 3])> = Mutex::new((0, [0; 3]));

/// The products counted since the last [`take`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProductStats {
    /// Floating-point operations (two per multiply-add).
    pub flops: u64,
    /// Wall time spent in the products.
    pub seconds: f64,
    /// `(m, k, n)` of the product with the most operations.
    pub largest: [usize; 3],
}

/// The counts so far, which are then reset.
pub fn take() -> ProductStats {
    let largest = LARGEST
        .lock()
        .map(|mut l| std::mem::take(&mut *l).1)
        .unwrap_or_default();
    ProductStats {
        flops: FLOPS.swap(0, Ordering::Relaxed),
        seconds: NANOS.swap(0, Ordering::Relaxed) as f64 * 1e-9,
        largest,
    }
}

/// Counts one `(m, k) · (k, n)` product that took `elapsed`.
pub(super) fn record(m: usize, k: usize, n: usize, elapsed: Duration) {
    let flops = 2 * (m as u64) * (k as u64) * (n as u64);
    FLOPS.fetch_add(flops, Ordering::Relaxed);
    NANOS.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    if let Ok(mut largest) = LARGEST.lock() {
        if flops > largest.0 {
            *largest = (flops, [m, k, n]);
        }
    }
}
