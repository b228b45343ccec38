//! Per-iteration metrics, written as CSV and as JSON Lines side by side.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One training iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Optimizer steps taken, this one included (1-based).
    pub step: u64,
    /// The sequence length trained on at this step.
    pub seq_len: usize,
    /// Mean cross-entropy of the minibatch.
    pub loss: f64,
    /// Fraction of the minibatch classified correctly.
    pub accuracy: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether clipping scaled the gradient down.
    pub clipped: bool,
    /// Wall time since the run started (across resumes), in seconds.
    pub wall_seconds: f64,
    /// Events (batch × seq_len) per second of this step.
    pub events_per_second: f64,
    /// Accuracy on fresh evaluation sequences, when an evaluation ran after this step.
    pub eval_accuracy: Option<f64>,
}

const CSV_HEADER: &str =
    "step,seq_len,loss,accuracy,grad_norm,clipped,wall_seconds,events_per_second,eval_accuracy";

/// Appends records to `metrics.csv` and `metrics.jsonl` in a run folder.
pub struct MetricsWriter {
    csv: BufWriter<File>,
    jsonl: BufWriter<File>,
    csv_path: PathBuf,
}

/// The file names this module writes.
pub const CSV_FILE: &str = "metrics.csv";
/// See [`CSV_FILE`].
pub const JSONL_FILE: &str = "metrics.jsonl";

impl MetricsWriter {
    /// Starts the two files, keeping the records in `history` (a resumed run passes the
    /// records up to its checkpoint; later ones, written after the checkpoint by a run
    /// that was killed, are dropped).
    pub fn create(dir: &Path, history: &[Record]) -> Result<Self> {
        let open = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .with_context(|| format!("creating `{}`", path.display()))
        };
        let mut writer = Self {
            csv: BufWriter::new(open(CSV_FILE)?),
            jsonl: BufWriter::new(open(JSONL_FILE)?),
            csv_path: dir.join(CSV_FILE),
        };
        writeln!(writer.csv, "{CSV_HEADER}")?;
        for record in history {
            writer.write_record(record)?;
        }
        writer.flush()?;
        Ok(writer)
    }

    fn write_record(&mut self, r: &Record) -> Result<()> {
        let eval = r.eval_accuracy.map(|a| a.to_string()).unwrap_or_default();
        writeln!(
            self.csv,
            "{},{},{},{},{},{},{:.4},{:.1},{}",
            r.step,
            r.seq_len,
            r.loss,
            r.accuracy,
            r.grad_norm,
            r.clipped,
            r.wall_seconds,
            r.events_per_second,
            eval
        )
        .with_context(|| format!("writing `{}`", self.csv_path.display()))?;
        serde_json::to_writer(&mut self.jsonl, r)?;
        writeln!(self.jsonl)?;
        Ok(())
    }

    /// Appends one record (buffered; see [`MetricsWriter::flush`]).
    pub fn append(&mut self, record: &Record) -> Result<()> {
        self.write_record(record)
    }

    /// Writes buffered records to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.csv.flush().context("flushing metrics.csv")?;
        self.jsonl.flush().context("flushing metrics.jsonl")?;
        Ok(())
    }
}

/// Reads the JSON Lines records of a run folder, keeping those with `step ≤ up_to`.
pub fn read_history(dir: &Path, up_to: u64) -> Result<Vec<Record>> {
    let path = dir.join(JSONL_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let file = File::open(&path).with_context(|| format!("opening `{}`", path.display()))?;
    let mut records = Vec::new();
    for (k, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading `{}`", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(r) if r.step <= up_to => records.push(r),
            Ok(_) => {}
            // A run killed mid-write leaves a partial last line: keep what came before.
            Err(_) if k > 0 => break,
            Err(e) => {
                return Err(e).with_context(|| format!("line {} of `{}`", k + 1, path.display()))
            }
        }
    }
    Ok(records)
}
