//! Table 3 of `trainer reproduce`: the synthetic task at each length over several seeds,
//! GILR-LSTM beside the LSTM baseline, summarised as mean ± std like the paper's table.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use crate::synthetic::{ModelChoice, Summary, SyntheticArgs};

/// The two models of the table, in its column order.
pub const MODELS: [ModelChoice; 2] = [ModelChoice::Lstm, ModelChoice::GilrLstm];

/// The paper's Table 3: (n, LSTM iterations, GILR iterations, LSTM time, GILR time).
const PAPER: [(usize, &str, &str, &str, &str); 3] = [
    (1024, "1,000 ± 400", "550 ± 40", "0.28 h", "0.031 h"),
    (8192, "440 ± 50", "560 ± 160", "0.58 h", "0.10 h"),
    (
        1_048_576,
        "did not converge in days",
        "14,000 ± 3,000",
        "—",
        "9.7 ± 1.7 h",
    ),
];

/// One row of the table: a length, its seeds and the settings both models run with.
#[derive(Clone, Debug)]
pub struct Row {
    pub seq_len: usize,
    pub seeds: Vec<u64>,
    /// Settings shared by every run of the row (model, seed and folder are set per run).
    pub base: SyntheticArgs,
    /// Wall-time cap of each LSTM run.
    pub lstm_max_seconds: Option<f64>,
    /// Wall-time cap of each GILR-LSTM run.
    pub gilr_max_seconds: Option<f64>,
}

impl Row {
    /// A row with the trainer's defaults at `seq_len`.
    pub fn new(seq_len: usize, seeds: u64, lstm_max_seconds: f64) -> Self {
        Self {
            seq_len,
            seeds: (1..=seeds).collect(),
            base: SyntheticArgs {
                seq_len,
                force: true,
                checkpoint_every: Some(0),
                ..SyntheticArgs::default()
            },
            lstm_max_seconds: Some(lstm_max_seconds),
            gilr_max_seconds: None,
        }
    }

    /// The n = 2²⁰ row: the settings `trainer synthetic -n 1048576` chooses for this
    /// length ([`SyntheticArgs::choose_for_length`]), and the same wall-time cap for both
    /// models.
    pub fn million(seeds: u64, max_seconds: f64) -> Self {
        let mut row = Self::new(1 << 20, seeds, max_seconds);
        row.base.choose_for_length(|_| false);
        row.gilr_max_seconds = Some(max_seconds);
        row
    }

    /// The folder name of one run.
    pub fn run_name(&self, model: ModelChoice, seed: u64) -> String {
        format!(
            "synthetic-{}-n{}-seed{seed}",
            match model {
                ModelChoice::Lstm => "lstm",
                _ => "gilr-lstm",
            },
            self.seq_len
        )
    }

    /// The settings of one run.
    pub fn run_args(&self, model: ModelChoice, seed: u64, out: PathBuf) -> SyntheticArgs {
        SyntheticArgs {
            model,
            seed,
            out: Some(out),
            max_seconds: if model == ModelChoice::Lstm {
                self.lstm_max_seconds
            } else {
                self.gilr_max_seconds
            },
            ..self.base.clone()
        }
    }
}

/// Mean and sample standard deviation (`None` for fewer than two values).
pub fn mean_std(values: &[f64]) -> Option<(f64, Option<f64>)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.len() > 1).then(|| {
        let squares: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
        (squares / (n - 1.0)).sqrt()
    });
    Some((mean, std))
}

/// `mean ± std` of the converged runs (with `decimals` digits), with how many of them
/// converged when not all did.
fn cell(runs: &[Summary], value: impl Fn(&Summary) -> f64, decimals: usize, unit: &str) -> String {
    let converged: Vec<f64> = runs.iter().filter(|s| s.converged).map(&value).collect();
    let Some((mean, std)) = mean_std(&converged) else {
        let most = runs.iter().map(&value).fold(0.0, f64::max);
        return format!("did not converge ({} seeds, ≤ {most:.0}{unit})", runs.len());
    };
    let mut text = match std {
        Some(std) => format!("{mean:.decimals$} ± {std:.decimals$}{unit}"),
        None => format!("{mean:.decimals$}{unit}"),
    };
    if converged.len() < runs.len() {
        write!(text, " ({} of {} converged)", converged.len(), runs.len())
            .expect("writing to a String");
    }
    text
}

