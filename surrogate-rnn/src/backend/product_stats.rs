//! Counters of the CPU backend's matrix products, compiled in with the feature
//! `product-stats` only: a benchmark reads how many multiply-adds a training step spent in
//! products, how long they took and which product was the largest, to report the
//! products' share of the step and their rate beside a plain product of that shape, and
//! the same per product shape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static FLOPS: AtomicU64 = AtomicU64::new(0);
static NANOS: AtomicU64 = AtomicU64::new(0);
static LARGEST: Mutex<(u64, [usize; 3])> = Mutex::new((0, [0; 3]));
static SHAPES: Mutex<Vec<ShapeStats>> = Mutex::new(Vec::new());

/// The products of one shape and operand layout counted since the last [`take`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShapeStats {
    /// `(m, k, n)` of `(m, k)·(k, n)`.
    pub dims: [usize; 3],
    /// Which operands were transposed, or whether the right one was packed
    /// (`"A·B"`, `"Aᵀ·B"`, `"A·Bᵀ"`, `"Aᵀ·Bᵀ"`, `"A·packed"`).
    pub layout: &'static str,
    /// How many products.
    pub calls: u64,
    /// Their wall time.
    pub seconds: f64,
}

impl ShapeStats {
    /// Floating-point operations of all the calls (two per multiply-add).
    pub fn flops(&self) -> f64 {
        2.0 * self.dims.iter().map(|&d| d as f64).product::<f64>() * self.calls as f64
    }
}

/// The products counted since the last [`take`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProductStats {
    /// Floating-point operations (two per multiply-add).
    pub flops: u64,
    /// Wall time spent in the products.
    pub seconds: f64,
    /// `(m, k, n)` of the product with the most operations.
    pub largest: [usize; 3],
    /// The same per shape and layout, most time first.
    pub by_shape: Vec<ShapeStats>,
}

/// The counts so far, which are then reset.
pub fn take() -> ProductStats {
    let largest = LARGEST
        .lock()
        .map(|mut l| std::mem::take(&mut *l).1)
        .unwrap_or_default();
    let mut by_shape = SHAPES
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    by_shape.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    ProductStats {
        flops: FLOPS.swap(0, Ordering::Relaxed),
        seconds: NANOS.swap(0, Ordering::Relaxed) as f64 * 1e-9,
        largest,
        by_shape,
    }
}

/// Counts one `(m, k) · (k, n)` product of `layout` (see [`ShapeStats::layout`]) that
/// took `elapsed`.
pub(super) fn record(m: usize, k: usize, n: usize, layout: &'static str, elapsed: Duration) {
    let flops = 2 * (m as u64) * (k as u64) * (n as u64);
    FLOPS.fetch_add(flops, Ordering::Relaxed);
    NANOS.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    if let Ok(mut largest) = LARGEST.lock() {
        if flops > largest.0 {
            *largest = (flops, [m, k, n]);
        }
    }
    if let Ok(mut shapes) = SHAPES.lock() {
        let dims = [m, k, n];
        match shapes
            .iter_mut()
            .find(|s| s.dims == dims && s.layout == layout)
        {
            Some(seen) => {
                seen.calls += 1;
                seen.seconds += elapsed.as_secs_f64();
            }
            None => shapes.push(ShapeStats {
                dims,
                layout,
                calls: 1,
                seconds: elapsed.as_secs_f64(),
            }),
        }
    }
}
