//! The training-loop state saved in every checkpoint, and its checks against the run's
//! settings on resume.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// The loop state saved with every checkpoint (as JSON in its metadata).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoopState {
    /// Index of the curriculum stage being trained.
    pub stage: usize,
    /// Consecutive minibatches at 100 % accuracy.
    pub streak: usize,
    /// Wall seconds of the run so far.
    pub wall_seconds: f64,
    /// Seconds spent in training steps.
    pub train_seconds: f64,
    /// Training events (batch × length) so far.
    pub train_events: f64,
    /// Completed evaluations (each uses its own fresh sequences).
    pub eval_rounds: u64,
    /// Accuracy of the last completed evaluation.
    pub last_eval_accuracy: Option<f64>,
    /// The streak held at the target length but the evaluation that checks it was
    /// interrupted: it runs first when the run resumes.
    #[serde(default)]
    pub pending_evaluation: bool,
    /// One report per curriculum stage.
    pub stages: Vec<StageReport>,
}

/// Time and iterations spent at one curriculum length.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub seq_len: usize,
    pub iterations: u64,
    pub seconds: f64,
    pub reached_streak: bool,
}

impl LoopState {
    /// A fresh state for the curriculum `stages` (lengths in order).
    pub fn new(stages: &[usize]) -> Self {
        Self {
            stages: stages
                .iter()
                .map(|&seq_len| StageReport {
                    seq_len,
                    ..StageReport::default()
                })
                .collect(),
            ..Self::default()
        }
    }

    /// Whether the evaluation at the target length passed.
    pub fn converged(&self) -> bool {
        self.stages.last().is_some_and(|s| s.reached_streak)
    }

    /// Checks that this state can belong to a run with curriculum `stages` and streak
    /// `streak` whose optimizer has taken `step` steps; every field is checked, so a
    /// damaged or foreign state is an error here rather than a panic later.
    pub fn check(&self, stages: &[usize], streak: usize, step: u64) -> Result<()> {
        let lengths: Vec<usize> = self.stages.iter().map(|s| s.seq_len).collect();
        ensure!(
            lengths == stages,
            "its curriculum lengths {lengths:?} are not the run's {stages:?}"
        );
        ensure!(
            self.stage < stages.len(),
            "its stage index {} is out of range (the curriculum has {} stages)",
            self.stage,
            stages.len()
        );
        let iterations = self
            .stages
            .iter()
            .try_fold(0u64, |sum, s| sum.checked_add(s.iterations));
        ensure!(
            iterations == Some(step),
            "its stages count {} iterations but the optimizer has taken {step} steps",
            self.stages
                .iter()
                .map(|s| s.iterations.to_string())
                .collect::<Vec<_>>()
                .join(" + ")
        );
        for (k, s) in self.stages.iter().enumerate() {
            let reached = k < self.stage || (k == self.stage && s.reached_streak);
            ensure!(
                s.reached_streak == reached,
                "stage {k} (length {}) is marked {} while the run is at stage {}",
                s.seq_len,
                if s.reached_streak {
                    "learned"
                } else {
                    "not learned"
                },
                self.stage
            );
            ensure!(
                k <= self.stage || s.iterations == 0,
                "stage {k} has {} iterations but the run has not reached it",
                s.iterations
            );
            ensure!(
                s.seconds.is_finite() && s.seconds >= 0.0,
                "stage {k} has {} seconds",
                s.seconds
            );
        }
        ensure!(
            self.streak < streak,
            "its streak {} is not below the run's --streak {streak}",
            self.streak
        );
        ensure!(
            !self.converged() || self.stage + 1 == stages.len(),
            "it is marked converged before the target length"
        );
        ensure!(
            !self.pending_evaluation || (self.stage + 1 == stages.len() && !self.converged()),
            "it has an evaluation pending outside the target length"
        );
        for (name, value) in [
            ("wall_seconds", self.wall_seconds),
            ("train_seconds", self.train_seconds),
            ("train_events", self.train_events),
        ] {
            ensure!(value.is_finite() && value >= 0.0, "its {name} is {value}");
        }
        ensure!(
            self.eval_rounds <= step,
            "it counts {} evaluations in {step} steps",
            self.eval_rounds
        );
        if let Some(accuracy) = self.last_eval_accuracy {
            ensure!(
                (0.0..=1.0).contains(&accuracy),
                "its last evaluation accuracy {accuracy} is not in [0, 1]"
            );
        }
        Ok(())
    }
}