/// The markdown table: ours over seeds, the paper's in parentheses. `results` holds, per
/// row, the summaries of the LSTM runs and of the GILR-LSTM runs.
pub fn markdown(results: &[(Row, [Vec<Summary>; 2])]) -> Result<String> {
    let mut md = String::new();
    writeln!(
        md,
        "| n | seeds | LSTM iterations | GILR-LSTM iterations | LSTM wall time | GILR-LSTM wall time | evaluation (LSTM / GILR-LSTM) |\n|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for (row, [lstm, gilr]) in results {
        let paper = PAPER.iter().find(|p| p.0 == row.seq_len);
        let iterations = |s: &Summary| s.iterations as f64;
        let seconds = |s: &Summary| s.wall_seconds;
        let evaluation = |runs: &[Summary]| {
            let accuracies: Vec<f64> = runs.iter().filter_map(|s| s.eval_accuracy).collect();
            match mean_std(&accuracies) {
                Some((mean, _)) => format!("{:.1} %", 100.0 * mean),
                None => "—".to_owned(),
            }
        };
        writeln!(
            md,
            "| {} | {} | {} ({}) | {} ({}) | {} ({}) | {} ({}) | {} / {} |",
            row.seq_len,
            row.seeds.len(),
            cell(lstm, iterations, 0, ""),
            paper.map_or("—", |p| p.1),
            cell(gilr, iterations, 0, ""),
            paper.map_or("—", |p| p.2),
            cell(lstm, seconds, 1, " s"),
            paper.map_or("—", |p| p.3),
            cell(gilr, seconds, 1, " s"),
            paper.map_or("—", |p| p.4),
            evaluation(lstm),
            evaluation(gilr),
        )?;
    }
    writeln!(
        md,
        "\nMean ± sample standard deviation over the converged seeds (iterations include the \
         curriculum stages; wall time counts everything, evaluation included); the paper's \
         figures (five seeds, K80 GPU, 2 × 512 units, 2 × 64 at n = 1,048,576) in parentheses. \
         A run that reaches its wall-time cap counts as not converged."
    )?;
    for (row, _) in results {
        let caps = |cap: Option<f64>| cap.map_or("none".to_owned(), |s| format!("{s:.0} s"));
        writeln!(
            md,
            "\nn = {}: {} × {} hidden, embedding {}, batch {}, init chrono(max_len={}), \
             curriculum `{}`; seeds {:?}; cap per run: LSTM {}, GILR-LSTM {}.",
            row.seq_len,
            row.base.layers,
            row.base.hidden,
            row.base.embedding,
            row.base.batch,
            row.base.chrono_max_len.unwrap_or(row.seq_len),
            row.base.curriculum,
            row.seeds,
            caps(row.lstm_max_seconds),
            caps(row.gilr_max_seconds),
        )?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::StopReason;

    fn summary(converged: bool, iterations: u64, wall_seconds: f64) -> Summary {
        Summary {
            model: "lstm".into(),
            seq_len: 1024,
            dim: 128,
            hidden: 32,
            layers: 2,
            embedding: 16,
            batch: 16,
            backend: "parallel".into(),
            seed: 1,
            learning_rate: 0.01,
            clip: Some(1.0),
            init: "chrono".into(),
            converged,
            stop_reason: if converged {
                StopReason::Converged
            } else {
                StopReason::TimeLimit
            },
            eval_accuracy: converged.then_some(1.0),
            eval_sequences: 256,
            iterations,
            wall_seconds,
            train_seconds: wall_seconds,
            events_per_second: 1.0,
            peak_rss_bytes: None,
            threads: 2,
            curriculum: Vec::new(),
            run_dir: PathBuf::new(),
        }
    }

    #[test]
    fn mean_and_sample_standard_deviation() {
        assert_eq!(mean_std(&[]), None);
        assert_eq!(mean_std(&[3.0]), Some((3.0, None)));
        let (mean, std) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(mean, 5.0);
        assert!((std.unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn cells_count_only_converged_runs_and_say_how_many() {
        let iterations = |s: &Summary| s.iterations as f64;
        let all = [summary(true, 60, 5.0), summary(true, 70, 6.0)];
        assert_eq!(cell(&all, iterations, 0, ""), "65 ± 7");
        assert_eq!(cell(&all, |s| s.wall_seconds, 1, " s"), "5.5 ± 0.7 s");
        let some = [summary(true, 60, 5.0), summary(false, 900, 120.0)];
        assert_eq!(cell(&some, iterations, 0, ""), "60 (1 of 2 converged)");
        let none = [summary(false, 9, 2400.0), summary(false, 8, 2410.0)];
        assert_eq!(
            cell(&none, |s| s.wall_seconds, 1, " s"),
            "did not converge (2 seeds, ≤ 2410 s)"
        );
    }

    #[test]
    fn the_million_row_caps_both_models_alike() {
        let row = Row::million(2, 2400.0);
        let lstm = row.run_args(ModelChoice::Lstm, 2, PathBuf::from("a"));
        let gilr = row.run_args(ModelChoice::GilrLstm, 2, PathBuf::from("b"));
        assert_eq!(lstm.max_seconds, Some(2400.0));
        assert_eq!(gilr.max_seconds, lstm.max_seconds);
        assert_eq!(
            (
                gilr.seq_len,
                gilr.hidden,
                gilr.layers,
                gilr.batch,
                gilr.seed
            ),
            (1 << 20, 4, 1, 8, 2)
        );
        assert_eq!(gilr.chrono_max_len, Some(65_536));
        assert_eq!(gilr.checkpoint_every, Some(1));
        let small = Row::new(1024, 5, 120.0);
        assert_eq!(small.seeds, vec![1, 2, 3, 4, 5]);
        let gilr = small.run_args(ModelChoice::GilrLstm, 3, PathBuf::from("c"));
        assert_eq!((gilr.max_seconds, gilr.seed), (None, 3));
    }
}
