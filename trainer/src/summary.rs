//! What a `trainer synthetic` run reports at its end: `summary.json`, the lines printed
//! after it, and the learning-curve charts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::metrics::Record;
use crate::plot::{Chart, Scale};
use crate::synthetic::{ModelChoice, SyntheticArgs};
use crate::system;

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Converged,
    IterationLimit,
    TimeLimit,
    Interrupted,
}

impl StopReason {
    /// The reason in words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Converged => "converged",
            Self::IterationLimit => "iteration limit",
            Self::TimeLimit => "time limit",
            Self::Interrupted => "interrupted",
        }
    }
}

/// What `summary.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub model: String,
    pub seq_len: usize,
    pub dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub embedding: usize,
    pub batch: usize,
    pub backend: String,
    pub seed: u64,
    pub learning_rate: f64,
    pub clip: Option<f64>,
    pub init: String,
    pub converged: bool,
    pub stop_reason: StopReason,
    pub eval_accuracy: Option<f64>,
    pub eval_sequences: usize,
    pub iterations: u64,
    pub wall_seconds: f64,
    pub train_seconds: f64,
    pub events_per_second: f64,
    pub peak_rss_bytes: Option<u64>,
    pub threads: usize,
    pub curriculum: Vec<StageSummary>,
    pub run_dir: PathBuf,
}

/// One curriculum stage in the summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageSummary {
    pub seq_len: usize,
    pub iterations: u64,
    pub seconds: f64,
}

pub fn print_summary(s: &Summary) {
    let verdict = match s.stop_reason {
        StopReason::Converged => "converged".to_owned(),
        StopReason::IterationLimit => "stopped at the iteration limit (not converged)".to_owned(),
        StopReason::TimeLimit => "stopped at the time limit (not converged)".to_owned(),
        StopReason::Interrupted => format!(
            "interrupted; checkpoint saved at step {} (nothing lost)",
            s.iterations
        ),
    };
    println!(
        "{} n = {}: {verdict} after {} iterations in {:.1} s ({:.1} s training, {:.3e} events/s)",
        s.model, s.seq_len, s.iterations, s.wall_seconds, s.train_seconds, s.events_per_second
    );
    if let Some(accuracy) = s.eval_accuracy {
        println!(
            "  evaluation: {:.2} % of {} fresh sequences",
            100.0 * accuracy,
            s.eval_sequences
        );
    }
    if s.curriculum.len() > 1 {
        for stage in &s.curriculum {
            println!(
                "  length {:>8}: {:>6} iterations, {:>8.1} s",
                stage.seq_len, stage.iterations, stage.seconds
            );
        }
    }
    if let Some(peak) = s.peak_rss_bytes {
        println!("  peak memory (RSS): {}", system::format_bytes(peak as f64));
    }
}

pub fn learning_curve(history: &[Record], args: &SyntheticArgs) -> Vec<Chart> {
    let title = format!(
        "{} × {} {}, n = {}, batch {}",
        args.layers,
        args.hidden,
        match args.model {
            ModelChoice::GilrLstm => "GILR-LSTM",
            ModelChoice::Lstm => "LSTM",
            ModelChoice::Gilr => "GILR",
            ModelChoice::Qrnn => "QRNN",
            ModelChoice::Sru => "SRU",
        },
        args.seq_len,
        args.batch
    );
    let smooth = |values: &[(f64, f64)]| -> Vec<(f64, f64)> {
        let window = (values.len() / 30).clamp(5, 50);
        values
            .iter()
            .enumerate()
            .map(|(k, &(x, _))| {
                let lo = k.saturating_sub(window - 1);
                let mean = values[lo..=k].iter().map(|p| p.1).sum::<f64>() / (k - lo + 1) as f64;
                (x, mean)
            })
            .collect()
    };
    let floor = zero_loss_floor(history);
    let loss: Vec<(f64, f64)> = history
        .iter()
        .map(|r| (r.step as f64, r.loss.max(floor)))
        .collect();
    let zeros: Vec<(f64, f64)> = history
        .iter()
        .filter(|r| r.loss == 0.0)
        .map(|r| (r.step as f64, floor))
        .collect();
    let accuracy: Vec<(f64, f64)> = history
        .iter()
        .map(|r| (r.step as f64, r.accuracy))
        .collect();
    let evals: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|r| Some((r.step as f64, r.eval_accuracy?)))
        .collect();
    let mut accuracy_series = vec![
        ("minibatch accuracy".to_owned(), accuracy.clone()),
        ("moving average".to_owned(), smooth(&accuracy)),
    ];
    if !evals.is_empty() {
        accuracy_series.push(("evaluation".to_owned(), evals));
    }
    let mut loss_markers = Vec::new();
    if !zeros.is_empty() {
        loss_markers.push((
            format!(
                "loss exactly 0 ({} steps), drawn at {floor:.0e}",
                zeros.len()
            ),
            zeros,
        ));
    }
    let stages = stage_starts(history);
    vec![
        Chart {
            title: format!("{title}: training loss"),
            x_label: "iteration".into(),
            y_label: "cross-entropy".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Log,
            y_range: None,
            series: vec![
                ("minibatch loss".to_owned(), loss.clone()),
                ("moving average".to_owned(), smooth(&loss)),
            ],
            markers: loss_markers,
            x_marks: stages.clone(),
        },
        Chart {
            title: format!("{title}: accuracy"),
            x_label: "iteration".into(),
            y_label: "accuracy".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            y_range: Some((0.0, 1.05)),
            series: accuracy_series,
            markers: Vec::new(),
            x_marks: stages,
        },
    ]
}

