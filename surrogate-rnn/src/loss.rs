//! Softmax cross-entropy.

use ndarray::{Array2, ArrayView2};

use crate::{ModelError, Real};

/// The loss of a batch and its gradient with respect to the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct LossOutput<E> {
    /// Mean cross-entropy over the batch (accumulated in f64).
    pub loss: f64,
    /// ∂loss/∂logits, `(B, C)`: `(softmax(logits) − onehot(label)) / B`.
    pub grad_logits: Array2<E>,
    /// How many rows' arg-max equals their label (ties go to the lowest class).
    pub n_correct: usize,
}

/// Mean softmax cross-entropy of `(B, C)` logits against class labels.
///
/// Uses the max-shifted log-sum-exp, so large logits neither overflow nor lose accuracy.
/// A label `≥ C` or a label count ≠ B is an error.
pub fn softmax_cross_entropy<E: Real>(
    logits: ArrayView2<'_, E>,
    labels: &[usize],
) -> Result<LossOutput<E>, ModelError> {
    const OP: &str = "softmax_cross_entropy";
    let (n_batch, n_classes) = logits.dim();
    if labels.len() != n_batch {
        return Err(ModelError::ShapeMismatch {
            operation: OP,
            argument: "labels",
            expected: vec![n_batch],
            actual: vec![labels.len()],
        });
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= n_classes) {
        return Err(ModelError::InvalidInput {
            operation: OP,
            reason: format!("label {bad} is out of range for {n_classes} classes"),
        });
    }
    let mut grad_logits = Array2::zeros((n_batch, n_classes));
    let mut loss = 0.0;
    let mut n_correct = 0;
    let scale = 1.0 / n_batch.max(1) as f64;
    for ((row, mut grad), &label) in logits
        .rows()
        .into_iter()
        .zip(grad_logits.rows_mut())
        .zip(labels)
    {
        let mut best = 0;
        for (c, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = c;
            }
        }
        n_correct += usize::from(best == label);
        let max = row[best].as_f64();
        let sum: f64 = row.iter().map(|&v| (v.as_f64() - max).exp()).sum();
        let log_sum = max + sum.ln();
        loss += log_sum - row[label].as_f64();
        for (c, (g, &v)) in grad.iter_mut().zip(row.iter()).enumerate() {
            let p = (v.as_f64() - log_sum).exp();
            let target = if c == label { 1.0 } else { 0.0 };
            *g = E::from_f64((p - target) * scale);
        }
    }
    Ok(LossOutput {
        loss: loss * scale,
        grad_logits,
        n_correct,
    })
}
