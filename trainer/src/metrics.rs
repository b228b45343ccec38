//! Per-iteration metrics, written as CSV and as JSON Lines side by side.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{atomic, fault};

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

fn csv_row(r: &Record) -> String {
    let eval = r.eval_accuracy.map(|a| a.to_string()).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{:.4},{:.1},{}\n",
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
}

fn jsonl_row(r: &Record) -> Result<String> {
    Ok(serde_json::to_string(r)? + "\n")
}

impl MetricsWriter {
    /// Writes the two files anew with the records of `history` (a resumed run passes the
    /// records up to its checkpoint), each through a temporary file and a rename, so a
    /// kill at any moment leaves either the old or the new file; then appends to them.
    pub fn create(dir: &Path, history: &[Record]) -> Result<Self> {
        let csv_path = dir.join(CSV_FILE);
        let jsonl_path = dir.join(JSONL_FILE);
        atomic::write_with(&csv_path, |w| {
            w.write_all(CSV_HEADER.as_bytes())?;
            w.write_all(b"\n")?;
            for record in history {
                w.write_all(csv_row(record).as_bytes())?;
            }
            Ok(())
        })?;
        atomic::write_with(&jsonl_path, |w| {
            for record in history {
                w.write_all(jsonl_row(record)?.as_bytes())?;
            }
            fault::point("metrics-rewrite");
            Ok(())
        })?;
        let open = |path: &Path| {
            OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(|| format!("opening `{}`", path.display()))
        };
        Ok(Self {
            csv: BufWriter::new(open(&csv_path)?),
            jsonl: BufWriter::new(open(&jsonl_path)?),
            csv_path,
        })
    }

    /// Appends one record (buffered; see [`MetricsWriter::flush`]).
    pub fn append(&mut self, record: &Record) -> Result<()> {
        self.csv
            .write_all(csv_row(record).as_bytes())
            .with_context(|| format!("writing `{}`", self.csv_path.display()))?;
        self.jsonl
            .write_all(jsonl_row(record)?.as_bytes())
            .context("writing metrics.jsonl")?;
        Ok(())
    }

    /// Writes buffered records to disk and syncs them, so that a checkpoint saved after
    /// this call never runs ahead of the metrics.
    pub fn flush(&mut self) -> Result<()> {
        self.csv.flush().context("flushing metrics.csv")?;
        self.jsonl.flush().context("flushing metrics.jsonl")?;
        self.csv
            .get_ref()
            .sync_data()
            .context("syncing metrics.csv")?;
        self.jsonl
            .get_ref()
            .sync_data()
            .context("syncing metrics.jsonl")?;
        Ok(())
    }
}

/// The records of a run folder up to its checkpoint, read back for a resume.
pub struct History {
    /// The records of steps `1..=up_to`.
    pub records: Vec<Record>,
    /// Rows after `up_to` that were dropped (written after the last checkpoint).
    pub dropped: usize,
    /// What was damaged in `metrics.jsonl` and restored from `metrics.csv`, if anything.
    pub repaired: Option<String>,
}

/// What `metrics.jsonl` holds of the records `1..=up_to`.
enum JsonlRead {
    /// All of them, and the number of rows after them.
    Complete(Vec<Record>, usize),
    /// The records before the first damage, and that damage.
    Damaged(Vec<Record>, Damage),
}

/// Where `metrics.jsonl` stops holding the records it should.
struct Damage {
    /// What is wrong, e.g. "line 3 of `…/metrics.jsonl` is not a metrics record (…)".
    what: String,
    /// The first step whose record is missing.
    from: u64,
}

/// The records of steps `1..=up_to` of a run folder.
///
/// They come from `metrics.jsonl`; rows after `up_to` (written by a run killed after its
/// last checkpoint, possibly with a partial last line) are dropped and counted. If that
/// file is missing, damaged or lacks a step, the missing records are restored from
/// `metrics.csv` (exact for every column but the rounded `wall_seconds` and
/// `events_per_second`), and [`History::repaired`] says what was restored. If neither file
/// holds them, the error names the steps whose metrics would be lost.
pub fn read_history(dir: &Path, up_to: u64) -> Result<History> {
    let (mut records, damage) = match read_jsonl(dir, up_to)? {
        JsonlRead::Complete(records, dropped) => {
            return Ok(History {
                records,
                dropped,
                repaired: None,
            })
        }
        JsonlRead::Damaged(records, damage) => (records, damage),
    };
    let csv_path = dir.join(CSV_FILE);
    match read_csv(&csv_path, up_to) {
        Ok(from_csv) => {
            let start = records.len();
            records.extend(from_csv.into_iter().skip(start));
            Ok(History {
                records,
                dropped: 0,
                repaired: Some(format!(
                    "{}: the metrics of steps {}–{up_to} were restored from `{}` (its \
                     wall_seconds and events_per_second are rounded)",
                    damage.what,
                    damage.from,
                    csv_path.display()
                )),
            })
        }
        Err(csv_error) => bail!(
            "{}: the metrics of steps {}–{up_to} (up to the checkpoint) would be lost, and \
             `{}` cannot restore them ({csv_error:#}); restore or repair `{}`, or start a \
             new run",
            damage.what,
            damage.from,
            csv_path.display(),
            dir.join(JSONL_FILE).display()
        ),
    }
}

