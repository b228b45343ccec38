//! The curriculum and the convergence criterion of `trainer synthetic` as a state machine
//! without I/O: the training loop asks it what to do next, tells it what each step and
//! each evaluation gave, and reports, saves and prints what it answers.
//!
//! The machine owns the [`LoopState`] saved in every checkpoint, so a resumed run
//! continues exactly where the checkpoint left it (an interrupted evaluation included).

use crate::state::{LoopState, StageReport};
use crate::summary::StopReason;

/// The fixed rules of a run: when a streak counts, when an evaluation passes, when to stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rules {
    /// Consecutive minibatches at 100 % accuracy that end a stage (or trigger the
    /// evaluation at the target length).
    pub streak: usize,
    /// Evaluation accuracy that makes the run converged.
    pub eval_threshold: f64,
    /// Stop once the optimizer has taken this many steps.
    pub max_iterations: u64,
    /// Stop once the run's wall time reaches this many seconds.
    pub max_seconds: Option<f64>,
}

/// What the loop does next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Train one step on sequences of this length.
    Train { seq_len: usize },
    /// Run the confirming evaluation whose step was already recorded (it was interrupted).
    Evaluate,
    /// The run is over.
    Stop(StopReason),
}

/// What one training step changed.
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutcome {
    /// Nothing beyond the streak.
    Continue,
    /// A shorter stage held its streak; training moves to `next_seq_len`.
    StageLearned {
        learned: StageReport,
        next_seq_len: usize,
    },
    /// The streak held at the target length: evaluate now.
    EvaluationDue,
}

/// The curriculum and convergence state machine.
#[derive(Clone, Debug)]
pub struct Schedule {
    rules: Rules,
    state: LoopState,
}

impl Schedule {
    /// A machine continuing from `state` (fresh or read from a checkpoint, already
    /// checked with [`LoopState::check`]).
    pub fn new(rules: Rules, state: LoopState) -> Self {
        Self { rules, state }
    }

    /// The state to save in a checkpoint.
    pub fn state(&self) -> &LoopState {
        &self.state
    }

    /// Records the run's wall time so far (saved with the state).
    pub fn set_wall_seconds(&mut self, seconds: f64) {
        self.state.wall_seconds = seconds;
    }

    /// Adds wall time to the stage being trained.
    pub fn add_stage_seconds(&mut self, seconds: f64) {
        let stage = self.state.stage;
        self.state.stages[stage].seconds += seconds;
    }

    /// The index of the next evaluation (each uses its own fresh sequences).
    pub fn eval_round(&self) -> u64 {
        self.state.eval_rounds
    }

    /// The target length's streak, as shown in the progress line.
    pub fn streak(&self) -> usize {
        self.state.streak
    }

    /// Iterations over all stages so far.
    pub fn iterations(&self) -> u64 {
        self.state.stages.iter().map(|s| s.iterations).sum()
    }

    /// What to do next, given the optimizer's step count, the run's wall time and
    /// whether Ctrl-C was pressed. A converged run stops first, then an interrupt, then
    /// a pending evaluation runs (the evaluation itself stops at the time limit, and
    /// stays pending), then the limits apply.
    pub fn next(&self, steps: u64, wall_seconds: f64, interrupted: bool) -> Action {
        if self.state.converged() {
            Action::Stop(StopReason::Converged)
        } else if interrupted {
            Action::Stop(StopReason::Interrupted)
        } else if self.state.pending_evaluation {
            Action::Evaluate
        } else if steps >= self.rules.max_iterations {
            Action::Stop(StopReason::IterationLimit)
        } else if self.rules.max_seconds.is_some_and(|s| wall_seconds >= s) {
            Action::Stop(StopReason::TimeLimit)
        } else {
            Action::Train {
                seq_len: self.state.stages[self.state.stage].seq_len,
            }
        }
    }

    /// Records a training step: its minibatch accuracy, its seconds and its events.
    pub fn record_step(&mut self, accuracy: f64, seconds: f64, events: f64) -> StepOutcome {
        let state = &mut self.state;
        state.train_seconds += seconds;
        state.train_events += events;
        state.stages[state.stage].iterations += 1;
        state.streak = if accuracy >= 1.0 { state.streak + 1 } else { 0 };
        if state.streak < self.rules.streak {
            return StepOutcome::Continue;
        }
        state.streak = 0;
        if state.stage + 1 < state.stages.len() {
            state.stages[state.stage].reached_streak = true;
            let learned = state.stages[state.stage].clone();
            state.stage += 1;
            StepOutcome::StageLearned {
                learned,
                next_seq_len: state.stages[state.stage].seq_len,
            }
        } else {
            state.pending_evaluation = true;
            StepOutcome::EvaluationDue
        }
    }

    /// Records a completed evaluation; returns whether the run converged.
    pub fn record_evaluation(&mut self, accuracy: f64) -> bool {
        let state = &mut self.state;
        state.eval_rounds += 1;
        state.pending_evaluation = false;
        state.last_eval_accuracy = Some(accuracy);
        let converged = accuracy >= self.rules.eval_threshold;
        if converged {
            state.stages[state.stage].reached_streak = true;
        }
        converged
    }

    /// Training events per second of training steps so far.
    pub fn events_per_second(&self) -> f64 {
        self.state.train_events / self.state.train_seconds.max(1e-12)
    }

