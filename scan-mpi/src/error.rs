//! Why a distributed scan could not run.

use scan_core::ScanError;

/// Why a distributed scan could not run. Every rank returns an error when any rank's
/// arguments are wrong (the ranks agree before the first exchange), so no rank is left
/// waiting in a collective; nothing is written to the outputs then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistributedError {
    /// This rank's arguments are wrong (a shape, or an argument that belongs to another rank).
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// An argument that only one rank may pass was passed on another.
    #[error(
        "`{argument}` belongs to the {owner} rank in processing order; rank {rank} passed one"
    )]
    MisplacedArgument {
        /// The argument.
        argument: &'static str,
        /// Which rank owns it (`"first"` or `"last"`).
        owner: &'static str,
        /// The rank (in the communicator the scan was built on) that passed it.
        rank: i32,
    },
    /// The ranks disagree on the number of features.
    #[error("the ranks disagree on the number of features (between {min} and {max})")]
    FeatureCountMismatch {
        /// The smallest count passed by any rank.
        min: usize,
        /// The largest count passed by any rank.
        max: usize,
    },
    /// Another rank's arguments were wrong; that rank's error names the problem.
    #[error("{count} other rank(s) failed to validate their arguments; nothing was computed")]
    OtherRankFailed {
        /// How many other ranks failed.
        count: usize,
    },
    /// A size does not fit MPI's element count (a C `int`).
    #[error("{what} = {value} exceeds MPI's largest count ({max})")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// The count.
        value: usize,
        /// The largest count MPI accepts.
        max: i64,
    },
}