/// Reads the records `1..=up_to` of `metrics.jsonl`.
fn read_jsonl(dir: &Path, up_to: u64) -> Result<JsonlRead> {
    let path = dir.join(JSONL_FILE);
    let mut records = Vec::new();
    if up_to == 0 {
        return Ok(JsonlRead::Complete(records, 0));
    }
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let what = format!("`{}` is missing", path.display());
            return Ok(JsonlRead::Damaged(records, Damage { what, from: 1 }));
        }
        Err(e) => return Err(e).with_context(|| format!("reading `{}`", path.display())),
    };
    let mut lines = bytes.split(|&b| b == b'\n').enumerate();
    for (k, line) in lines.by_ref() {
        let expected = records.len() as u64 + 1;
        if expected > up_to {
            let rest = lines.filter(|(_, l)| !l.is_empty()).count();
            return Ok(JsonlRead::Complete(
                records,
                rest + usize::from(!line.is_empty()),
            ));
        }
        if line.is_empty() {
            continue;
        }
        let what = match serde_json::from_slice::<Record>(line) {
            Ok(record) if record.step == expected => {
                records.push(record);
                continue;
            }
            Ok(record) => format!(
                "line {} of `{}` holds step {} where step {expected} belongs",
                k + 1,
                path.display(),
                record.step
            ),
            Err(e) => format!(
                "line {} of `{}` is not a metrics record ({e})",
                k + 1,
                path.display()
            ),
        };
        return Ok(JsonlRead::Damaged(
            records,
            Damage {
                what,
                from: expected,
            },
        ));
    }
    let expected = records.len() as u64 + 1;
    if expected <= up_to {
        let what = format!(
            "`{}` ends at step {}, but the checkpoint is at step {up_to}",
            path.display(),
            expected - 1
        );
        return Ok(JsonlRead::Damaged(
            records,
            Damage {
                what,
                from: expected,
            },
        ));
    }
    Ok(JsonlRead::Complete(records, 0))
}

/// The records `1..=up_to` of `metrics.csv`.
fn read_csv(path: &Path, up_to: u64) -> Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading `{}`", path.display()))?;
    let mut lines = text.lines();
    ensure!(
        lines.next() == Some(CSV_HEADER),
        "its header is not `{CSV_HEADER}`"
    );
    let mut records = Vec::new();
    for (k, line) in lines.enumerate() {
        let expected = records.len() as u64 + 1;
        if expected > up_to {
            break;
        }
        let record = parse_csv_row(line)
            .with_context(|| format!("line {} (`{line}`) is not a metrics row", k + 2))?;
        ensure!(
            record.step == expected,
            "line {} holds step {} where step {expected} belongs",
            k + 2,
            record.step
        );
        records.push(record);
    }
    ensure!(
        records.len() as u64 == up_to,
        "it ends at step {}",
        records.len()
    );
    Ok(records)
}

fn parse_csv_row(line: &str) -> Result<Record> {
    let fields: Vec<&str> = line.split(',').collect();
    ensure!(fields.len() == 9, "{} fields instead of 9", fields.len());
    Ok(Record {
        step: fields[0].parse()?,
        seq_len: fields[1].parse()?,
        loss: fields[2].parse()?,
        accuracy: fields[3].parse()?,
        grad_norm: fields[4].parse()?,
        clipped: fields[5].parse()?,
        wall_seconds: fields[6].parse()?,
        events_per_second: fields[7].parse()?,
        eval_accuracy: match fields[8] {
            "" => None,
            value => Some(value.parse()?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values with all 17 significant digits, where a float parser that is not exact
    /// (serde_json without `float_roundtrip`) is off in the last place now and then.
    fn values(count: usize) -> Vec<f64> {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 53) as f64 * 10.0
            })
            .collect()
    }

    #[test]
    fn records_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let v = values(4 * 5000);
        let records: Vec<Record> = v
            .chunks_exact(4)
            .enumerate()
            .map(|(k, c)| Record {
                step: k as u64 + 1,
                seq_len: 24,
                loss: c[0],
                accuracy: c[1],
                grad_norm: c[2],
                clipped: false,
                wall_seconds: c[3],
                events_per_second: c[3] * 1e6,
                eval_accuracy: (k % 7 == 0).then_some(c[1]),
            })
            .collect();
        let mut writer = MetricsWriter::create(dir.path(), &records[..10]).unwrap();
        for record in &records[10..] {
            writer.append(record).unwrap();
        }
        writer.flush().unwrap();
        let history = read_history(dir.path(), records.len() as u64).unwrap();
        assert_eq!((history.dropped, history.repaired), (0, None));
        let read = history.records;
        let bits = |r: &[Record]| -> Vec<[u64; 4]> {
            r.iter()
                .map(|r| [r.loss, r.accuracy, r.grad_norm, r.wall_seconds].map(f64::to_bits))
                .collect()
        };
        let mismatches = bits(&read)
            .iter()
            .zip(bits(&records))
            .filter(|(a, b)| *a != b)
            .count();
        assert_eq!(
            mismatches,
            0,
            "{mismatches} of {} records changed",
            records.len()
        );
    }
}
