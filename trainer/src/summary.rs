//! What a `trainer synthetic` run reports at its end: `summary.json`, the lines printed
//! after it, and the learning-curve charts.

use std::path::PathBuf;

use serde::Serialize;

use crate::metrics::Record;
use crate::plot::{Chart, Scale};
use crate::synthetic::{ModelChoice, SyntheticArgs};
use crate::system;

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Converged,
    IterationLimit,
    TimeLimit,
    Interrupted,
}

/// What `summary.json` holds.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
    let loss: Vec<(f64, f64)> = history.iter().map(|r| (r.step as f64, r.loss)).collect();
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
        },
        Chart {
            title: format!("{title}: accuracy"),
            x_label: "iteration".into(),
            y_label: "accuracy".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            y_range: Some((0.0, 1.05)),
            series: accuracy_series,
        },
    ]
}