/// Where a log-scale loss chart draws losses of exactly 0 (the f64 cross-entropy of
/// saturated f32 logits rounds to 0): a decade below the smallest positive loss, and
/// never above 10⁻⁸.
fn zero_loss_floor(history: &[Record]) -> f64 {
    let smallest = history
        .iter()
        .map(|r| r.loss)
        .filter(|&loss| loss > 0.0 && loss.is_finite())
        .fold(f64::INFINITY, f64::min);
    let decade_below = 10f64.powf(smallest.log10().floor() - 1.0);
    decade_below.min(1e-8)
}

/// The first step of each curriculum stage after the first, labelled with its length
/// (the line sits half a step before it, between the two stages).
fn stage_starts(history: &[Record]) -> Vec<(f64, String)> {
    history
        .windows(2)
        .filter(|pair| pair[0].seq_len != pair[1].seq_len)
        .map(|pair| {
            (
                pair[1].step as f64 - 0.5,
                format!("n = {}", pair[1].seq_len),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64, seq_len: usize, loss: f64) -> Record {
        Record {
            step,
            seq_len,
            loss,
            accuracy: 1.0,
            grad_norm: 0.0,
            clipped: false,
            wall_seconds: 0.0,
            events_per_second: 0.0,
            eval_accuracy: None,
        }
    }

    fn history() -> Vec<Record> {
        vec![
            record(1, 128, 0.7),
            record(2, 128, 3e-12),
            record(3, 1024, 7083.0),
            record(4, 1024, 0.0),
            record(5, 4096, 0.0),
        ]
    }

    #[test]
    fn zero_losses_are_drawn_at_a_floor_below_every_positive_loss() {
        let charts = learning_curve(&history(), &SyntheticArgs::default());
        let loss = &charts[0];
        let floor = zero_loss_floor(&history());
        assert!((floor / 1e-13 - 1.0).abs() < 1e-9, "{floor}");
        assert_eq!(loss.series[0].1[3], (4.0, floor), "no zero vanishes");
        assert_eq!(
            loss.series[0].1[1],
            (2.0, 3e-12),
            "positive losses as they are"
        );
        let (label, points) = &loss.markers[0];
        assert_eq!(points, &vec![(4.0, floor), (5.0, floor)]);
        assert!(label.contains("exactly 0 (2 steps)"), "{label}");
        assert_eq!(zero_loss_floor(&[record(1, 8, 0.5)]), 1e-8);
        assert_eq!(zero_loss_floor(&[record(1, 8, 0.0)]), 1e-8);
    }

    #[test]
    fn curriculum_stages_are_marked_where_the_length_changes() {
        let charts = learning_curve(&history(), &SyntheticArgs::default());
        let expected = vec![(2.5, "n = 1024".to_owned()), (4.5, "n = 4096".to_owned())];
        assert_eq!(charts[0].x_marks, expected);
        assert_eq!(charts[1].x_marks, expected);
    }
}
