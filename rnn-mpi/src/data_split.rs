//! How a global batch is split over ranks (no MPI needed, so it is tested everywhere).

use std::ops::Range;

use ndarray::s;
use surrogate_rnn::{ModelError, OneHotSequence, Real, SyntheticBatch};

/// The sequences of a global batch of `n_batch` that rank `rank` of `n_ranks` trains on:
/// consecutive ranges in rank order, the first `n_batch mod n_ranks` ranks one sequence
/// longer (ranks past the batch get an empty range). `n_ranks = 0` or `rank ≥ n_ranks`
/// gives an empty range.
pub fn share_of_batch(n_batch: usize, rank: usize, n_ranks: usize) -> Range<usize> {
    if n_ranks == 0 || rank >= n_ranks {
        return 0..0;
    }
    let (base, extra) = (n_batch / n_ranks, n_batch % n_ranks);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// The sequences `range` of `batch` (a rank's share of a global batch, see
/// [`share_of_batch`]), as a batch of their own; a range outside the batch is an error.
pub fn batch_sequences<E: Real>(
    batch: &SyntheticBatch<E>,
    range: Range<usize>,
) -> Result<SyntheticBatch<E>, ModelError> {
    let n_batch = batch.labels.len();
    if range.start > range.end || range.end > n_batch {
        return Err(ModelError::InvalidInput {
            operation: "batch_sequences",
            reason: format!("sequences {range:?} of a batch of {n_batch}"),
        });
    }
    let columns = s![.., range.clone()];
    let input = OneHotSequence::new(
        batch.input.index().slice(columns).to_owned(),
        batch.input.value().slice(columns).to_owned(),
        batch.input.vocab(),
    )?;
    Ok(SyntheticBatch {
        input,
        labels: batch.labels[range].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use surrogate_rnn::SyntheticTask;

    use super::{batch_sequences, share_of_batch};

    #[test]
    fn batch_sequences_are_the_columns_of_the_batch() {
        let batch = SyntheticTask::new(6, 4)
            .unwrap()
            .batch_for_step::<f32>(3, 0, 5)
            .unwrap();
        let part = batch_sequences(&batch, 1..4).unwrap();
        assert_eq!(part.labels, batch.labels[1..4]);
        assert_eq!(part.input.dim(), (6, 3));
        assert_eq!(
            part.input.index(),
            batch.input.index().slice(ndarray::s![.., 1..4])
        );
        assert_eq!(batch_sequences(&batch, 5..5).unwrap().labels.len(), 0);
        assert!(batch_sequences(&batch, 4..6).is_err());
    }

    #[test]
    fn shares_tile_the_batch_in_rank_order() {
        for n_ranks in 1..=9 {
            for n_batch in 0..=25 {
                let mut next = 0;
                for rank in 0..n_ranks {
                    let share = share_of_batch(n_batch, rank, n_ranks);
                    assert_eq!(share.start, next, "B = {n_batch}, P = {n_ranks}");
                    assert!(share.len().abs_diff(n_batch / n_ranks) <= 1);
                    next = share.end;
                }
                assert_eq!(next, n_batch, "B = {n_batch}, P = {n_ranks}");
            }
        }
        assert_eq!(share_of_batch(5, 0, 0), 0..0);
        assert_eq!(share_of_batch(5, 3, 2), 0..0);
    }
}
