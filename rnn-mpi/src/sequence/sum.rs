//! A sum over ranks whose result does not depend on how MPI reduces.

use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;
use scan_mpi::MpiElement;

use super::SequenceError;

/// Replaces `values` on every rank by their sum over the ranks of `communicator`, each
/// element added in rank order (`((v₀ + v₁) + v₂) + …`): the same bits on every rank and
/// from run to run for a given rank count, whatever algorithm the MPI library picks.
///
/// A reduce-scatter then an all-gather: each rank receives one block of every rank's
/// values (an all-to-all), adds them up in rank order, and the summed blocks are gathered
/// on every rank — `2·(P − 1)/P` of the values sent per rank, as for a ring all-reduce.
/// Collective; every rank must pass the same length.
pub(crate) fn sum_in_rank_order<E: MpiElement>(
    communicator: &SimpleCommunicator,
    values: &mut [E],
) -> Result<(), SequenceError> {
    let n_ranks = communicator.size() as usize;
    let len = values.len();
    let too_large = || SequenceError::TooLarge {
        what: "parameters",
        value: len,
    };
    Count::try_from(len).map_err(|_| too_large())?;
    // Block k holds elements bounds[k]..bounds[k + 1]; the first len % P blocks are one longer.
    let bounds: Vec<usize> = (0..=n_ranks)
        .map(|k| k * (len / n_ranks) + k.min(len % n_ranks))
        .collect();
    let counts: Vec<Count> = bounds.windows(2).map(|w| (w[1] - w[0]) as Count).collect();
    let displs: Vec<Count> = bounds[..n_ranks].iter().map(|&b| b as Count).collect();

    let rank = communicator.rank() as usize;
    let mine = bounds[rank + 1] - bounds[rank];
    let mut received = vec![E::zero(); mine * n_ranks];
    let from_each: Vec<Count> = vec![mine as Count; n_ranks];
    let at: Vec<Count> = (0..n_ranks).map(|j| (j * mine) as Count).collect();
    {
        let send = Partition::new(&values[..], &counts[..], &displs[..]);
        let mut receive = PartitionMut::new(&mut received[..], &from_each[..], &at[..]);
        communicator.all_to_all_varcount_into(&send, &mut receive);
    }
    let mut sum = received[..mine].to_vec();
    for block in received.chunks_exact(mine.max(1)).skip(1) {
        for (total, &value) in sum.iter_mut().zip(block) {
            *total = *total + value;
        }
    }
    let mut gathered = PartitionMut::new(values, &counts[..], &displs[..]);
    communicator.all_gather_varcount_into(&sum[..], &mut gathered);
    Ok(())
}
