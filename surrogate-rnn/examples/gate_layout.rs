//! Why each gate has its own matrix: the forward gate passes of one GILR-LSTM layer
//! (decay gates, input gates, output gate over six `(rows, n)` gates) on six separate
//! matrices, as the layers store them, against the same passes on the six column blocks of
//! one `(rows, 6n)` matrix, which one product per layer and pass would write. Each sample
//! first rewrites the gates (as the product before the passes does), then times the passes;
//! medians of 7 interleaved samples.
//!
//! `cargo run --release -p surrogate-rnn --example gate_layout`

use std::time::Instant;

use ndarray::{Array2, ArrayViewMut2, Axis};
use scan_cpu::Parallel;
use surrogate_rnn::backend::Candidate;
use surrogate_rnn::{Backend, CpuBackend, ModelError};

/// The other operands of the passes: biases, the cell, and the outputs.
struct Rest {
    bias: Array2<f32>,
    cell: Array2<f32>,
    impulses: [Array2<f32>; 2],
    out: Array2<f32>,
}

/// The three forward gate passes on gates `[g j f i o z]`.
fn passes(
    b: &CpuBackend<'_, f32>,
    [g, j, f, i, o, z]: [ArrayViewMut2<'_, f32>; 6],
    rest: &mut Rest,
) -> Result<(), ModelError> {
    let bias = rest.bias.view();
    let [first, second] = &mut rest.impulses;
    b.decay_gates(g, bias, j, bias, Candidate::Tanh, first.view_mut())?;
    b.input_gates(f, bias, i, bias, z, bias, second.view_mut())?;
    b.output_gate(o, bias, rest.cell.view(), None, rest.out.view_mut())
}

/// The six column blocks of `wide`.
fn blocks(wide: &mut Array2<f32>, n: usize) -> [ArrayViewMut2<'_, f32>; 6] {
    let (g, rest) = wide.view_mut().split_at(Axis(1), n);
    let (j, rest) = rest.split_at(Axis(1), n);
    let (f, rest) = rest.split_at(Axis(1), n);
    let (i, rest) = rest.split_at(Axis(1), n);
    let (o, z) = rest.split_at(Axis(1), n);
    [g, j, f, i, o, z]
}

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2] * 1e3
}

fn main() -> Result<(), ModelError> {
    let scan = Parallel::default();
    let b = CpuBackend::<f32>::new(&scan);
    println!("| rows × n | separate gates (ms) | column blocks of one matrix (ms) | ratio |");
    println!("|---|---:|---:|---:|");
    for (rows, n) in [(8192, 512), (65536, 64), (65536, 256)] {
        let mut rest = Rest {
            bias: Array2::zeros((1, n)),
            cell: Array2::from_elem((rows, n), 0.1),
            impulses: [Array2::zeros((rows, n)), Array2::zeros((rows, n))],
            out: Array2::zeros((rows, n)),
        };
        let mut separate: Vec<Array2<f32>> = (0..6).map(|_| Array2::zeros((rows, n))).collect();
        let mut wide = Array2::<f32>::zeros((rows, 6 * n));
        let (mut times_separate, mut times_wide) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            separate.iter_mut().for_each(|m| m.fill(0.3));
            let start = Instant::now();
            let mut views = separate.iter_mut().map(|m| m.view_mut());
            let gates = std::array::from_fn(|_| views.next().expect("six gates"));
            passes(&b, gates, &mut rest)?;
            times_separate.push(start.elapsed().as_secs_f64());
            wide.fill(0.3);
            let start = Instant::now();
            passes(&b, blocks(&mut wide, n), &mut rest)?;
            times_wide.push(start.elapsed().as_secs_f64());
        }
        let (s, w) = (median_ms(times_separate), median_ms(times_wide));
        println!("| {rows} × {n} | {s:.2} | {w:.2} | {:.2} |", w / s);
    }
    Ok(())
}