    /// Iterations per second of training steps so far.
    pub fn iterations_per_second(&self) -> f64 {
        self.iterations() as f64 / self.state.train_seconds.max(1e-12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        streak: 2,
        eval_threshold: 0.99,
        max_iterations: 100,
        max_seconds: Some(60.0),
    };

    fn machine(stages: &[usize]) -> Schedule {
        Schedule::new(RULES, LoopState::new(stages))
    }

    /// Checks the machine's state as a resumed run would, at `steps` steps.
    fn assert_consistent(m: &Schedule, steps: u64) {
        m.state()
            .check(
                &m.state()
                    .stages
                    .iter()
                    .map(|s| s.seq_len)
                    .collect::<Vec<_>>(),
                RULES.streak,
                steps,
            )
            .expect("a state the resume checks accept");
    }

    #[test]
    fn starts_at_the_first_stage() {
        assert_eq!(
            machine(&[128, 1024]).next(0, 0.0, false),
            Action::Train { seq_len: 128 }
        );
    }

    #[test]
    fn a_broken_streak_starts_again() {
        let mut m = machine(&[128, 1024]);
        assert_eq!(m.record_step(1.0, 0.1, 8.0), StepOutcome::Continue);
        assert_eq!(m.streak(), 1);
        assert_eq!(m.record_step(0.9, 0.1, 8.0), StepOutcome::Continue);
        assert_eq!(m.streak(), 0);
        assert_eq!(m.record_step(1.0, 0.1, 8.0), StepOutcome::Continue);
        assert_eq!(m.next(3, 1.0, false), Action::Train { seq_len: 128 });
        assert_consistent(&m, 3);
    }

    #[test]
    fn a_held_streak_moves_to_the_next_stage() {
        let mut m = machine(&[128, 1024, 4096]);
        m.record_step(0.5, 0.1, 8.0);
        m.add_stage_seconds(0.25);
        m.record_step(1.0, 0.1, 8.0);
        let outcome = m.record_step(1.0, 0.1, 8.0);
        let StepOutcome::StageLearned {
            learned,
            next_seq_len,
        } = outcome
        else {
            panic!("expected a stage change, got {outcome:?}");
        };
        assert_eq!((learned.seq_len, learned.iterations), (128, 3));
        assert!(learned.reached_streak);
        assert_eq!(learned.seconds, 0.25);
        assert_eq!(next_seq_len, 1024);
        assert_eq!(m.streak(), 0, "each stage earns its own streak");
        assert_eq!(m.next(3, 1.0, false), Action::Train { seq_len: 1024 });
        assert_consistent(&m, 3);
    }

    /// A single-stage run whose streak just held.
    fn evaluation_due() -> Schedule {
        let mut m = machine(&[256]);
        m.record_step(1.0, 0.1, 8.0);
        assert_eq!(m.record_step(1.0, 0.1, 8.0), StepOutcome::EvaluationDue);
        m
    }

    #[test]
    fn the_streak_at_the_target_asks_for_an_evaluation() {
        let m = evaluation_due();
        // Interrupted during it: the evaluation runs first when the run resumes, before
        // the limits (even at the iteration limit).
        assert_eq!(m.next(2, 1.0, true), Action::Stop(StopReason::Interrupted));
        assert_eq!(m.next(100, 1.0, false), Action::Evaluate);
        assert_consistent(&m, 2);
    }

    #[test]
    fn a_passed_evaluation_converges() {
        let mut m = evaluation_due();
        assert!(m.record_evaluation(0.995));
        assert_eq!(m.state().last_eval_accuracy, Some(0.995));
        assert_eq!(m.eval_round(), 1);
        assert_eq!(m.next(2, 1.0, true), Action::Stop(StopReason::Converged));
        assert_consistent(&m, 2);
    }

    #[test]
    fn a_failed_evaluation_trains_on_with_fresh_sequences() {
        let mut m = evaluation_due();
        assert!(!m.record_evaluation(0.98));
        assert_eq!(m.eval_round(), 1, "the next evaluation uses new sequences");
        assert_eq!(m.next(2, 1.0, false), Action::Train { seq_len: 256 });
        assert!(!m.state().converged());
        assert_consistent(&m, 2);
    }

    #[test]
    fn limits_stop_the_run() {
        let m = machine(&[256]);
        assert_eq!(
            m.next(100, 0.0, false),
            Action::Stop(StopReason::IterationLimit)
        );
        assert_eq!(m.next(5, 60.0, false), Action::Stop(StopReason::TimeLimit));
        assert_eq!(m.next(5, 59.9, false), Action::Train { seq_len: 256 });
        let unlimited = Schedule::new(
            Rules {
                max_seconds: None,
                ..RULES
            },
            LoopState::new(&[256]),
        );
        assert_eq!(
            unlimited.next(5, 1e9, false),
            Action::Train { seq_len: 256 }
        );
    }

    #[test]
    fn throughput_counts_every_step() {
        let mut m = machine(&[128, 1024]);
        m.record_step(1.0, 0.5, 1024.0);
        m.record_step(1.0, 0.5, 1024.0);
        m.record_step(0.0, 1.0, 8192.0);
        assert_eq!(m.iterations(), 3);
        assert_eq!(m.events_per_second(), 10240.0 / 2.0);
        assert_eq!(m.iterations_per_second(), 1.5);
    }
}
