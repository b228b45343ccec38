//! The shape of a 2-D grid of ranks (no MPI needed, so it is tested everywhere).

use std::ops::Range;

use crate::{share_of_batch, DataParallelError};

/// Why a grid of ranks could not be built or a grid step could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GridError {
    /// The sequence ranks per data group do not tile the processes.
    #[error(
        "a grid of {sequence_ranks} sequence rank(s) per data group does not fit {ranks} \
         process(es): the number of sequence ranks must be at least 1 and divide the \
         process count"
    )]
    Shape {
        /// The number of processes.
        ranks: usize,
        /// The sequence ranks asked for per data group.
        sequence_ranks: usize,
    },
    /// A rank failed (every rank reports the lowest failing rank's message), the ranks hold
    /// different models, or the optimizer step failed.
    #[error(transparent)]
    Data(#[from] DataParallelError),
}

/// `D` data groups × `S` sequence ranks: rank `r` is sequence rank `r mod S` of data group
/// `⌊r / S⌋`. Each data group trains on its share of the batch ([`share_of_batch`] over
/// the `D` groups), its sequences split over time across its `S` ranks (each holding its
/// share of the steps, [`share_of_batch`] over the `S` ranks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridShape {
    data_groups: usize,
    sequence_ranks: usize,
}

/// Where one rank sits in a [`GridShape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridPosition {
    /// The data group (`0..D`): which share of the batch the rank works on.
    pub data_group: usize,
    /// The rank within its data group (`0..S`): which share of the steps it holds.
    pub sequence_rank: usize,
}

impl GridShape {
    /// The grid of `n_ranks` processes with `sequence_ranks` per data group; an error
    /// unless `sequence_ranks ≥ 1` divides `n_ranks ≥ 1`.
    pub fn new(n_ranks: usize, sequence_ranks: usize) -> Result<Self, GridError> {
        if n_ranks == 0 || sequence_ranks == 0 || !n_ranks.is_multiple_of(sequence_ranks) {
            return Err(GridError::Shape {
                ranks: n_ranks,
                sequence_ranks,
            });
        }
        Ok(Self {
            data_groups: n_ranks / sequence_ranks,
            sequence_ranks,
        })
    }

    /// `D`, the number of data groups.
    pub fn data_groups(&self) -> usize {
        self.data_groups
    }

    /// `S`, the number of ranks each sequence is split over.
    pub fn sequence_ranks(&self) -> usize {
        self.sequence_ranks
    }

    /// `D · S`, the number of ranks.
    pub fn n_ranks(&self) -> usize {
        self.data_groups * self.sequence_ranks
    }

    /// Where rank `rank` sits (a rank past the grid gets a data group past `D`).
    pub fn position(&self, rank: usize) -> GridPosition {
        GridPosition {
            data_group: rank / self.sequence_ranks,
            sequence_rank: rank % self.sequence_ranks,
        }
    }

    /// The sequences of a global batch of `n_batch` that rank `rank`'s data group trains on.
    pub fn batch_share(&self, n_batch: usize, rank: usize) -> Range<usize> {
        share_of_batch(n_batch, self.position(rank).data_group, self.data_groups)
    }

    /// The steps of a sequence of `n_steps` that rank `rank` holds.
    pub fn step_share(&self, n_steps: usize, rank: usize) -> Range<usize> {
        share_of_batch(
            n_steps,
            self.position(rank).sequence_rank,
            self.sequence_ranks,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{GridError, GridShape};

    #[test]
    fn shapes_that_do_not_tile_the_ranks_are_errors() {
        for (ranks, sequence_ranks) in [(4, 3), (4, 0), (0, 1), (6, 4), (2, 4)] {
            let error = GridShape::new(ranks, sequence_ranks).unwrap_err();
            assert!(matches!(error, GridError::Shape { .. }), "{error:?}");
            assert!(error.to_string().contains(&format!("{ranks} process")));
        }
    }

    #[test]
    fn every_cell_holds_one_rank_and_the_shares_tile_batch_and_steps() {
        for (ranks, sequence_ranks) in [(1, 1), (4, 2), (4, 1), (4, 4), (6, 3), (6, 2)] {
            let shape = GridShape::new(ranks, sequence_ranks).unwrap();
            assert_eq!(shape.n_ranks(), ranks);
            assert_eq!(shape.data_groups() * shape.sequence_ranks(), ranks);
            let mut cells = std::collections::BTreeSet::new();
            for rank in 0..ranks {
                let at = shape.position(rank);
                assert!(at.data_group < shape.data_groups());
                assert!(at.sequence_rank < sequence_ranks);
                cells.insert((at.data_group, at.sequence_rank));
                // Ranks of one data group hold consecutive steps in rank order.
                let steps = shape.step_share(11, rank);
                if at.sequence_rank > 0 {
                    assert_eq!(shape.step_share(11, rank - 1).end, steps.start);
                }
                if at.sequence_rank + 1 == sequence_ranks {
                    assert_eq!(steps.end, 11);
                }
                // Every rank of a data group trains on the same sequences.
                let group_first = at.data_group * sequence_ranks;
                assert_eq!(
                    shape.batch_share(7, rank),
                    shape.batch_share(7, group_first)
                );
            }
            assert_eq!(cells.len(), ranks);
            let covered: usize = (0..shape.data_groups())
                .map(|d| shape.batch_share(7, d * sequence_ranks).len())
                .sum();
            assert_eq!(covered, 7);
        }
    }
}
