//! The files and lines a benchmark ends with: its table as markdown, CSV and JSON, its
//! chart as PNG and SVG, the markdown printed and the folder named.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::plot::{self, Chart};

/// What a benchmark wrote, for `reproduce`.
pub struct BenchReport {
    pub markdown: String,
    pub plot_png: PathBuf,
}

/// One benchmark's results, ready to be written.
pub struct TableOutput<'a, T> {
    /// File stem of every output (`kernel_bench` → `kernel_bench.md`, …).
    pub stem: &'a str,
    pub rows: &'a [T],
    pub csv: String,
    pub markdown: String,
    pub chart: Chart,
}

impl<T: Serialize> TableOutput<'_, T> {
    /// Writes `<stem>.{csv,json,md,png,svg}` into `dir` (each atomically), prints the
    /// markdown and where the results are.
    pub fn publish(self, dir: &Path) -> Result<BenchReport> {
        let write = |extension: &str, text: &str| {
            let path = dir.join(format!("{}.{extension}", self.stem));
            crate::atomic::write(&path, text.as_bytes())
        };
        write("csv", &self.csv)?;
        write("json", &serde_json::to_string_pretty(self.rows)?)?;
        write("md", &self.markdown)?;
        let (png, _) = plot::save(&dir.join(self.stem), &[self.chart])?;
        println!("{}", self.markdown);
        println!("results: {}", dir.display());
        Ok(BenchReport {
            markdown: self.markdown,
            plot_png: png,
        })
    }
}

/// The files [`TableOutput::publish`] writes for `stem`.
pub fn table_files(stem: &str) -> Vec<String> {
    ["csv", "json", "md", "png", "svg"]
        .iter()
        .map(|extension| format!("{stem}.{extension}"))
        .collect()
}
